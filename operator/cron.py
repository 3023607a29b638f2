"""Cron expressions for NotebookSchedule, and the instants at which a schedule fires.

The syntax is Kubernetes CronJob's (robfig/cron v3's standard parser), so an expression copied
from a CronJob means the same here; an optional leading seconds field is the one addition. The
difference is daylight saving time. CronJob runs `30 2 * * *` twice on the night clocks go back
(kubernetes/kubernetes#121594). Here a wall-clock time that happens twice fires once, on its
first occurrence, and a time that does not exist because clocks went forward fires at the moment
the gap ends. Schedules that run in every hour are the exception: they fire in both passes of a
repeated hour, as Vixie cron does, because "every hour" should keep meaning every real hour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["MACROS", "PATTERN", "Cron", "CronError", "Schedule"]

_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_DAY = timedelta(days=1)

#: How far next_naive looks ahead. A 29th of February can be 8 years away (2096 to 2104), and
#: every expression that matches at all matches within that; robfig stops after 5 years.
_HORIZON_YEARS = 8


class CronError(ValueError):
    """A schedule or time zone that cannot be used; the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


#: The shorthands robfig/cron accepts (except @every, which is not a calendar schedule).
MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    """How one position of the expression is read."""

    name: str
    low: int
    high: int
    #: Where `*` and `N/STEP` stop. Only day-of-week differs from `high`: Sunday may be written
    #: as 7, but robfig's `*/2` and `1/2` end at Saturday, so a step never lands on 7.
    star_high: int
    names: Mapping[str, int]
    #: The values as PATTERN spells them: the range, with at most one leading zero, or a name.
    value_pattern: str
    #: Quartz's "no specific value", which robfig reads as `*`; only meaningful for the day fields.
    question_mark: bool = False


def _names(names: tuple[str, ...], first: int) -> dict[str, int]:
    return {name: first + index for index, name in enumerate(names)}


def _alternatives(names: tuple[str, ...]) -> str:
    return f"(?i:{'|'.join(names)})"


_SECONDS = _Field("second", 0, 59, 59, {}, "[0-5]?[0-9]")
_MINUTES = _Field("minute", 0, 59, 59, {}, "[0-5]?[0-9]")
_HOURS = _Field("hour", 0, 23, 23, {}, "[01]?[0-9]|2[0-3]")
_DAYS_OF_MONTH = _Field("day-of-month", 1, 31, 31, {}, "0?[1-9]|[12][0-9]|3[01]", True)
_MONTHS = _Field(
    "month",
    1,
    12,
    12,
    _names(_MONTH_NAMES, 1),
    f"0?[1-9]|1[0-2]|{_alternatives(_MONTH_NAMES)}",
)
_DAYS_OF_WEEK = _Field(
    "day-of-week", 0, 7, 6, _names(_DAY_NAMES, 0), f"0?[0-7]|{_alternatives(_DAY_NAMES)}", True
)
_FIVE_FIELDS = (_MINUTES, _HOURS, _DAYS_OF_MONTH, _MONTHS, _DAYS_OF_WEEK)


def _field_pattern(field: _Field) -> str:
    star = "[*?]" if field.question_mark else "[*]"
    value = f"(?:{field.value_pattern})"
    item = f"(?:{star}|{value}(?:-{value})?)(?:/0*[1-9][0-9]*)?"
    return f"{item}(?:,{item})*"


def _pattern() -> str:
    blank = r"[ \t]"
    macros = "|".join(name[1:] for name in MACROS)
    fields = f"{blank}+".join(_field_pattern(field) for field in _FIVE_FIELDS)
    seconds = f"(?:{_field_pattern(_SECONDS)}{blank}+)?"
    return f"^{blank}*(?:@(?i:{macros})|{seconds}{fields}){blank}*$"


#: A regular expression accepting exactly the expressions Cron.parse accepts, for the CRD's
#: validation rule (`self.matches(...)` in CEL, which uses RE2), so that a bad schedule is
#: refused when it is applied rather than reported later in the status. The one difference: an
#: inverted range such as `5-3` passes here (a regular expression cannot compare numbers) and is
#: refused by Cron.parse. Only syntax common to RE2 and Python's `re` is used, and no backslash
#: other than `\t`, so it can be pasted into a CEL or YAML string as it is. In Python, match it
#: with re.fullmatch: Python's `$` also matches before a trailing newline.
PATTERN: str = _pattern()


