"""Cron expressions: robfig/cron v3 syntax, the CRD's regular expression, and DST handled so that
a wall-clock time fires once (every-hour schedules: in every real hour).

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

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from kubemill.operator.cron import INVERTED_RANGE, MACROS, PATTERN, Cron, CronError, Schedule

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"
LORD_HOWE = "Australia/Lord_Howe"
SECOND = timedelta(seconds=1)
FIELD_SETS = ("seconds", "minutes", "hours", "days_of_month", "months", "days_of_week")


def at(text: str) -> datetime:
    """An instant written as in the tables, e.g. 2027-03-28T01:00Z."""
    moment = datetime.fromisoformat(text)
    assert moment.utcoffset() == timedelta(0)
    return moment


def ats(*texts: str) -> list[datetime]:
    return [at(text) for text in texts]


# --- parsing -------------------------------------------------------------------------------------

FIELDS = [
    ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
    ("5/20 * * * *", "minutes", {5, 25, 45}),
    ("10-20/5 * * * *", "minutes", {10, 15, 20}),
    ("0,30,59 * * * *", "minutes", {0, 30, 59}),
    ("05 07 01 01 00", "minutes", {5}),
    ("05 07 01 01 00", "hours", {7}),
    ("05 07 01 01 00", "days_of_month", {1}),
    ("05 07 01 01 00", "months", {1}),
    ("05 07 01 01 00", "days_of_week", {0}),
    ("0 9-17/4 * * *", "hours", {9, 13, 17}),
    ("0 22/1 * * *", "hours", {22, 23}),
    ("0 0 1,15,31 * *", "days_of_month", {1, 15, 31}),
    ("0 0 ? * *", "days_of_month", set(range(1, 32))),
    ("0 0 */10 * *", "days_of_month", {1, 11, 21, 31}),
    ("0 0 * JAN-MAR,dec *", "months", {1, 2, 3, 12}),
    ("0 0 * jun/2 *", "months", {6, 8, 10, 12}),
    ("0 0 * */4 *", "months", {1, 5, 9}),
    ("0 0 * * MON-FRI", "days_of_week", {1, 2, 3, 4, 5}),
    ("0 0 * * 7", "days_of_week", {0}),
    ("0 0 * * 5-7", "days_of_week", {5, 6, 0}),
    ("0 0 * * sun,Sat", "days_of_week", {0, 6}),
    ("0 0 * * */2", "days_of_week", {0, 2, 4, 6}),
    ("0 0 * * 1/2", "days_of_week", {1, 3, 5}),  # robfig: N/STEP stops at Saturday
    ("0 0 * * ?/3", "days_of_week", {0, 3, 6}),
    ("0 0 * * *", "seconds", {0}),
    ("30 0 0 * * *", "seconds", {30}),
    ("*/15 * * * * *", "seconds", {0, 15, 30, 45}),
    ("*/15 * * * * *", "minutes", set(range(60))),
    ("0\t0  * *\t*", "hours", {0}),
]


@pytest.mark.parametrize(("expression", "attribute", "expected"), FIELDS)
def test_parse_reads_each_field(expression: str, attribute: str, expected: set[int]) -> None:
    assert getattr(Cron.parse(expression), attribute) == expected


@pytest.mark.parametrize(
    ("expression", "has_seconds"),
    [("0 0 * * *", False), ("0 0 0 * * *", True), ("@hourly", False), ("  0 0 * * *\t", False)],
)
def test_a_sixth_field_is_seconds_first(expression: str, has_seconds: bool) -> None:
    cron = Cron.parse(expression)
    assert cron.has_seconds is has_seconds
    assert cron.expression == expression.strip()


@pytest.mark.parametrize("macro", [*MACROS, "@DAILY", "@Weekly"])
def test_macros_mean_their_expansion(macro: str) -> None:
    cron, expanded = Cron.parse(macro), Cron.parse(MACROS[macro.lower()])
    assert cron.expression == macro
    for name in (*FIELD_SETS, "dom_starred", "dow_starred"):
        assert getattr(cron, name) == getattr(expanded, name), name


def test_macro_table_is_robfigs() -> None:
    assert MACROS == {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    }


FIELD_COUNT = (
    "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, "
)
TZ = "TZ= and CRON_TZ= prefixes are not supported; set spec.timeZone instead"
ITEM = "is not valid; write *, N or N-M, optionally followed by /STEP"
DAY_ITEM = 'is not valid; write *, "?", N or N-M, optionally followed by /STEP'
MACRO_NAMES = "@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
INVALID = [
    ("75 * * * *", 'minute field "75" is out of range 0-59'),
    ("0 24 * * *", 'hour field "24" is out of range 0-23'),
    ("0 0 0 * *", 'day-of-month field "0" is out of range 1-31'),
    ("0 0 32 * *", 'day-of-month field "32" is out of range 1-31'),
    ("0 0 * 0 *", 'month field "0" is out of range 1-12'),
    ("0 0 * 13 *", 'month field "13" is out of range 1-12'),
    ("0 0 * * 8", 'day-of-week field "8" is out of range 0-7'),
    ("60 0 0 * * *", 'second field "60" is out of range 0-59'),
    ("0 0-24 * * *", 'hour field "24" is out of range 0-23'),
    ("007 * * * *", 'minute field "007" has too many digits; write 7'),
    ("0 0 * JANUARY *", 'month field "JANUARY" is not a number 1-12 or a name JAN-DEC'),
    ("0 0 * * MOM", 'day-of-week field "MOM" is not a number 0-7 or a name SUN-SAT'),
    ("JAN * * * *", 'minute field "JAN" is not a number 0-59'),
    ("0 0 L * *", 'day-of-month field "L" is not a number 1-31'),
    ("*/0 * * * *", 'minute field "*/0" has step 0; the step must be at least 1'),
    ("0 0 1-10/00 * *", 'day-of-month field "1-10/00" has step 0; the step must be at least 1'),
    ("*/x * * * *", 'minute field "*/x": the step after "/" must be a number'),
    ("*/ * * * *", 'minute field "*/": the step after "/" must be a number'),
    (
        "5-3 * * * *",
        'minute field "5-3" starts after it ends; ranges do not wrap around, so write it as two'
        ' ranges such as "5-59,0-3"',
    ),
    (
        "0 0 * * FRI-MON",
        'day-of-week field "FRI-MON" starts after it ends; ranges do not wrap around, so write it'
        ' as two ranges such as "FRI-6,0-MON"',
    ),
    (
        "0 0 20-10/2 * *",
        'day-of-month field "20-10/2" starts after it ends; ranges do not wrap around, so write it'
        " as two ranges",
    ),
    (
        "? * * * *",
        'minute field "?": "?" is only allowed in day-of-month and day-of-week; use "*"',
    ),
    ("1,,2 * * * *", 'minute field "1,,2" has an empty list item'),
    ("0, * * * *", 'minute field "0," has an empty list item'),
    ("*-5 * * * *", f'minute field "*-5" {ITEM}'),
    ("1-2-3 * * * *", f'minute field "1-2-3" {ITEM}'),
    ("1/2/3 * * * *", f'minute field "1/2/3" {ITEM}'),
    ("0 0 * * 1#2", f'day-of-week field "1#2" {DAY_ITEM}'),
    ("0 0 * * *,", 'day-of-week field "*," has an empty list item'),
    ("0 0 * *", f'{FIELD_COUNT}got 4: "0 0 * *"'),
    ("0 0 0 * * * *", f'{FIELD_COUNT}got 7: "0 0 0 * * * *"'),
    ("", f'{FIELD_COUNT}got 0: ""'),
    ("0 0 * * *\n", f'day-of-week field "*\\n" {DAY_ITEM}'),
    ("0 0\u00a0* * *", f'{FIELD_COUNT}got 4: "0 0\\u00a0* * *"'),
    ("TZ=UTC 0 0 * * *", TZ),
    ("CRON_TZ=Europe/Berlin 0 0 * * *", TZ),
    ("@every 5m", '@every is not supported; write a cron expression such as "*/5 * * * *"'),
    ("@fortnightly", f'unknown macro "@fortnightly"; use one of {MACRO_NAMES}'),
    ("@daily 5", f'unknown macro "@daily 5"; use one of {MACRO_NAMES}'),
]


@pytest.mark.parametrize(("expression", "message"), INVALID)
def test_parse_rejects_with_a_message_saying_what_to_fix(expression: str, message: str) -> None:
    with pytest.raises(CronError) as caught:
        Cron.parse(expression)
    assert caught.value.message == message
    assert str(caught.value) == message


# A regular expression cannot compare two numbers, so these pass PATTERN and fail Cron.parse.
INVERTED = {"5-3 * * * *", "0 0 * * FRI-MON", "0 0 20-10/2 * *"}
MORE_VALID = [
    "0 0 * * 07",
    "00 00 01 01 *",
    "0 0 * * SUN-sat",
    "0 0 1-31/31 * *",
    "0 0 */001 * *",
    "0 0 * * 1-7",
    "0 0 *,? * *",
    "0-59/59 0-23/23 1-31/30 1-12/11 0-7/7",
    "59 59 23 31 12 7",
    " @daily ",
    "@Midnight",
    "*\t*\t*\t*\t*",
]
MORE_INVALID = [
    "0 0 00 * *",
    "0 0 * * 007",
    "0 0 * 00 *",
    "0 0 * * +5",
    "0 0 * * \u0663",
    "@ daily",
    "@daily\n",
    "0 0 * * * @daily",
    "0 0\u00a0* * *",
    "0 0 * * 1,",
    ",0 0 * * *",
    "0 0 * * MONDAY",
    "0 0 * * 1-",
    "0 0 * * -1",
    "0 ? * * *",
    "? 0 0 * * *",
]


@pytest.mark.parametrize(
    "expression",
    [e for e, _, _ in FIELDS]
    + [*MACROS, "@DAILY"]
    + MORE_VALID
    + [e for e, _ in INVALID]
    + MORE_INVALID,
)
def test_pattern_accepts_what_parse_accepts(expression: str) -> None:
    try:
        Cron.parse(expression)
        parses = True
    except CronError:
        parses = False
    expected = parses or expression in INVERTED
    assert (re.fullmatch(PATTERN, expression) is not None) is expected


def _inverted(expression: str) -> bool:
    try:
        Cron.parse(expression)
    except CronError as exc:
        return "starts after it ends" in exc.message
    return False


@pytest.mark.parametrize(
    "expression",
    [
        "5-3 * * * *", "30-15 * * * *", "10-09 * * * *", "10-9/2 * * * *", "1,9-8 * * * *",
        "0 0 * * FRI-MON", "0 0 * * fri-mon", "0 0 * * 7-1", "0 0 * * 5-MON", "0 0 1 DEC-JAN *",
        "0 0 1 MAR-2 *", "59-0 * * * * *", "0 23-0 * * *", "0 0 31-1 * *",
        "0 0 * * MON-FRI", "*/15 1-5 * * *", "0 0 * * 5-7", "0 0 * * SAT-7", "0 0 * * MON-7",
        "0 0 1 3-MAR *", "09-10 * * * *", "0-59 * * * * *", "@daily", "0 0 29 2 *",
    ],
)  # fmt: skip
def test_inverted_range_finds_what_parse_refuses_as_inverted(expression: str) -> None:
    assert (re.search(INVERTED_RANGE, expression) is not None) is _inverted(expression)


def test_inverted_range_agrees_with_parse_on_every_range_of_every_field() -> None:
    """All ranges of two values each field accepts (numbers, zero-padded numbers, names),
    in its own position: a few thousand expressions."""
    fields = [
        (0, [str(v) for v in range(60)] + ["07"]),
        (1, [str(v) for v in range(24)] + ["05"]),
        (2, [str(v) for v in range(1, 32)]),
        (3, [str(v) for v in range(1, 13)] + ["JAN", "mar", "Dec"]),
        (4, [str(v) for v in range(8)] + ["SUN", "wed", "Sat"]),
    ]
    checked = 0
    for position, values in fields:
        for start in values:
            for end in values:
                parts = ["0", "0", "1", "1", "0"]
                parts[position] = f"{start}-{end}"
                expression = " ".join(parts)
                found = re.search(INVERTED_RANGE, expression) is not None
                assert found is _inverted(expression), expression
                checked += 1
    assert checked > 5000


def test_pattern_uses_no_escapes_a_cel_string_would_eat() -> None:
    assert "\\" not in PATTERN.replace("\\t", "")
    assert PATTERN.startswith("^") and PATTERN.endswith("$")
    assert not re.search(r"\(\?[=!<]|\\[1-9]", PATTERN), (
        "lookarounds and backreferences are not RE2"
    )


@pytest.mark.parametrize(
    ("expression", "dom_starred", "dow_starred"),
    [
        ("0 0 * * *", True, True),
        ("0 0 ? * MON", True, False),
        ("0 0 */1 * MON", True, False),
        ("0 0 */2 * MON", False, False),
        ("0 0 1,* * MON", True, False),  # robfig: any starred item sets the star bit
        ("0 0 1 * *", False, True),
        ("0 0 1 * */2", False, False),
    ],
)
def test_star_bits_are_robfigs(expression: str, dom_starred: bool, dow_starred: bool) -> None:
    cron = Cron.parse(expression)
    assert (cron.dom_starred, cron.dow_starred) == (dom_starred, dow_starred)


@pytest.mark.parametrize(
    ("expression", "naive", "expected"),
    [
        ("0 0 1 * MON", datetime(2027, 2, 1), True),  # Monday the 1st
        ("0 0 1 * MON", datetime(2027, 4, 1), True),  # Thursday the 1st: either day field
        ("0 0 1 * MON", datetime(2027, 4, 12), True),  # a Monday
        ("0 0 1 * MON", datetime(2027, 4, 2), False),
        ("0 0 * * MON", datetime(2027, 4, 1), False),
        ("0 0 ? * MON", datetime(2027, 4, 12), True),
        ("0 0 */2 * MON", datetime(2027, 4, 12), True),  # even, but a Monday
        ("0 0 */2 * MON", datetime(2027, 4, 14), False),  # even Wednesday
        ("0 0 */2 * MON", datetime(2027, 4, 15), True),  # odd Thursday
        ("0 0 * * *", datetime(2027, 1, 1, 0, 0, 1), False),  # five fields fire on second 0
        ("0 0 * * *", datetime(2027, 1, 1, 0, 0, 0, 500), False),
        ("30 0 0 * * *", datetime(2027, 1, 1, 0, 0, 30), True),
        ("0 0 29 2 *", datetime(2028, 2, 29), True),
    ],
)
def test_matches(expression: str, naive: datetime, expected: bool) -> None:
    assert Cron.parse(expression).matches(naive) is expected


def test_next_naive_gives_up_on_a_day_that_never_comes() -> None:
    with pytest.raises(CronError) as caught:
        Cron.parse("0 0 30 2 *").next_naive(datetime(2027, 1, 1))
    assert caught.value.message == (
        '"0 0 30 2 *" never matches: none of its days of month exists in its months (February'
        " has at most 29 days; April, June, September and November have 30)"
    )
    with pytest.raises(CronError, match="never matches"):
        Schedule.parse("0 0 31 4,6,9,11 *").next_after(at("2027-01-01T00:00Z"))


def test_next_naive_finds_a_leap_day_eight_years_away() -> None:
    # robfig gives up after five years; 2100 is not a leap year.
    assert Cron.parse("0 0 29 2 *").next_naive(datetime(2096, 3, 1)) == datetime(2104, 2, 29)


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
