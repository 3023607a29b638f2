"""kubemill's cron against CronJob's own: robfig/cron v3, as Kubernetes validates and schedules it.

hack/crondiff (Go, built once into the cache by hack/crondiff/build.sh) answers for CronJob: the
API server's acceptance (cron.ParseStandard on the schedule as written, and no "TZ" in it) and the
controller's slots (Next on "TZ=<timeZone> <schedule>"). Thousands of seeded expressions, in zones
with every kind of transition, starting around those transitions, are put to both sides.

Every disagreement must be one of the differences the README lists under "Differences from
CronJob", recognised by what it is (a seconds field, a repeated wall time's second pass, ...),
not by which case produced it. The list is pinned both ways: a disagreement of no listed kind
fails, and so does a listed kind that no case shows any more (it was fixed: strike it from the
README and from KINDS).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from kubemill.operator.cron import INVERTED_RANGE, PATTERN, Cron, CronError, Schedule

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "hack" / "crondiff" / "build.sh"
README = REPO / "README.md"

pytestmark = pytest.mark.integration

SEED = 11
CASES = 6000
#: Slots compared per case: enough to cross a transition from a start a few slots before it.
COUNT = 10
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute shift, at 02:00 local
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Chatham",  # +12:45/+13:45, shifts at 02:45 and 03:45
    "America/Santiago",  # spring forward at midnight: some days have no 00:00
)
YEARS = range(2026, 2029)


# --- the oracle ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crondiff() -> str:
    """The oracle's path, built by the script `make test` runs (about 10 s cold, instant warm)."""
    done = subprocess.run([str(BUILD)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{BUILD} failed (it needs Go and the Go module proxy):\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


def _zoneinfo_dir() -> str:
    """Where Python reads the zones from, so that Go reads the same files (ZONEINFO)."""
    for folder in zoneinfo.TZPATH:
        if all((Path(folder) / zone).is_file() for zone in ZONES):
            return folder
    return str(resources.files("tzdata") / "zoneinfo")


@dataclass(frozen=True)
class Case:
    schedule: str
    zone: str
    after: int  # Unix seconds


@dataclass(frozen=True)
class Answer:
    """One side's answer: accepted or not, and the first COUNT slots (fewer if it gave up)."""

    valid: bool
    slots: tuple[int, ...]


def cronjob(binary: str, cases: list[Case]) -> list[Answer]:
    lines = "".join(
        json.dumps({"schedule": c.schedule, "timeZone": c.zone, "after": c.after, "count": COUNT})
        + "\n"
        for c in cases
    )
    done = subprocess.run(
        [binary],
        input=lines,
        capture_output=True,
        text=True,
        check=True,
        env={"ZONEINFO": _zoneinfo_dir(), "PATH": "/usr/bin:/bin"},
    )
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(answers) == len(cases), done.stderr
    return [Answer(a["valid"], tuple(a["slots"])) for a in answers]


def kubemill(case: Case) -> Answer:
    try:
        schedule = Schedule.parse(case.schedule, case.zone)
    except CronError:
        return Answer(False, ())
    slots: list[int] = []
    moment = datetime.fromtimestamp(case.after, UTC)
    try:
        while len(slots) < COUNT:
            moment = schedule.next_after(moment)
            slots.append(int(moment.timestamp()))
    except CronError:  # never matches again; CronJob's Next gives up too
        pass
    return Answer(True, tuple(slots))


# --- the generator -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name: int = 0


_MINUTE = _Bounds(0, 59)
_HOUR = _Bounds(0, 23)
_DOM = _Bounds(1, 31)
_MONTH = _Bounds(
    1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
)
_DOW = _Bounds(0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat"), 0)
_FIELDS = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)


def _value(rng: random.Random, bounds: _Bounds) -> int:
    edge = rng.random() < 0.4
    return rng.choice((bounds.low, bounds.high)) if edge else rng.randint(bounds.low, bounds.high)


def _spell(rng: random.Random, bounds: _Bounds, value: int) -> str:
    if bounds.names and rng.random() < 0.4:
        name = bounds.names[value - bounds.first_name]
        return rng.choice((name, name.upper(), name.capitalize()))
    return f"0{value}" if value < 10 and rng.random() < 0.1 else str(value)


def _item(rng: random.Random, bounds: _Bounds, day_field: bool) -> str:
    kind = rng.choice(("star", "star", "value", "value", "range", "step", "range-step", "from"))
    if kind == "star":
        return "?" if day_field and rng.random() < 0.3 else "*"
    low, high = sorted((_value(rng, bounds), _value(rng, bounds)))
    step = rng.choice((1, 2, 3, 5, 7, 10, 15, rng.randint(1, bounds.high + 1)))
    if kind == "value":
        return _spell(rng, bounds, low)
    if kind == "range":
        return f"{_spell(rng, bounds, low)}-{_spell(rng, bounds, high)}"
    if kind == "step":
        return f"*/{step}"
    if kind == "range-step":
        return f"{_spell(rng, bounds, low)}-{_spell(rng, bounds, high)}/{step}"
    return f"{_spell(rng, bounds, low)}/{step}"


def _field(rng: random.Random, bounds: _Bounds, day_field: bool) -> str:
    if rng.random() < 0.35:
        return "*"
    count = rng.choice((1, 1, 1, 2, 3))
    return ",".join(_item(rng, bounds, day_field) for _ in range(count))


#: Spellings that one side or both refuse, each put into an otherwise ordinary expression.
_ODDITIES: tuple[Callable[[random.Random, list[str]], str], ...] = (
    lambda rng, f: " ".join([str(rng.randint(0, 59)), *f]),  # a seconds field
    lambda rng, f: " ".join([*f[:4], rng.choice(("7", "1-7", "5-7", "7/2"))]),  # Sunday as 7
    lambda rng, f: " ".join([rng.choice(("?", "?/5")), *f[1:]]),  # ? outside the day fields
    lambda rng, f: " ".join(["0" + f"{rng.randint(0, 59):02d}", *f[1:]]),  # three digits
    lambda rng, f: " ".join([f"+{rng.randint(0, 59)}", *f[1:]]),  # a signed number
    lambda rng, f: " ".join([rng.choice(("1,,2", ",5", "5,")), *f[1:]]),  # empty list item
    lambda rng, f: " ".join([rng.choice(("*-5", "*-30/2", "?-1")), *f[1:]]),  # a star's range
    lambda rng, f: "\n".join(f),  # other whitespace
    lambda rng, f: "\t" + " ".join(f) + " ",  # blanks around
    lambda rng, f: " ".join([str(rng.randint(60, 99)), *f[1:]]),  # out of range
    lambda rng, f: " ".join([*f[:2], "31-1", *f[3:]]),  # inverted range
    lambda rng, f: " ".join(["*/0", *f[1:]]),  # step 0
    lambda rng, f: " ".join(f[:4]),  # four fields
    lambda rng, f: "TZ=UTC " + " ".join(f),  # a zone in the schedule
    lambda rng, f: rng.choice(("0 0 30 2 *", "0 0 31 4,6 *", "0 0 31 9,11 ?")),  # never fires
    lambda rng, f: rng.choice(("@every 1h", "@every 90s", "@every")),
    lambda rng, f: rng.choice(("@DAILY", "@Hourly", "@weekly ", "@reboot", "@daily\t")),
)
_MACROS = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")


def _schedule(rng: random.Random) -> str:
    fields = [_field(rng, bounds, index in (2, 4)) for index, bounds in enumerate(_FIELDS)]
    if rng.random() < 0.25:  # both day fields restricted: Vixie's "either" rule
        fields[2] = _field(rng, _DOM, True).replace("*", "1").replace("?", "15")
        fields[4] = _field(rng, _DOW, True).replace("*", "MON").replace("?", "5")
    if rng.random() < 0.3:  # DST nights happen between 00:00 and 04:00
        fields[1] = rng.choice(("0", "1", "2", "3", "1-3", "0-4/2", "2,3", "*/2", "*"))
    draw = rng.random()
    if draw < 0.08:
        return rng.choice(_MACROS)
    if draw < 0.3:
        return rng.choice(_ODDITIES)(rng, fields)
    return " ".join(fields)


@cache
def transitions(zone: str) -> tuple[int, ...]:
    """The instants (Unix seconds) at which the zone's offset changes in YEARS."""
    tz = ZoneInfo(zone)
    found: list[int] = []
    t = datetime(YEARS[0], 1, 1, tzinfo=UTC)
    end = datetime(YEARS[-1] + 1, 1, 1, tzinfo=UTC)
    while t < end:
        step = t + timedelta(hours=1)
        if t.astimezone(tz).utcoffset() != step.astimezone(tz).utcoffset():
            low, high = int(t.timestamp()), int(step.timestamp())
            while high - low > 1:
                middle = (low + high) // 2
                offset = datetime.fromtimestamp(middle, UTC).astimezone(tz).utcoffset()
                if offset == t.astimezone(tz).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high)
        t = step
    return tuple(found)


def _after(rng: random.Random, zone: str) -> int:
    changes = transitions(zone)
    if not changes or rng.random() < 0.15:
        start = datetime(YEARS[0], 1, 1, tzinfo=UTC).timestamp()
        return int(start) + rng.randint(0, 365 * 86400 * len(YEARS))
    change = rng.choice(changes)
    # Mostly the day before a change (daily schedules reach it), often the hours before (hourly
    # and per-minute ones); sometimes whole minutes, as a controller's last slot would be.
    window = rng.choice((26 * 3600, 3 * 3600, 20 * 60))
    after = change - rng.randint(-600, window)
    return after - after % 60 if rng.random() < 0.5 else after


def generated_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases = []
    for _ in range(CASES):
        zone = rng.choice(ZONES)
        cases.append(Case(_schedule(rng), zone, _after(rng, zone)))
    return cases


# --- the documented differences ------------------------------------------------------------------


def _fields(schedule: str) -> list[str]:
    return schedule.split()


def _day_of_week(schedule: str) -> str:
    fields = _fields(schedule)
    return fields[4] if len(fields) == 5 else ""


def _numbers(schedule: str) -> list[str]:
    return re.findall(r"[+0-9]+", schedule)


@dataclass(frozen=True)
class Difference:
    """One disagreement: a case, which side accepted it, or a slot only one side has."""

    case: Case
    #: "accepted by kubemill", "accepted by CronJob", "slot of kubemill" or "slot of CronJob"
    kind: str
    slot: int | None = None


def _wall(case: Case, slot: int) -> datetime:
    return datetime.fromtimestamp(slot, UTC).astimezone(ZoneInfo(case.zone))


def _second_pass(case: Case, slot: int) -> bool:
    """The slot is a wall time's second occurrence, on the night clocks go back."""
    wall = _wall(case, slot)
    return wall.fold == 1 and wall.replace(fold=0).utcoffset() != wall.utcoffset()


def _gap_end(case: Case, slot: int) -> bool:
    """The slot is the instant clocks went forward, standing in for skipped wall times."""
    before = _wall(case, slot - 1).utcoffset()
    after = _wall(case, slot).utcoffset()
    return before is not None and after is not None and after > before


def _cron(case: Case) -> Cron:
    return Cron.parse(case.schedule)


def _transition_walls(zone: str) -> list[tuple[datetime, datetime]]:
    """Each transition's last wall time before it (to the second) and first after it."""
    tz = ZoneInfo(zone)
    return [
        (
            datetime.fromtimestamp(t - 1, UTC).astimezone(tz).replace(tzinfo=None),
            datetime.fromtimestamp(t, UTC).astimezone(tz).replace(tzinfo=None),
        )
        for t in transitions(zone)
    ]


@cache
def _off_the_hour(zone: str) -> bool:
    """Whether a transition's wall times are not whole hours (02:00 -> 02:30, 02:45 -> 03:45)."""
    return any(
        before.minute != 59 or after.minute != 0 for before, after in _transition_walls(zone)
    )


@cache
def _at_midnight(zone: str) -> bool:
    """Whether clocks change at midnight, so that some day has no 00:00 or two of them."""
    return any(before.day != after.day for before, after in _transition_walls(zone))


def _existing_named_time(case: Case, slot: int) -> bool:
    """The slot is a wall time the expression names, which happens exactly once that day."""
    wall = _wall(case, slot)
    once = wall.replace(fold=1 - wall.fold).utcoffset() == wall.utcoffset()
    return once and not _gap_end(case, slot) and _cron(case).matches(wall.replace(tzinfo=None))


def _cronjob_misreads(d: Difference) -> bool:
    """CronJob skips a time that exists and is named, or fires at a time not named or not after
    its start. robfig steps in real hours and days from wall-clock values it reads once, which
    holds only while clocks change on the hour, by whole hours, away from midnight."""
    if d.slot is None:
        return False
    if d.kind == "slot of kubemill":
        return _existing_named_time(d.case, d.slot)
    named = _cron(d.case).matches(_wall(d.case, d.slot).replace(tzinfo=None))
    return d.kind == "slot of CronJob" and (d.slot <= d.case.after or not named)


#: Every kind of disagreement the README lists under "Differences from CronJob": the id the
#: README uses, and what recognises it. The README's list and this table must be the same ids.
KINDS: dict[str, Callable[[Difference], bool]] = {
    "seconds-field": lambda d: (
        d.kind == "accepted by kubemill" and len(_fields(d.case.schedule)) == 6
    ),
    "sunday-as-7": lambda d: (
        d.kind == "accepted by kubemill" and "7" in _day_of_week(d.case.schedule)
    ),
    "macro-spelling": lambda d: (
        d.kind == "accepted by kubemill" and d.case.schedule.strip(" \t").startswith("@")
    ),
    "every-macro": lambda d: (
        d.kind == "accepted by CronJob" and d.case.schedule.startswith("@every")
    ),
    "question-mark-outside-day-fields": lambda d: (
        d.kind == "accepted by CronJob"
        and any("?" in f for i, f in enumerate(_fields(d.case.schedule)) if i not in (2, 4))
    ),
    "number-spelling": lambda d: (
        d.kind == "accepted by CronJob"
        and any(len(n) > 2 or "+" in n for n in _numbers(d.case.schedule))
    ),
    "empty-list-item": lambda d: (
        d.kind == "accepted by CronJob"
        and any(",," in f or f.startswith(",") or f.endswith(",") for f in _fields(d.case.schedule))
    ),
    "star-range": lambda d: (
        d.kind == "accepted by CronJob" and re.search(r"[*?]-", d.case.schedule) is not None
    ),
    "whitespace": lambda d: (
        d.kind == "accepted by CronJob"
        and re.search(r"[^ \t\S]", d.case.schedule.strip(" \t")) is not None
    ),
    "repeated-time-runs-once": lambda d: (
        d.kind == "slot of CronJob"
        and d.slot is not None
        and _second_pass(d.case, d.slot)
        and not _cron(d.case).every_hour
    ),
    "skipped-time-runs-at-gap-end": lambda d: (
        d.kind == "slot of kubemill" and d.slot is not None and _gap_end(d.case, d.slot)
    ),
    "transitions-off-the-hour": lambda d: _off_the_hour(d.case.zone) and _cronjob_misreads(d),
    "transitions-at-midnight": lambda d: _at_midnight(d.case.zone) and _cronjob_misreads(d),
}


def differences(case: Case, ours: Answer, theirs: Answer) -> Iterator[Difference]:
    if ours.valid != theirs.valid:
        yield Difference(case, "accepted by kubemill" if ours.valid else "accepted by CronJob")
        return
    # Compare the slots both sides have computed: up to the earlier of the two last slots (a side
    # that gave up computed everything up to its horizon).
    ends = [a.slots[-1] for a in (ours, theirs) if len(a.slots) == COUNT]
    end = min(ends, default=None)
    mine = {s for s in ours.slots if end is None or s <= end}
    other = {s for s in theirs.slots if end is None or s <= end}
    for slot in sorted(mine - other):
        yield Difference(case, "slot of kubemill", slot)
    for slot in sorted(other - mine):
        yield Difference(case, "slot of CronJob", slot)


def readme_kinds() -> list[str]:
    text = README.read_text()
    section = text.split("### Differences from CronJob", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^- `([a-z0-9-]+)`", section, flags=re.MULTILINE)


def _describe(d: Difference) -> str:
    where = ""
    if d.slot is not None:
        where = f" {_wall(d.case, d.slot).isoformat()} ({d.slot})"
    start = datetime.fromtimestamp(d.case.after, UTC).isoformat()
    return f"{d.kind}{where}: {d.case.schedule!r} in {d.case.zone} after {start}"


# --- the tests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compared:
    case: Case
    ours: Answer
    theirs: Answer


@pytest.fixture(scope="module")
def compared(crondiff: str) -> list[Compared]:
    cases = generated_cases()
    theirs = cronjob(crondiff, cases)
    return [Compared(c, kubemill(c), t) for c, t in zip(cases, theirs, strict=True)]


def test_the_readme_lists_exactly_the_kinds_this_test_recognises() -> None:
    assert readme_kinds() == list(KINDS)


def test_every_disagreement_with_cronjob_is_a_documented_difference(
    compared: list[Compared],
) -> None:
    seen: Counter[str] = Counter()
    unexplained: list[str] = []
    for c in compared:
        for difference in differences(c.case, c.ours, c.theirs):
            kinds = [kind for kind, recognise in KINDS.items() if recognise(difference)]
            if kinds:
                seen[kinds[0]] += 1
            else:
                unexplained.append(_describe(difference))
    assert unexplained == [], f"{len(unexplained)} undocumented differences from CronJob"
    assert sorted(set(KINDS) - set(seen)) == [], "documented, but no case shows them any more"


def test_the_cases_are_the_ones_meant(compared: list[Compared]) -> None:
    """Guards the generator: most schedules are valid on both sides, many cross a transition."""
    agreed = [c for c in compared if c.ours.valid and c.theirs.valid]
    assert len(agreed) > 0.7 * len(compared)
    crossing = [
        c
        for c in agreed
        if c.theirs.slots
        and any(c.case.after < t <= c.theirs.slots[-1] for t in transitions(c.case.zone))
    ]
    assert len(crossing) > 0.3 * len(compared)


def test_the_crd_accepts_what_kubemill_accepts(compared: list[Compared]) -> None:
    """The API server's rules (PATTERN, and no INVERTED_RANGE) agree with Cron.parse on every
    generated schedule, so the acceptance compared above is the acceptance at apply time."""
    disagree = [
        c.case.schedule
        for c in compared
        if c.ours.valid
        is not (
            re.fullmatch(PATTERN, c.case.schedule) is not None
            and re.search(INVERTED_RANGE, c.case.schedule) is None
        )
    ]
    assert disagree == []
