"""The runs index's SQL: its schema, its rows, its filters, orders and cursors.

Pure functions over records and filters, kept apart from `runindex` (which owns the files,
the connections and the passes over a store) so they read and test on their own.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .runrecord import RunRecord

__all__ = [
    "COLUMNS",
    "EVERY_RUN",
    "FTS_SCHEMA",
    "INSERT",
    "MAX_PAGE",
    "ORDERS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "VALUE_LIMIT",
    "BadCursor",
    "Facets",
    "Page",
    "RunFilter",
    "Sort",
    "conditions",
    "cursor_of",
    "decode_cursor",
    "encode_cursor",
    "epoch_ms",
    "has_fts5",
    "readable",
    "record_of",
    "row_of",
]

#: Bumped whenever the schema changes: an index file of another version is rebuilt.
SCHEMA_VERSION = 1
#: Parameters and results above this many bytes of JSON lose their largest values in the
#: index (named in the record's notes): a row stays small enough that a page of 50 reads fast,
#: and the run's page reads the full values from run.json.
VALUE_LIMIT = 16 * 1024
#: The most runs one page may ask for.
MAX_PAGE = 500


class BadCursor(ValueError):
    """A cursor this index did not make, or made for another sort order (HTTP 400)."""


class Sort(enum.Enum):
    """The runs view's orders; a cursor belongs to the order that made it."""

    NEWEST = "-start"
    OLDEST = "start"
    NAME = "name"
    NAME_DESC = "-name"


@dataclass(frozen=True)
class RunFilter:
    """Which runs to show. None means no restriction; an empty set means none."""

    #: The namespaces the user may read (SubjectAccessReview), applied to facets too, so no
    #: count tells of another namespace's runs.
    allowed_namespaces: frozenset[str] | None = None
    #: What the user selected in the filter UI.
    namespaces: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    schedules: frozenset[str] | None = None
    workflows: frozenset[str] | None = None
    #: Start time range: from (inclusive) and before (exclusive).
    started_from: datetime.datetime | None = None
    started_before: datetime.datetime | None = None
    #: Words to find in names, parameters and results; each word may be the start of one.
    text: str = ""


#: No restriction: every run.
EVERY_RUN = RunFilter()


@dataclass(frozen=True)
class Page:
    runs: list[RunRecord]
    #: Pass it back for the next page; None after the last.
    next_cursor: str | None
    #: How many runs match the filter in all.
    total: int


@dataclass(frozen=True)
class Facets:
    """Distinct values with their counts, most frequent first, under the filter's other
    selections (the counts a click on each value would give)."""

    statuses: list[tuple[str, int]]
    namespaces: list[tuple[str, int]]
    schedules: list[tuple[str, int]]
    workflows: list[tuple[str, int]]


