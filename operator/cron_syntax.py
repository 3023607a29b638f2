"""Cron syntax: what an expression allows, read as robfig/cron v3's standard parser reads it.

Parsing gives a Cron, the sets of values each field allows plus robfig's "star bits", and
Cron.next_naive walks wall-clock time field by field as robfig does. Time zones and daylight
saving are not this module's concern (cron_instants), nor the CRD's regular expressions
(cron_patterns), which are built from the same field table (SECONDS to DAYS_OF_WEEK).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import MAXYEAR, datetime, timedelta

__all__ = ["MACROS", "Cron", "CronError"]

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
class Field:
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


#: The field table, shared with cron_patterns so the CRD spells exactly what parse reads.
SECONDS = Field("second", 0, 59, 59, {}, "[0-5]?[0-9]")
MINUTES = Field("minute", 0, 59, 59, {}, "[0-5]?[0-9]")
HOURS = Field("hour", 0, 23, 23, {}, "[01]?[0-9]|2[0-3]")
DAYS_OF_MONTH = Field("day-of-month", 1, 31, 31, {}, "0?[1-9]|[12][0-9]|3[01]", True)
MONTHS = Field(
    "month",
    1,
    12,
    12,
    _names(_MONTH_NAMES, 1),
    f"0?[1-9]|1[0-2]|{_alternatives(_MONTH_NAMES)}",
)
DAYS_OF_WEEK = Field(
    "day-of-week", 0, 7, 6, _names(_DAY_NAMES, 0), f"0?[0-7]|{_alternatives(_DAY_NAMES)}", True
)
FIVE_FIELDS = (MINUTES, HOURS, DAYS_OF_MONTH, MONTHS, DAYS_OF_WEEK)

_BLANKS = re.compile(r"[ \t]+")
_ITEM = re.compile(
    r"(?:(?P<star>[*?])|(?P<start>[0-9A-Za-z]+)(?:-(?P<end>[0-9A-Za-z]+))?)(?:/(?P<step>[^/]*))?"
)
_NUMBER = re.compile(r"[0-9]+")
_ALLHOURS = frozenset(range(24))


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
                f" first, got {len(texts)}: {quoted(expression)}"
            )
        has_seconds = len(texts) == 6
        seconds = _parse_field(texts.pop(0), SECONDS)[0] if has_seconds else frozenset({0})
        minutes, hours, days_of_month, months, days_of_week = (
            _parse_field(text, field) for text, field in zip(texts, FIVE_FIELDS, strict=True)
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
        return self.hours == _ALLHOURS

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
                f"{quoted(self.expression)} matches no time between {naive:%Y-%m-%d} and the"
                f" end of year {MAXYEAR}"
            ) from None
        raise CronError(
            f"{quoted(self.expression)} never matches: none of its days of month exists in its"
            " months (February has at most 29 days; April, June, September and November have 30)"
        )


def _macro_problem(expression: str) -> str:
    if expression.lower().startswith("@every"):
        return '@every is not supported; write a cron expression such as "*/5 * * * *"'
    return f"unknown macro {quoted(expression)}; use one of {', '.join(MACROS)}"


def _parse_field(text: str, field: Field) -> tuple[frozenset[int], bool]:
    """The values a comma list allows, and whether it carries robfig's star bit."""
    values: set[int] = set()
    starred = False
    for item in text.split(","):
        if not item:
            raise CronError(f"{field.name} field {quoted(text)} has an empty list item")
        item_values, item_starred = _parse_item(item, field)
        values |= item_values
        starred |= item_starred
    return frozenset(values), starred


def _parse_item(item: str, field: Field) -> tuple[frozenset[int], bool]:
    match = _ITEM.fullmatch(item)
    if match is None:
        star = '*, "?"' if field.question_mark else "*"
        raise CronError(
            f"{field.name} field {quoted(item)} is not valid; write {star}, N or N-M, optionally"
            " followed by /STEP"
        )
    step = 1
    if match["step"] is not None:
        if not _NUMBER.fullmatch(match["step"]):
            raise CronError(
                f'{field.name} field {quoted(item)}: the step after "/" must be a number'
            )
        step = int(match["step"])
        if step == 0:
            raise CronError(
                f"{field.name} field {quoted(item)} has step 0; the step must be at least 1"
            )
    if match["star"] is not None:
        if match["star"] == "?" and not field.question_mark:
            raise CronError(
                f'{field.name} field {quoted(item)}: "?" is only allowed in day-of-month and'
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
            f"{field.name} field {quoted(item)} starts after it ends; ranges do not wrap around,"
            f" {fix}"
        )
    return frozenset(range(start, end + 1, step)), False


def _value(text: str, field: Field) -> int:
    if _NUMBER.fullmatch(text):
        value = int(text)
        if not field.low <= value <= field.high:
            raise CronError(
                f"{field.name} field {quoted(text)} is out of range {field.low}-{field.high}"
            )
        if len(text) > 2:
            raise CronError(f"{field.name} field {quoted(text)} has too many digits; write {value}")
        return value
    named = field.names.get(text.lower())
    if named is not None:
        return named
    expected = f"a number {field.low}-{field.high}"
    if field.names:
        names = list(field.names)
        expected += f" or a name {names[0].upper()}-{names[-1].upper()}"
    raise CronError(f"{field.name} field {quoted(text)} is not {expected}")


def _first_at_or_after(values: frozenset[int], start: int, high: int) -> int | None:
    return next((value for value in range(start, high + 1) if value in values), None)


def quoted(text: str) -> str:
    """User text in double quotes, with any invisible or control character spelled out."""
    return json.dumps(text)