def _below(value: int) -> str:
    """The numbers 0 to value-1 as PATTERN spells them (at most two digits)."""
    tens, ones = divmod(value, 10)
    parts = [f"0?[0-{min(9, value - 1)}]"]
    parts += [f"{ten}[0-9]" for ten in range(1, tens)]
    if tens and ones:
        parts.append(f"{tens}[0-{ones - 1}]")
    return "|".join(parts)


def _number(value: int) -> str:
    return f"0?{value}" if value < 10 else str(value)


def _inverted_range() -> str:
    """Alternatives for every range `a-b` with a > b (numbers up to 59, and the names)."""
    pairs = [f"{_number(a)}-(?:{_below(a)})" for a in range(1, 60)]
    for field in (_MONTHS, _DAYS_OF_WEEK):
        ends = [(f"(?i:{name})", value) for name, value in field.names.items()]
        ends += [(_number(value), value) for value in range(field.low, field.high + 1)]
        for start, high in ends:
            lower = [end for end, value in ends if value < high and not end[0].isdigit()]
            if not start[0].isdigit():  # name-number pairs; number-number ones are above
                lower += [end for end, value in ends if value < high and end[0].isdigit()]
            if lower:
                pairs.append(f"{start}-(?:{'|'.join(lower)})")
    return rf"(?:^|[ \t,])(?:{'|'.join(pairs)})(?:/|,|[ \t]|$)"


#: Finds a range whose start comes after its end (`5-3`, `FRI-MON`), the one mistake PATTERN
#: lets through: a second CRD rule refuses what this finds (`!self.matches(...)`, a search).
INVERTED_RANGE: str = _inverted_range()