def has_fts5() -> bool:
    """Whether this Python's SQLite has FTS5; without it text search falls back to LIKE scans
    (correct, but linear in the number of runs)."""
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("CREATE VIRTUAL TABLE probe USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()
    return True


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    namespace TEXT,
    schedule TEXT,
    workflow TEXT,
    step TEXT,
    status TEXT NOT NULL,
    reason TEXT,
    message TEXT,
    start_ms INTEGER NOT NULL,  -- 0: unknown (sorts last among the newest)
    end_ms INTEGER,
    duration REAL,
    parameters TEXT NOT NULL,
    secret_parameters TEXT NOT NULL,
    results TEXT NOT NULL,
    detail TEXT NOT NULL,
    output TEXT,
    etag TEXT,          -- run.json's; NULL: not read, so the next refresh reads it
    output_etag TEXT,   -- output.ipynb's, for a run in progress
    notes TEXT NOT NULL
);
-- One index per order, and one per filter that leads to an order, so that page N of a filtered
-- view is a range scan that stops after LIMIT rows.
CREATE INDEX runs_start ON runs (start_ms, folder);
CREATE INDEX runs_name ON runs (name, folder);
CREATE INDEX runs_status ON runs (status, start_ms, folder);
CREATE INDEX runs_namespace ON runs (namespace, start_ms, folder);
CREATE INDEX runs_schedule ON runs (schedule, start_ms, folder);
CREATE INDEX runs_workflow ON runs (workflow, start_ms, folder);
"""
FTS_SCHEMA = """
CREATE VIRTUAL TABLE runs_fts USING fts5 (names, parameters, results, prefix='2 3');
"""

COLUMNS = (
    "folder, name, namespace, schedule, workflow, step, status, reason, message, start_ms, "
    "end_ms, duration, parameters, secret_parameters, results, detail, output, etag, "
    "output_etag, notes"
)
INSERT = f"INSERT INTO runs ({COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS.split(',')))})"

#: Each order: its SQL, the column its cursor carries, and whether it runs backwards.
ORDERS = {
    Sort.NEWEST: ("start_ms", True),
    Sort.OLDEST: ("start_ms", False),
    Sort.NAME: ("name", False),
    Sort.NAME_DESC: ("name", True),
}


#: What a search reads without FTS5: names, parameters (secret ones by name) and results.
_LIKE_COLUMNS = (
    "name",
    "folder",
    "schedule",
    "workflow",
    "step",
    "parameters",
    "secret_parameters",
    "results",
)


def text_match(filters: RunFilter, fts: bool) -> str | None:
    """The FTS5 query of the filter's words; None without words, or without FTS5."""
    words = _words(filters)
    return _match_expression(words) if words and fts else None


def _words(filters: RunFilter) -> list[str]:
    # A word of punctuation alone names no token: it would only make FTS5's query invalid.
    return [word for word in filters.text.split() if any(c.isalnum() for c in word)]


def conditions(
    filters: RunFilter, fts: bool, *, by_order: bool = False
) -> tuple[list[str], list[Any]]:
    """SQL conditions (joined with AND) and their arguments for `filters`. `by_order`: the
    full-text match is checked on each row of the order's index instead of leading the plan
    (a unary `+` keeps SQLite from looking the matches up by rowid), for a word so common that
    a page fills long before the matches would have been read and sorted."""
    found: list[str] = ["1"]
    args: list[Any] = []
    for column, values in (
        ("namespace", filters.allowed_namespaces),
        ("namespace", filters.namespaces),
        ("status", filters.statuses),
        ("schedule", filters.schedules),
        ("workflow", filters.workflows),
    ):
        if values is not None:
            found.append(f"{column} IN ({', '.join('?' * len(values))})")
            args += sorted(values)
    if filters.started_from is not None:
        found.append("start_ms >= ?")
        args.append(epoch_ms(filters.started_from))
    if filters.started_before is not None:
        found.append("start_ms < ?")
        args.append(epoch_ms(filters.started_before))
    words = _words(filters)
    if words and fts:
        plus = "+" if by_order else ""
        found.append(f"{plus}id IN (SELECT rowid FROM runs_fts WHERE runs_fts MATCH ?)")
        args.append(_match_expression(words))
    for word in words if not fts else ():
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found.append(
            "(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in _LIKE_COLUMNS) + ")"
        )
        args += [f"%{escaped}%"] * len(_LIKE_COLUMNS)
    return found, args


# --- rows -----------------------------------------------------------------------------------


def row_of(
    record: RunRecord, output_etag: str | None
) -> tuple[tuple[Any, ...], tuple[str, str, str]]:
    """The runs row of a record, and its full-text columns."""
    notes = list(record.notes)
    parameters = _capped(record.parameters, "parameters", notes)
    results = _capped(record.results, "results", notes)
    row = (
        record.folder,
        record.name,
        record.namespace,
        record.schedule,
        record.workflow,
        record.step,
        record.status,
        record.reason,
        record.message,
        epoch_ms(record.start),
        epoch_ms(record.end) if record.end is not None else None,
        record.duration,
        parameters,
        json.dumps(list(record.secret_parameters)),
        results,
        _json_text(record.detail),
        record.output,
        record.etag,
        output_etag,
        json.dumps(notes, ensure_ascii=False),
    )
    names = " ".join(
        part
        for part in (record.name, record.folder, record.schedule, record.workflow, record.step)
        if part
    )
    secret = " ".join(record.secret_parameters)
    return row, (names, f"{parameters} {secret}", results)


