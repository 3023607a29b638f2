"""The CRD's schedule expressions (operator/cron_patterns.py): PATTERN accepts what Cron.parse
accepts, INVERTED_RANGE finds the inverted ranges PATTERN cannot, and both stay RE2 and CEL safe.
"""

from __future__ import annotations

import re

import pytest

from kubemill.operator.cron_patterns import INVERTED_RANGE, PATTERN
from kubemill.operator.cron_syntax import MACROS, Cron, CronError
from tests.unit.test_cron_syntax import FIELDS, INVALID

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