_BLANKS = re.compile(r"[ \t]+")
_ITEM = re.compile(
    r"(?:(?P<star>[*?])|(?P<start>[0-9A-Za-z]+)(?:-(?P<end>[0-9A-Za-z]+))?)(?:/(?P<step>[^/]*))?"
)
_NUMBER = re.compile(r"[0-9]+")
_ALL_HOURS = frozenset(range(24))


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the values each field allows, as robfig/cron v3 computes them."""

    expression: str
    has_seconds: bool
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    #: 0 is Sunday; a 7 in the expression is stored as 0.
    days_of_week: frozenset[int]
    #: robfig's "star bit": the field has a `*` or `?` item without a step above 1. When either
    #: day field is starred a day must match both; otherwise either one suffices (Vixie's rule).
    dom_starred: bool
    dow_starred: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        expression = text.strip(" \t")
        if "TZ=" in expression.upper():
            raise CronError(
                "TZ= and CRON_TZ= prefixes are not supported; set spec.timeZone instead"
            )
        if expression.startswith("@"):
            fields = MACROS.get(expression.lower())
            if fields is None:
                raise CronError(_macro_problem(expression))
            return cls._from_fields(expression, fields)
        return cls._from_fields(expression, expression)

    @classmethod
    def _from_fields(cls, expression: str, fields_text: str) -> Cron:
        texts = _BLANKS.split(fields_text) if fields_text else []
        if len(texts) not in (5, 6):
            raise CronError(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds"
                f" first, got {len(texts)}: {_quoted(expression)}"
            )
        has_seconds = len(texts) == 6
        seconds = _parse_field(texts.pop(0), _SECONDS)[0] if has_seconds else frozenset({0})
        minutes, hours, days_of_month, months, days_of_week = (
            _parse_field(text, field) for text, field in zip(texts, _FIVE_FIELDS, strict=True)
        )
        return cls(
            expression=expression,
            has_seconds=has_seconds,
            seconds=seconds,
            minutes=minutes[0],
            hours=hours[0],
            days_of_month=days_of_month[0],
            months=months[0],
            days_of_week=frozenset(day % 7 for day in days_of_week[0]),
            dom_starred=days_of_month[1],
            dow_starred=days_of_week[1],
        )

    @property
    def every_hour(self) -> bool:
        """Whether both passes of a repeated hour fire: the hour field allows every hour.

        Decided on the values, not the spelling, so `*`, `*/1` and `0-23` behave alike.
        """
        return self.hours == _ALL_HOURS

    def matches(self, naive: datetime) -> bool:
        """Whether the expression names this wall time; slots are whole seconds."""
        return (
            naive.microsecond == 0
            and naive.second in self.seconds
            and naive.minute in self.minutes
            and naive.hour in self.hours
            and naive.month in self.months
            and self._day_matches(naive)
        )

    def _day_matches(self, day: datetime) -> bool:
        dom = day.day in self.days_of_month
        dow = day.isoweekday() % 7 in self.days_of_week
        if self.dom_starred or self.dow_starred:
            return dom and dow
        return dom or dow

    def next_naive(self, naive: datetime) -> datetime:
        """The first matching wall time after `naive`, found field by field as robfig does.

        Each step moves to the next allowed value of the first field that does not match and
        resets the finer fields, so the cost is bounded by the number of distinct values per
        field rather than by the distance in seconds.
        """
        if naive.tzinfo is not None:
            raise ValueError("next_naive takes a naive wall-clock time")
        t = naive.replace(microsecond=0) + _SECOND
        horizon = t.year + _HORIZON_YEARS
        try:
            while t.year <= horizon:
                if t.month not in self.months:
                    month = _first_at_or_after(self.months, t.month, 12)
                    t = datetime(t.year + 1, 1, 1) if month is None else datetime(t.year, month, 1)
                elif not self._day_matches(t):
                    t = datetime(t.year, t.month, t.day) + _DAY
                elif t.hour not in self.hours:
                    hour = _first_at_or_after(self.hours, t.hour, 23)
                    if hour is None:
                        t = datetime(t.year, t.month, t.day) + _DAY
                    else:
                        t = t.replace(hour=hour, minute=0, second=0)
                elif t.minute not in self.minutes:
                    minute = _first_at_or_after(self.minutes, t.minute, 59)
                    if minute is None:
                        t = t.replace(minute=0, second=0) + _HOUR
                    else:
                        t = t.replace(minute=minute, second=0)
                elif t.second not in self.seconds:
                    second = _first_at_or_after(self.seconds, t.second, 59)
                    if second is None:
                        t = t.replace(second=0) + _MINUTE
                    else:
                        t = t.replace(second=second)
                else:
                    return t
        except (OverflowError, ValueError):
            raise CronError(
                f"{_quoted(self.expression)} matches no time between {naive:%Y-%m-%d} and the"
                f" end of year {MAXYEAR}"
            ) from None
        raise CronError(
            f"{_quoted(self.expression)} never matches: none of its days of month exists in its"
            " months (February has at most 29 days; April, June, September and November have 30)"
        )


def _macro_problem(expression: str) -> str:
    if expression.lower().startswith("@every"):
        return '@every is not supported; write a cron expression such as "*/5 * * * *"'
    return f"unknown macro {_quoted(expression)}; use one of {', '.join(MACROS)}"


def _parse_field(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """The values a comma list allows, and whether it carries robfig's star bit."""
    values: set[int] = set()
    starred = False
    for item in text.split(","):
        if not item:
            raise CronError(f"{field.name} field {_quoted(text)} has an empty list item")
        item_values, item_starred = _parse_item(item, field)
        values |= item_values
        starred |= item_starred
    return frozenset(values), starred