def _capped(values: Mapping[str, Any], what: str, notes: list[str]) -> str:
    """`values` as JSON of at most VALUE_LIMIT bytes: the largest values go first."""
    text = _json_text(values)
    if len(text.encode()) <= VALUE_LIMIT:
        return text
    kept = dict(values)
    left_out = []
    for key in sorted(values, key=lambda k: len(_json_text(values[k])), reverse=True):
        del kept[key]
        left_out.append(key)
        text = _json_text(kept)
        if len(text.encode()) <= VALUE_LIMIT:
            break
    notes.append(f"{what} too large for the index, left out: {', '.join(sorted(left_out))}")
    return text


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def record_of(row: Sequence[Any]) -> RunRecord:
    (
        folder,
        name,
        namespace,
        schedule,
        workflow,
        step,
        status,
        reason,
        message,
        start_ms,
        end_ms,
        duration,
        parameters,
        secret_parameters,
        results,
        detail,
        output,
        etag,
        _output_etag,
        notes,
    ) = row
    return RunRecord(
        folder=folder,
        name=name,
        namespace=namespace,
        schedule=schedule,
        workflow=workflow,
        step=step,
        status=status,
        reason=reason,
        message=message,
        start=_from_ms(start_ms) if start_ms else None,
        end=_from_ms(end_ms) if end_ms is not None else None,
        duration=duration,
        parameters=json.loads(parameters),
        secret_parameters=tuple(json.loads(secret_parameters)),
        results=json.loads(results),
        detail=json.loads(detail),
        output=output,
        etag=etag,
        notes=tuple(json.loads(notes)),
    )


def epoch_ms(moment: datetime.datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return round(moment.timestamp() * 1000)


def _from_ms(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)


def readable(connection: sqlite3.Connection, fts: bool) -> bool:
    """Whether this process can read the index file: of this schema version, and searched the
    same way (a file built without FTS5 has no full-text table to search)."""
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError:
        return False
    return meta.get("schema") == str(SCHEMA_VERSION) and meta.get("fts") == str(int(fts))


# --- cursors and search ---------------------------------------------------------------------


def encode_cursor(sort: Sort, value: int | str, folder: str) -> str:
    text = json.dumps([sort.value, value, folder], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def cursor_of(record: RunRecord, sort: Sort) -> str:
    """The cursor that names `record` in `sort`: a page after it starts with the run after it."""
    column, _ = ORDERS[sort]
    return encode_cursor(
        sort, epoch_ms(record.start) if column == "start_ms" else record.name, record.folder
    )


def decode_cursor(cursor: str, sort: Sort) -> tuple[int | str, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        order, value, folder = json.loads(text)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise BadCursor("the page cursor is not one this viewer made") from None
    column, _ = ORDERS[sort]
    expected = int if column == "start_ms" else str
    if order != sort.value or not isinstance(folder, str) or type(value) is not expected:
        raise BadCursor(f"the page cursor belongs to another order than {sort.value!r}")
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise BadCursor("the page cursor is not one this viewer made")  # SQLite's integers
    return value, folder


def _match_expression(words: Sequence[str]) -> str:
    """FTS5 query text: every word must occur, each as a phrase of its tokens whose last one
    may be a prefix ('learning_rate' finds learning_rate_decay). Quoting each word keeps
    FTS5's operators (AND, NEAR, ^, :) from being read out of a user's text."""
    return " ".join('"' + word.replace('"', '""') + '"*' for word in words)
