"""The CRD's regular expressions for a schedule, generated from cron_syntax's field table.

hack/gen_schedule_crd.py writes them into the NotebookSchedule CRD, so the API server refuses a
schedule Cron.parse would refuse, at apply time, with no webhook.
"""

from __future__ import annotations

from .cron_syntax import DAYS_OF_WEEK, FIVE_FIELDS, MACROS, MONTHS, SECONDS, Field

__all__ = ["INVERTED_RANGE", "PATTERN"]


def _field_pattern(field: Field) -> str:
    star = "[*?]" if field.question_mark else "[*]"
    value = f"(?:{field.value_pattern})"
    item = f"(?:{star}|{value}(?:-{value})?)(?:/0*[1-9][0-9]*)?"
    return f"{item}(?:,{item})*"


def _pattern() -> str:
    blank = r"[ \t]"
    macros = "|".join(name[1:] for name in MACROS)
    fields = f"{blank}+".join(_field_pattern(field) for field in FIVE_FIELDS)
    seconds = f"(?:{_field_pattern(SECONDS)}{blank}+)?"
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
    for field in (MONTHS, DAYS_OF_WEEK):
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