def _parse_item(item: str, field: _Field) -> tuple[frozenset[int], bool]:
    match = _ITEM.fullmatch(item)
    if match is None:
        star = '*, "?"' if field.question_mark else "*"
        raise CronError(
            f"{field.name} field {_quoted(item)} is not valid; write {star}, N or N-M, optionally"
            " followed by /STEP"
        )
    step = 1
    if match["step"] is not None:
        if not _NUMBER.fullmatch(match["step"]):
            raise CronError(
                f'{field.name} field {_quoted(item)}: the step after "/" must be a number'
            )
        step = int(match["step"])
        if step == 0:
            raise CronError(
                f"{field.name} field {_quoted(item)} has step 0; the step must be at least 1"
            )
    if match["star"] is not None:
        if match["star"] == "?" and not field.question_mark:
            raise CronError(
                f'{field.name} field {_quoted(item)}: "?" is only allowed in day-of-month and'
                ' day-of-week; use "*"'
            )
        return frozenset(range(field.low, field.star_high + 1, step)), step == 1
    start = _value(match["start"], field)
    if match["end"] is not None:
        end = _value(match["end"], field)
    elif match["step"] is not None:
        end = max(start, field.star_high)  # robfig: "N/STEP" means "N-max/STEP"
    else:
        end = start
    if start > end:
        fix = "so write it as two ranges"
        if match["step"] is None and start == 7:  # Sunday written as 7, which is also 0
            fix = f'and Sunday is also 0: write "0-{match["end"]}"'
        elif match["step"] is None:
            fix += f' such as "{match["start"]}-{field.star_high},{field.low}-{match["end"]}"'
        raise CronError(
            f"{field.name} field {_quoted(item)} starts after it ends; ranges do not wrap around,"
            f" {fix}"
        )
    return frozenset(range(start, end + 1, step)), False


def _value(text: str, field: _Field) -> int:
    if _NUMBER.fullmatch(text):
        value = int(text)
        if not field.low <= value <= field.high:
            raise CronError(
                f"{field.name} field {_quoted(text)} is out of range {field.low}-{field.high}"
            )
        if len(text) > 2:
            raise CronError(
                f"{field.name} field {_quoted(text)} has too many digits; write {value}"
            )
        return value
    named = field.names.get(text.lower())
    if named is not None:
        return named
    expected = f"a number {field.low}-{field.high}"
    if field.names:
        names = list(field.names)
        expected += f" or a name {names[0].upper()}-{names[-1].upper()}"
    raise CronError(f"{field.name} field {_quoted(text)} is not {expected}")


def _first_at_or_after(values: frozenset[int], start: int, high: int) -> int | None:
    return next((value for value in range(start, high + 1) if value in values), None)


