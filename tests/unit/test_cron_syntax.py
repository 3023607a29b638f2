"""Cron syntax (operator/cron_syntax.py): robfig/cron v3's fields, ranges, steps, names, star
bits and macros, messages that say what to fix, and wall-clock matching without time zones.
tests/integration/test_cron_differential.py holds the same parser against robfig itself.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kubemill.operator.cron_instants import Schedule
from kubemill.operator.cron_syntax import MACROS, Cron, CronError

FIELD_SETS = ("seconds", "minutes", "hours", "days_of_month", "months", "days_of_week")


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
        Schedule.parse("0 0 31 4,6,9,11 *").next_after(datetime(2027, 1, 1, tzinfo=UTC))


def test_next_naive_finds_a_leap_day_eight_years_away() -> None:
    # robfig gives up after five years; 2100 is not a leap year.
    assert Cron.parse("0 0 29 2 *").next_naive(datetime(2096, 3, 1)) == datetime(2104, 2, 29)
