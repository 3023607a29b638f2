"""Slots (operator/cron_instants.py): time zones, and DST handled so that a wall-clock time fires
once (every-hour schedules: in every real hour).

Expected instants are literals worked out from the zones' published transitions, which
test_transitions_are_the_ones_the_tables_assume pins down:
- Europe/Berlin: 2027-03-28 01:00Z (02:00 CET -> 03:00 CEST), 2027-10-31 01:00Z (03:00 CEST ->
  02:00 CET);
- America/New_York: 2027-03-14 07:00Z (02:00 EST -> 03:00 EDT), 2027-11-07 06:00Z (02:00 EDT ->
  01:00 EST);
- Australia/Lord_Howe: 2027-04-03 15:00Z (02:00 +11 -> 01:30 +10:30), 2027-10-02 15:30Z
  (02:00 +10:30 -> 02:30 +11).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kubemill.operator.cron_instants import Schedule
from kubemill.operator.cron_syntax import Cron, CronError

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"
SECOND = timedelta(seconds=1)


def at(text: str) -> datetime:
    """An instant written as in the tables, e.g. 2027-03-28T01:00Z."""
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0)
    return moment


def ats(*texts: str) -> list[datetime]:
    return [at(text) for text in texts]


# --- time zones ----------------------------------------------------------------------------------


UNKNOWN_ZONE = 'unknown time zone "{}"; use an IANA name such as Europe/Berlin'


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Europe/Berln", UNKNOWN_ZONE.format("Europe/Berln")),
        ("", UNKNOWN_ZONE.format("")),
        ("Europe/", UNKNOWN_ZONE.format("Europe/")),
        ("Europe", UNKNOWN_ZONE.format("Europe")),
        ("../etc/passwd", UNKNOWN_ZONE.format("../etc/passwd")),
        ("zone.tab", UNKNOWN_ZONE.format("zone.tab")),  # in the zone folder, but not a zone
        (
            "localtime",
            'time zone "localtime" depends on the machine; use an IANA name such as Europe/Berlin',
        ),
    ],
)
def test_unknown_time_zones_are_refused(name: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        Schedule.parse("0 0 * * *", name)
    assert caught.value.message == message


def test_expression_errors_come_before_zone_errors() -> None:
    with pytest.raises(CronError, match="out of range"):
        Schedule.parse("0 24 * * *", "Nowhere/Special")


def test_transitions_are_the_ones_the_tables_assume() -> None:
    for zone, instant, before, after in [
        (BERLIN, "2027-03-28T01:00Z", 1, 2),
        (BERLIN, "2027-10-31T01:00Z", 2, 1),
        (NEW_YORK, "2027-03-14T07:00Z", -5, -4),
        (NEW_YORK, "2027-11-07T06:00Z", -4, -5),
        (LORD_HOWE, "2027-04-03T15:00Z", 11, 10.5),
        (LORD_HOWE, "2027-10-02T15:30Z", 10.5, 11),
    ]:
        change = at(instant)
        offsets = [
            moment.astimezone(ZoneInfo(zone)).utcoffset() for moment in (change - SECOND, change)
        ]
        assert offsets == [timedelta(hours=before), timedelta(hours=after)], zone


# --- slots in UTC --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 31 * *", "2027-01-31T00:00Z", "2027-03-31T00:00Z"),
        ("0 0 31 * *", "2027-04-15T00:00Z", "2027-05-31T00:00Z"),
        ("0 0 29 2 *", "2027-01-01T00:00Z", "2028-02-29T00:00Z"),
        ("0 0 29 2 *", "2028-02-29T00:00Z", "2032-02-29T00:00Z"),
        ("@weekly", "2027-01-01T00:00Z", "2027-01-03T00:00Z"),
        ("@monthly", "2027-01-31T12:00Z", "2027-02-01T00:00Z"),
        ("@yearly", "2027-01-01T00:00Z", "2028-01-01T00:00Z"),
        ("59 23 31 12 *", "2027-12-31T23:59Z", "2028-12-31T23:59Z"),
        ("0 12 * * MON-FRI", "2027-01-01T12:00Z", "2027-01-04T12:00Z"),
        ("0 0 * * 7", "2027-01-01T00:00Z", "2027-01-03T00:00Z"),
        ("0 0 1 */3 *", "2027-02-15T00:00Z", "2027-04-01T00:00Z"),
        ("0 9-17/4 * * *", "2027-01-01T13:00Z", "2027-01-01T17:00Z"),
        ("5/20 * * * *", "2027-01-01T00:45Z", "2027-01-01T01:05Z"),
        ("30 0 0 * * *", "2027-01-01T00:00:30Z", "2027-01-02T00:00:30Z"),
        ("*/15 * * * * *", "2027-12-31T23:59:50Z", "2028-01-01T00:00:00Z"),
        ("* * * * * *", "2027-01-01T00:00:00.500Z", "2027-01-01T00:00:01Z"),
        ("* * * * *", "2027-01-01T00:00:00.500Z", "2027-01-01T00:01:00Z"),
    ],
)
def test_next_after_in_utc(expression: str, after: str, expected: str) -> None:
    assert Schedule.parse(expression).next_after(at(after)) == at(expected)


def test_next_after_takes_any_zone_and_answers_in_utc() -> None:
    schedule = Schedule.parse("0 13 * * *")
    slot = schedule.next_after(datetime(2027, 1, 1, 13, 0, tzinfo=ZoneInfo(BERLIN)))  # 12:00Z
    assert slot == at("2027-01-01T13:00Z")
    assert slot.tzinfo is UTC


def test_naive_times_are_refused() -> None:
    schedule = Schedule.parse("0 0 * * *")
    with pytest.raises(ValueError, match="no time zone"):
        schedule.next_after(datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="no time zone"):
        schedule.slots(datetime(2027, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        schedule.cron.next_naive(at("2027-01-01T00:00Z"))


@pytest.mark.parametrize(
    ("expression", "after", "until", "expected"),
    [
        # Either day field suffices unless one of them is starred (Vixie's and robfig's rule).
        (
            "0 0 1 * MON",
            "2027-03-25T00:00Z",
            "2027-04-12T00:00Z",
            ["2027-03-29T00:00Z", "2027-04-01T00:00Z", "2027-04-05T00:00Z", "2027-04-12T00:00Z"],
        ),
        (
            "0 0 */2 * MON",
            "2027-03-25T00:00Z",
            "2027-04-05T00:00Z",
            [
                "2027-03-27T00:00Z",
                "2027-03-29T00:00Z",
                "2027-03-31T00:00Z",
                "2027-04-01T00:00Z",
                "2027-04-03T00:00Z",
                "2027-04-05T00:00Z",
            ],
        ),
        (
            "0 0 * * MON",
            "2027-03-25T00:00Z",
            "2027-04-12T00:00Z",
            ["2027-03-29T00:00Z", "2027-04-05T00:00Z", "2027-04-12T00:00Z"],
        ),
        (
            "0 0 1,* * MON",
            "2027-03-25T00:00Z",
            "2027-04-12T00:00Z",
            ["2027-03-29T00:00Z", "2027-04-05T00:00Z", "2027-04-12T00:00Z"],
        ),
        ("0 0 1 * *", "2027-03-25T00:00Z", "2027-04-12T00:00Z", ["2027-04-01T00:00Z"]),
        (
            "*/15 * * * * *",
            "2027-12-31T23:59:30Z",
            "2028-01-01T00:00:15Z",
            ["2027-12-31T23:59:45Z", "2028-01-01T00:00:00Z", "2028-01-01T00:00:15Z"],
        ),
        ("0 0 * * *", "2027-01-01T00:00Z", "2027-01-01T23:59:59Z", []),
    ],
)
def test_slots_in_utc(expression: str, after: str, until: str, expected: list[str]) -> None:
    assert list(Schedule.parse(expression).slots(at(after), at(until))) == ats(*expected)


# --- DST -----------------------------------------------------------------------------------------

DST = [
    # Berlin, clocks forward: 02:30 does not exist and fires when the gap ends, 03:00 CEST.
    (
        "30 2 * * *",
        BERLIN,
        "2027-03-27T12:00Z",
        "2027-03-29T12:00Z",
        ["2027-03-28T01:00Z", "2027-03-29T00:30Z"],
    ),
    # ... and every skipped time, as well as 03:00 itself, is that same one instant.
    (
        "*/30 2 * * *",
        BERLIN,
        "2027-03-27T12:00Z",
        "2027-03-29T12:00Z",
        ["2027-03-28T01:00Z", "2027-03-29T00:00Z", "2027-03-29T00:30Z"],
    ),
    ("0 2,3 * * *", BERLIN, "2027-03-27T12:00Z", "2027-03-28T12:00Z", ["2027-03-28T01:00Z"]),
    (
        "0 * * * *",
        BERLIN,
        "2027-03-28T00:30Z",
        "2027-03-28T02:30Z",
        ["2027-03-28T01:00Z", "2027-03-28T02:00Z"],
    ),
    # Berlin, clocks back: 02:30 happens twice and fires once, on the first pass (CEST).
    (
        "30 2 * * *",
        BERLIN,
        "2027-10-30T12:00Z",
        "2027-11-01T12:00Z",
        ["2027-10-31T00:30Z", "2027-11-01T01:30Z"],
    ),
    (
        "*/30 2 * * *",
        BERLIN,
        "2027-10-30T12:00Z",
        "2027-10-31T12:00Z",
        ["2027-10-31T00:00Z", "2027-10-31T00:30Z"],
    ),
    # ... but an every-hour schedule fires in both passes.
    (
        "0 * * * *",
        BERLIN,
        "2027-10-30T23:30Z",
        "2027-10-31T02:30Z",
        ["2027-10-31T00:00Z", "2027-10-31T01:00Z", "2027-10-31T02:00Z"],
    ),
    (
        "*/20 * * * * *",
        BERLIN,
        "2027-10-31T00:59:30Z",
        "2027-10-31T01:00:30Z",
        ["2027-10-31T00:59:40Z", "2027-10-31T01:00:00Z", "2027-10-31T01:00:20Z"],
    ),
    (
        "*/20 * 2 * * *",
        BERLIN,
        "2027-10-31T00:59:30Z",
        "2027-10-31T12:00Z",
        ["2027-10-31T00:59:40Z"],
    ),
    # New York, forward at 02:00 EST (07:00Z) and back at 02:00 EDT (06:00Z).
    (
        "30 1 * * *",
        NEW_YORK,
        "2027-03-13T12:00Z",
        "2027-03-15T12:00Z",
        ["2027-03-14T06:30Z", "2027-03-15T05:30Z"],
    ),
    (
        "0 2 * * *",
        NEW_YORK,
        "2027-03-13T12:00Z",
        "2027-03-15T12:00Z",
        ["2027-03-14T07:00Z", "2027-03-15T06:00Z"],
    ),
    (
        "30 1 * * *",
        NEW_YORK,
        "2027-11-06T12:00Z",
        "2027-11-08T12:00Z",
        ["2027-11-07T05:30Z", "2027-11-08T06:30Z"],
    ),
    (
        "0 2 * * *",
        NEW_YORK,
        "2027-11-06T12:00Z",
        "2027-11-08T12:00Z",
        ["2027-11-07T07:00Z", "2027-11-08T07:00Z"],
    ),
    (
        "30 * * * *",
        NEW_YORK,
        "2027-11-07T04:00Z",
        "2027-11-07T07:00Z",
        ["2027-11-07T04:30Z", "2027-11-07T05:30Z", "2027-11-07T06:30Z"],
    ),
    # Lord Howe shifts by 30 minutes: forward 02:00 -> 02:30, back 02:00 -> 01:30.
    (
        "15 2 * * *",
        LORD_HOWE,
        "2027-10-01T00:00Z",
        "2027-10-03T16:00Z",
        ["2027-10-01T15:45Z", "2027-10-02T15:30Z", "2027-10-03T15:15Z"],
    ),
    (
        "0 * * * *",
        LORD_HOWE,
        "2027-10-02T14:00Z",
        "2027-10-02T17:00Z",
        ["2027-10-02T14:30Z", "2027-10-02T15:30Z", "2027-10-02T16:00Z", "2027-10-02T17:00Z"],
    ),
    (
        "45 1 * * *",
        LORD_HOWE,
        "2027-04-02T00:00Z",
        "2027-04-05T00:00Z",
        ["2027-04-02T14:45Z", "2027-04-03T14:45Z", "2027-04-04T15:15Z"],
    ),
    (
        "45 * * * *",
        LORD_HOWE,
        "2027-04-03T13:00Z",
        "2027-04-03T17:00Z",
        ["2027-04-03T13:45Z", "2027-04-03T14:45Z", "2027-04-03T15:15Z", "2027-04-03T16:15Z"],
    ),
]


@pytest.mark.parametrize(("expression", "zone", "after", "until", "expected"), DST)
def test_slots_across_dst(
    expression: str, zone: str, after: str, until: str, expected: list[str]
) -> None:
    assert list(Schedule.parse(expression, zone).slots(at(after), at(until))) == ats(*expected)


@pytest.mark.parametrize(("expression", "zone", "after", "until", "expected"), DST)
def test_next_after_from_inside_the_night(
    expression: str, zone: str, after: str, until: str, expected: list[str]
) -> None:
    """Asked from any second of the window, next_after gives the next expected slot."""
    schedule = Schedule.parse(expression, zone)
    slots = ats(*expected)
    moment = at(after)
    step = timedelta(seconds=7) if schedule.cron.has_seconds else timedelta(seconds=97)
    while moment < at(until):
        following = [slot for slot in slots if slot > moment]
        if following:
            assert schedule.next_after(moment) == following[0], moment
        moment += step


@pytest.mark.parametrize(
    ("zone", "start", "end", "expected"),
    [
        (BERLIN, "2027-03-27T23:00Z", "2027-03-28T22:00Z", 23),
        (BERLIN, "2027-10-30T22:00Z", "2027-10-31T23:00Z", 25),
        (NEW_YORK, "2027-03-14T05:00Z", "2027-03-15T04:00Z", 23),
        (NEW_YORK, "2027-11-07T04:00Z", "2027-11-08T05:00Z", 25),
        # 02:00 is skipped and fires at 02:30 (+11), which is not on the hour: still 24.
        (LORD_HOWE, "2027-10-02T13:30Z", "2027-10-03T13:00Z", 24),
        # Only 01:30-01:59 repeats, and no hour starts in it.
        (LORD_HOWE, "2027-04-03T13:00Z", "2027-04-04T13:30Z", 24),
    ],
)
def test_hourly_slots_in_a_local_day(zone: str, start: str, end: str, expected: int) -> None:
    schedule = Schedule.parse("0 * * * *", zone)
    assert schedule.count(at(start) - SECOND, at(end) - SECOND) == expected


def test_preview_of_the_spring_night() -> None:
    slots = Schedule.parse("30 2 * * *", BERLIN).slots(at("2027-03-27T00:00Z"))
    assert [next(slots) for _ in range(5)] == ats(
        "2027-03-27T01:30Z",
        "2027-03-28T01:00Z",
        "2027-03-29T00:30Z",
        "2027-03-30T00:30Z",
        "2027-03-31T00:30Z",
    )


def _scanned(expression: str, zone_name: str, start: datetime, end: datetime) -> list[datetime]:
    """Slots in (start, end] found the slow way: every UTC minute read on the wall clock."""
    cron, zone = Cron.parse(expression), ZoneInfo(zone_name)
    every_hour = cron.hours == frozenset(range(24))
    minute = timedelta(minutes=1)
    found: set[datetime] = set()
    moment = start.replace(second=0, microsecond=0) + minute
    previous = (moment - minute).astimezone(zone)
    while moment <= end:
        local = moment.astimezone(zone)
        wall = local.replace(tzinfo=None)
        repeated = local.utcoffset() != local.replace(fold=1 - local.fold).utcoffset()
        if cron.matches(wall) and not (repeated and local.fold == 1 and not every_hour):
            found.add(moment)
        skipped = previous.replace(tzinfo=None) + minute
        while skipped < wall:  # the clocks jumped forward between the two minutes
            if cron.matches(skipped):
                found.add(moment)
            skipped += minute
        previous, moment = local, moment + minute
    return sorted(found)


@pytest.mark.parametrize(
    ("zone", "change"),
    [
        (BERLIN, "2027-03-28T01:00Z"),
        (BERLIN, "2027-10-31T01:00Z"),
        (NEW_YORK, "2027-03-14T07:00Z"),
        (NEW_YORK, "2027-11-07T06:00Z"),
        (LORD_HOWE, "2027-04-03T15:00Z"),
        (LORD_HOWE, "2027-10-02T15:30Z"),
    ],
)
@pytest.mark.parametrize(
    "expression",
    ["30 2 * * *", "*/20 * * * *", "* 1 * * *", "0,30 1-3 * * *", "45 */2 * * *", "0 0-23 * * *"],
)
def test_slots_agree_with_a_minute_by_minute_scan(expression: str, zone: str, change: str) -> None:
    start, end = at(change) - timedelta(hours=26), at(change) + timedelta(hours=26)
    scanned = _scanned(expression, zone, start, end)
    assert scanned, "the window should hold slots"
    assert list(Schedule.parse(expression, zone).slots(start, end)) == scanned


# --- looking back, counting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "zone", "t", "after", "expected"),
    [
        # Thirty days of per-second slots lie in between: this must not walk them.
        (
            "* * * * * *",
            "UTC",
            "2027-06-15T12:34:56.789Z",
            "2027-05-16T12:34:56.789Z",
            "2027-06-15T12:34:56Z",
        ),
        ("* * 1 * * *", "UTC", "2027-06-15T23:00Z", "2027-05-16T23:00Z", "2027-06-15T01:59:59Z"),
        ("* * 2 * * *", BERLIN, "2027-10-31T05:30Z", "2020-01-01T00:00Z", "2027-10-31T00:59:59Z"),
        ("0 0 1 * *", "UTC", "2027-06-15T00:00Z", "2027-01-01T00:00Z", "2027-06-01T00:00Z"),
        ("0 0 1 * *", "UTC", "2027-06-15T00:00Z", "2027-06-01T00:00Z", None),  # after: exclusive
        ("0 0 1 * *", "UTC", "2027-06-01T00:00Z", "2027-05-31T23:59:59Z", "2027-06-01T00:00Z"),
        ("0 0 1 * *", "UTC", "2027-06-01T00:00Z", "2027-06-01T00:00Z", None),
        ("0 0 1 * *", "UTC", "2027-06-01T00:00Z", "2027-07-01T00:00Z", None),
        ("0 0 29 2 *", "UTC", "2031-01-01T00:00Z", "2020-01-01T00:00Z", "2028-02-29T00:00Z"),
        ("30 2 * * *", BERLIN, "2027-10-31T03:00Z", "2027-10-29T00:00Z", "2027-10-31T00:30Z"),
        ("0 * * * *", BERLIN, "2027-10-31T01:30Z", "2027-10-30T01:30Z", "2027-10-31T01:00Z"),
        ("30 2 * * *", BERLIN, "2027-03-28T01:00Z", "2027-03-27T12:00Z", "2027-03-28T01:00Z"),
        ("30 2 * * *", BERLIN, "2027-03-28T00:59:59Z", "2027-03-27T12:00Z", None),
    ],
)
def test_latest_at_or_before(
    expression: str, zone: str, t: str, after: str, expected: str | None
) -> None:
    latest = Schedule.parse(expression, zone).latest_at_or_before(at(t), after=at(after))
    assert latest == (None if expected is None else at(expected))


@pytest.mark.parametrize(
    ("expression", "zone", "after", "until", "limit", "expected"),
    [
        ("*/15 * * * * *", "UTC", "2027-01-01T00:00Z", "2027-01-01T01:00Z", 100_000, 240),
        ("* * * * * *", "UTC", "2027-01-01T00:00Z", "2027-01-31T00:00Z", 1000, 1000),
        ("0 0 * * *", "UTC", "2027-01-01T00:00Z", "2027-01-31T00:00Z", 30, 30),
        ("0 0 * * *", "UTC", "2027-01-01T00:00Z", "2027-01-31T00:00Z", 0, 0),
        ("0 0 * * *", "UTC", "2027-01-31T00:00Z", "2027-01-01T00:00Z", 100_000, 0),
        ("30 2 * * *", BERLIN, "2027-10-27T00:00Z", "2027-11-03T00:00Z", 100_000, 7),
        ("30 2 * * *", BERLIN, "2027-03-24T00:00Z", "2027-03-31T00:00Z", 100_000, 7),
        # 3600 on the 27th, the whole skipped hour as one slot, then 02:00:00 CEST on the 29th.
        ("* * 2 * * *", BERLIN, "2027-03-27T00:00Z", "2027-03-29T00:00Z", 100_000, 3602),
        # The 30th from 02:00:01, the 31st's first pass only, the 1st in full.
        ("* * 2 * * *", BERLIN, "2027-10-30T00:00Z", "2027-11-01T02:00Z", 100_000, 10799),
        ("* * * * * *", BERLIN, "2027-10-31T00:00Z", "2027-10-31T02:00Z", 100_000, 7200),
    ],
)
def test_count(
    expression: str, zone: str, after: str, until: str, limit: int, expected: int
) -> None:
    assert Schedule.parse(expression, zone).count(at(after), at(until), limit=limit) == expected