@dataclass(frozen=True)
class Schedule:
    """A cron expression read as wall-clock times in a zone, fired at UTC instants.

    A matching wall time that exists once fires at that instant. One skipped when clocks go
    forward fires at the end of the gap, the first instant after it; skipped times that land on
    the same instant (or on a real slot) fire once, since slots are a set of instants. One that
    happens twice when clocks go back fires on its first occurrence only, unless the expression
    runs every hour (Cron.every_hour), which fires in both passes.
    """

    cron: Cron
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC") -> Schedule:
        return cls(Cron.parse(expression), _zone(time_zone))

    def next_after(self, t: datetime) -> datetime:
        """The first slot strictly after `t`, in UTC.

        Read on its first pass, wall time maps to instants in order; only the second pass of
        a repeated hour, which every_hour schedules also fire in, comes after the whole first
        pass. So outside a repeated hour the answer is the next matching wall time; inside one
        it is that or a second-pass copy, whichever is earlier. Each case costs one or two
        next_naive calls, which keeps per-second schedules cheap across the night clocks go
        back (visiting every candidate until one lies past `t` would cost an hour of seconds
        per slot there).
        """
        moment = _as_utc(t)
        local = moment.astimezone(self.zone)
        wall = local.replace(tzinfo=None)
        first, second = _offset(local.replace(fold=0)), _offset(local.replace(fold=1))
        if first == second:
            return self._instant(self.cron.next_naive(wall))
        # `t` is in a repeated hour: wall times in [start, stop) happen at `first` offset, then
        # again at `second` offset.
        change = self._transition(wall, first, second)
        start, stop = (change + second).replace(tzinfo=None), (change + first).replace(tzinfo=None)
        if local.fold == 0:
            earliest = self._instant(self.cron.next_naive(wall))
            if self.cron.every_hour:
                # Second-pass copies start when the first pass ends, so only the earliest copy
                # can beat the next first-pass slot, and only if that slot is past the hour.
                repeated = self.cron.next_naive(start - _SECOND)
                if repeated < stop:
                    earliest = min(earliest, (repeated - second).replace(tzinfo=UTC))
            return earliest
        following = self.cron.next_naive(wall)
        if following < stop:
            if self.cron.every_hour:
                return (following - second).replace(tzinfo=UTC)
            # The rest of the hour fired on its first pass, which is over.
            following = self.cron.next_naive(stop - _SECOND)
        return self._instant(following)

    def slots(self, after: datetime, until: datetime | None = None) -> Iterator[datetime]:
        """The slots in (after, until], in ascending order; endless without `until`."""
        start = _as_utc(after)
        end = None if until is None else _as_utc(until)
        return self._slots(start, end)

    def _slots(self, moment: datetime, end: datetime | None) -> Iterator[datetime]:
        while True:
            moment = self.next_after(moment)
            if end is not None and moment > end:
                return
            yield moment

    def latest_at_or_before(self, t: datetime, *, after: datetime) -> datetime | None:
        """The newest slot in (after, t], or None.

        `after` can be far back (a schedule suspended for a month, a per-second expression), so
        this never walks forward from it. It looks back from `t` over windows of 1, 2, 4, ...
        seconds (capped at `after`) until one holds a slot, then bisects within the last
        doubling: a few dozen calls to next_after, however many slots lie in between.
        """
        end, start = _as_utc(t), _as_utc(after)
        if end <= start:
            return None
        span = -((start - end) // _SECOND)  # whole seconds from `after` to `t`, rounded up

        def first_slot(back: int) -> datetime:
            return self.next_after(max(end - back * _SECOND, start))

        # Invariant: first_slot(missed) is after `t`, first_slot(found) is not.
        missed, found = 0, 1
        slot = first_slot(found)
        while slot > end:
            if found >= span:
                return None
            missed, found = found, min(2 * found, span)
            slot = first_slot(found)
        while found - missed > 1:
            middle = (missed + found) // 2
            candidate = first_slot(middle)
            if candidate > end:
                missed = middle
            else:
                found, slot = middle, candidate
        return slot

    def count(self, after: datetime, until: datetime, *, limit: int = 100_000) -> int:
        """How many slots lie in (after, until], counting no further than `limit`."""
        return sum(1 for _ in islice(self.slots(after, until), limit))

    def _instant(self, wall: datetime) -> datetime:
        """When a matching wall time fires: its first occurrence, or the end of its gap."""
        first = _offset(wall.replace(tzinfo=self.zone))
        second = _offset(wall.replace(tzinfo=self.zone, fold=1))
        if second > first:
            return self._transition(wall, first, second)
        return (wall - first).replace(tzinfo=UTC)

    def _transition(self, wall: datetime, first: timedelta, second: timedelta) -> datetime:
        """The instant the offset changed from `first` to `second`, to the second.

        `wall`, which clocks skipped or repeated, read with each offset gives one instant
        before the change and one after it; the change is found by bisection between them.
        """
        low = (wall - max(first, second)).replace(tzinfo=UTC)
        earlier, later = 0, abs(first - second) // _SECOND
        while later - earlier > 1:
            middle = (earlier + later) // 2
            if _offset((low + middle * _SECOND).astimezone(self.zone)) == first:
                earlier = middle
            else:
                later = middle
        return low + later * _SECOND


def _zone(name: str) -> ZoneInfo:
    if name.lower() in ("local", "localtime"):
        raise CronError(
            f"time zone {_quoted(name)} depends on the machine; use an IANA name such as"
            " Europe/Berlin"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            f"unknown time zone {_quoted(name)}; use an IANA name such as Europe/Berlin"
        ) from None


def _quoted(text: str) -> str:
    """User text in double quotes, with any invisible or control character spelled out."""
    return json.dumps(text)


def _as_utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; schedules work on instants")
    return moment.astimezone(UTC)


def _offset(moment: datetime) -> timedelta:
    # Always set for a datetime on a ZoneInfo; the `or` only tells the type checker so.
    return moment.utcoffset() or timedelta(0)
