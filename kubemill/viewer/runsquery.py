"""The runs view's query string, read into what the runs index answers, and written back.

Pure, so every bad value has a table test: one that cannot be read is a BadRequest naming the
parameter and what it accepts (HTTP 400), never a silently wider or emptier list of runs. The
same parameters serve the HTML page (a GET form submits empty fields, which mean "any") and the
JSON API.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from kubemill.runner.clock import parse_rfc3339

from .errors import BadRequest
from .runindex_sql import MAX_PAGE, BadCursor, RunFilter, Sort, decode_cursor

__all__ = ["DEFAULT_LIMIT", "SORTS", "Direction", "RunsQuery", "parse_runs_query", "reverse"]

#: Rows on one page of runs unless `limit` asks for another number.
DEFAULT_LIMIT = 50

#: The orders by the names the query string uses for them.
SORTS = {
    "newest": Sort.NEWEST,
    "oldest": Sort.OLDEST,
    "name": Sort.NAME,
    "name-desc": Sort.NAME_DESC,
}
_SORT_NAMES = {sort: name for name, sort in SORTS.items()}

#: The filters that take one value or several (repeated, or one field per checkbox).
_SETS = ("status", "namespace", "schedule", "workflow")
_KNOWN = {*_SETS, "from", "to", "q", "sort", "cursor", "before", "limit"}


class Direction(enum.Enum):
    AFTER = "after"
    BEFORE = "before"


@dataclass(frozen=True)
class RunsQuery:
    """One request of the runs view: which runs, in which order, which page of them."""

    filters: RunFilter
    sort: Sort
    #: A cursor of `sort` naming the run the page starts after (or, for BEFORE, the run the
    #: page ends before); None for the first page.
    cursor: str | None
    direction: Direction
    limit: int
    #: The filter fields as they were given, for the form and for links that keep them.
    fields: tuple[tuple[str, str], ...]

    def pairs(self, **page: str) -> list[tuple[str, str]]:
        """The query string of this view with `page` (sort, cursor, before) set: what a link to
        another page or order of the same runs carries."""
        kept = [(k, v) for k, v in self.fields]
        if self.limit != DEFAULT_LIMIT:
            kept.append(("limit", str(self.limit)))
        sort = page.pop("sort", _SORT_NAMES[self.sort])
        if sort != "newest":
            kept.append(("sort", sort))
        return kept + [(k, v) for k, v in page.items() if v]

    def selected(self, field: str) -> set[str]:
        return {v for k, v in self.fields if k == field}

    def value(self, field: str) -> str:
        return next((v for k, v in self.fields if k == field), "")


def reverse(sort: Sort) -> Sort:
    """The order that reads `sort` backwards: how the page before a cursor is found."""
    return {
        Sort.NEWEST: Sort.OLDEST,
        Sort.OLDEST: Sort.NEWEST,
        Sort.NAME: Sort.NAME_DESC,
        Sort.NAME_DESC: Sort.NAME,
    }[sort]


def parse_runs_query(pairs: Iterable[tuple[str, str]]) -> RunsQuery:
    """The request's query parameters (in order, repeated ones repeated) as a RunsQuery.

    status, namespace, schedule, workflow: one value each, or several (any of them);
    from, to: a day (YYYY-MM-DD, UTC; `to` includes its day) or a time with a zone;
    q: words that must all occur in the name, parameters or results;
    sort: newest (default), oldest, name, name-desc;
    cursor / before: the next / previous page, as the view's links carry them;
    limit: runs per page, 1 to MAX_PAGE.
    """
    single: dict[str, str] = {}
    sets: dict[str, set[str]] = {}
    fields: list[tuple[str, str]] = []
    for key, raw in pairs:
        value = raw.strip()
        if key not in _KNOWN:
            raise BadRequest(f"unknown parameter {key!r}; the runs view takes {_names(_KNOWN)}")
        if not value:
            continue  # an empty form field: any
        if key in _SETS:
            sets.setdefault(key, set()).add(value)
            fields.append((key, value))
            continue
        if key in single and single[key] != value:
            raise BadRequest(f"{key} is given twice ({single[key]!r} and {value!r})")
        single[key] = value
        if key in ("from", "to", "q"):
            fields.append((key, value))

    sort_name = single.get("sort", "newest")
    if sort_name not in SORTS:
        raise BadRequest(f"sort must be one of {_names(SORTS)}, not {sort_name!r}")
    sort = SORTS[sort_name]

    started_from = _moment(single.get("from"), "from", end_of_day=False)
    started_before = _moment(single.get("to"), "to", end_of_day=True)
    if started_from and started_before and started_from >= started_before:
        raise BadRequest(f"from ({single['from']}) must be before to ({single['to']})")

    limit = DEFAULT_LIMIT
    if "limit" in single:
        text = single["limit"]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}, not {text!r}")
        limit = int(text)

    if "cursor" in single and "before" in single:
        raise BadRequest("cursor and before ask for two different pages; give one of them")
    cursor, direction = single.get("cursor"), Direction.AFTER
    if "before" in single:
        cursor, direction = single["before"], Direction.BEFORE
    if cursor is not None:
        try:
            decode_cursor(cursor, sort)
        except BadCursor as exc:
            name = "before" if direction is Direction.BEFORE else "cursor"
            raise BadRequest(f"{name}: {exc}; start again from the first page") from None

    def chosen(field: str) -> frozenset[str] | None:
        return frozenset(sets[field]) if field in sets else None

    filters = RunFilter(
        statuses=chosen("status"),
        namespaces=chosen("namespace"),
        schedules=chosen("schedule"),
        workflows=chosen("workflow"),
        started_from=started_from,
        started_before=started_before,
        text=single.get("q", ""),
    )
    return RunsQuery(filters, sort, cursor, direction, limit, tuple(fields))


def _moment(text: str | None, name: str, *, end_of_day: bool) -> datetime.datetime | None:
    """A day or a zoned time; a day used as `to` means the end of that day (the start of the
    next), so from=to=2026-03-01 is that one day."""
    if text is None:
        return None
    if len(text) == 10:
        try:
            day = datetime.date.fromisoformat(text)
            start = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
            return start + datetime.timedelta(days=1) if end_of_day else start
        except (ValueError, OverflowError):
            pass  # not a day, or the last one there is: read as a time below
    moment = parse_rfc3339(text)
    if moment is None:
        raise BadRequest(
            f"{name} {text!r} is not a day (YYYY-MM-DD) or a time with a zone "
            "(2026-03-01T06:00:00Z)"
        )
    return moment


def _names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))
