"""The runs index: every run folder of a store in one SQLite file, for the runs view.

The viewer answers "runs of namespace X that failed last week, matching 'eu'" from here, never
from S3: a listing page or a search is a few indexed SQLite reads (well under 200 ms at 100,000
runs, see benchmarks/bench_viewer_index.py), where S3 can only list keys in name order.

Building and keeping it current (`RunIndex.rebuild`, `RunIndex.refresh`):
- The store is walked once per pass (ListObjectsV2 without a delimiter: one request per 1,000
  keys, about three keys per run), and a folder holding `run.json` is a run (see
  `kubemill.viewer.runrecord` for why run.json is the commit marker). Only run.json is read
  (it carries the results), concurrently, since S3 GETs are latency-bound.
- A rebuild writes a new file beside the current one and then points `runs.db` (a symbolic
  link) at it, so a reader sees the old index or the new one, never half of one. Each
  generation has its own file name, hence its own `-wal` and `-shm`: renaming a new database
  over a WAL database that readers hold open would let them share a `-shm` with the wrong file.
- A refresh re-walks the store and reads only the run folders whose run.json is new or has
  another ETag; it deletes the folders that are gone, and records an `output.ipynb` without
  run.json as a run in progress without reading it (its checkpoints rewrite it). It commits one
  transaction in WAL mode, so readers keep reading the state before it until it commits.

How it scales: a pass costs one LIST request per 1,000 keys plus one GET per new or changed
run; the file grows by about 1.6 KB per run (parameters and results are capped at `VALUE_LIMIT`
each, the full values stay in S3). A page is an index range scan whatever the store's size. A
search first counts its matches in FTS5 (under a millisecond); a common word's page then walks
the order's index until the page is full, a rare one's reads its few matches; its facets cost
one pass over the matches (about 40 ms for 12,000 of 100,000), and so does its total when other
filters narrow it. Passes grow with the store: boto3 spent about 0.9 ms of CPU per GET and 55 ms
per LIST page, so a rebuild of 100,000 runs against a SeaweedFS sharing the same two cores took
230 s; through `s3lean` (0.3 ms per GET) it takes 85-120 s (151 s under heavy load), and 29 s
over a local folder (`benchmarks/bench_viewer.py`, `benchmarks/bench_viewer_index.py`). A
refresh of 100,000 unchanged runs is the walk alone (300 LIST requests: 7 s over a folder; the
same requests alone took 13-25 s against that SeaweedFS).

A second viewer replica keeps its own index file in its own volume: it rebuilds on start when
the file is missing or of another schema version, then refreshes on its timer. An emptyDir is
enough; a persistent volume turns a restart's rebuild into a refresh. Replicas agree after
their next refresh, so a new run shows within one refresh interval plus one walk, and two
replicas may differ by that much meanwhile. A cursor names the run it stops at, not a position,
so a page's "next" link works on either replica.

One process owns an index folder; within it any number of threads read while one writes.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

from .paths import linkable
from .runindex_sql import (
    COLUMNS,
    EVERY_RUN,
    FTS_SCHEMA,
    INSERT,
    MAX_PAGE,
    ORDERS,
    SCHEMA,
    SCHEMA_VERSION,
    BadCursor,
    Facets,
    Page,
    RunFilter,
    Sort,
    conditions,
    cursor_of,
    decode_cursor,
    has_fts5,
    readable,
    record_of,
    row_of,
    text_match,
)
from .runrecord import (
    OUTPUT_NAME,
    RESULTS_NAME,
    RUN_NAME,
    STATUS_UNKNOWN,
    RunRecord,
    in_progress,
    parse_run,
)

__all__ = [
    "BadCursor",
    "Facets",
    "IndexNotBuilt",
    "ListedObject",
    "Objects",
    "Page",
    "PassStats",
    "RunFilter",
    "RunIndex",
    "Sort",
    "has_fts5",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Rows per INSERT batch during a pass.
BATCH = 1000
#: The link readers follow to the current generation.
CURRENT = "runs.db"
#: Runs a search must match before a page of it walks the order's index rather than reading
#: and sorting every match: at 100,000 runs a word in 1 of 8 runs took 31 ms the one way and
#: 2 ms the other, a word in 1 of 1,000 0.2 ms and 9 ms (the walk's cost is about the
#: runs / matches x a page; reading the matches', about the matches).
WALK_ABOVE = 1000
#: Reads in flight: S3 GETs are latency-bound (tens of ms each), so 100,000 of them one at a
#: time would take minutes; 32 keep a 2-core viewer busy without a thundering herd.
WORKERS = 32


class ListedObject(Protocol):
    """One object of a walk. The viewer's `storage.ObjectInfo` already has this shape."""

    @property
    def path(self) -> str:
        """The key relative to the store's root, `/`-separated."""

    @property
    def etag(self) -> str:
        """The version's identity: a changed object has another one."""

    @property
    def size(self) -> int: ...

    @property
    def modified(self) -> datetime.datetime: ...


class Objects(Protocol):
    """What the index reads a store through; the viewer's storage implements it."""

    def walk(self, prefix: str) -> Iterator[ListedObject]:
        """Every object under `prefix` ("" for all), recursively, following every page."""

    def read(self, path: str) -> bytes:
        """The object's bytes; KeyError when it does not exist (any more)."""


class IndexNotBuilt(Exception):
    """There is no index file yet, or one of another schema version or built without FTS5 by
    another Python: rebuild first."""


@dataclass
class PassStats:
    """What one rebuild or refresh did, for the log and the tests."""

    keys: int = 0
    runs: int = 0
    read: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unreadable: int = 0
    seconds: float = 0.0


class RunIndex:
    """The index in `folder` (the viewer's volume): generations `runs-<n>.db`, and `runs.db`,
    a link to the current one."""

    def __init__(self, folder: str | Path, *, workers: int = WORKERS) -> None:
        self.folder = Path(folder)
        self.workers = workers
        self.fts = has_fts5()
        self._write = threading.Lock()
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()

    # --- reading ------------------------------------------------------------------------

    def built(self) -> bool:
        """Whether a current index of this schema version exists."""
        try:
            self._reader()
        except IndexNotBuilt:
            return False
        return True

    def query(
        self,
        filters: RunFilter = EVERY_RUN,
        sort: Sort = Sort.NEWEST,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """One page of runs, `limit` at most, after the run `cursor` names."""
        limit = max(1, min(limit, MAX_PAGE))
        column, descending = ORDERS[sort]
        connection = self._reader()
        match = text_match(filters, self.fts)
        # FTS5 counts its matches without reading a run: about 0.5 ms for 12,000 of 100,000.
        matches = (
            connection.execute(
                "SELECT count(*) FROM runs_fts WHERE runs_fts MATCH ?", [match]
            ).fetchone()[0]
            if match is not None
            else None
        )
        where, args = conditions(filters, self.fts)
        total_sql = f"SELECT count(*) FROM runs WHERE {' AND '.join(where)}"
        if matches is not None and matches > WALK_ABOVE:
            where, _ = conditions(filters, self.fts, by_order=True)
        if cursor is not None:
            value, folder = decode_cursor(cursor, sort)
            op = "<" if descending else ">"
            where.append(f"({column} {op} ? OR ({column} = ? AND folder {op} ?))")
            args_page = [*args, value, value, folder]
        else:
            args_page = list(args)
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT {COLUMNS} FROM runs WHERE {' AND '.join(where)} "
            f"ORDER BY {column} {direction}, folder {direction} LIMIT ?"
        )
        rows = connection.execute(sql, [*args_page, limit + 1]).fetchall()
        if matches is not None and filters == replace(EVERY_RUN, text=filters.text):
            total = matches  # a search alone: its matches are the total
        else:
            total = connection.execute(total_sql, args).fetchone()[0]
        runs = [record_of(row) for row in rows[:limit]]
        next_cursor = cursor_of(runs[-1], sort) if len(rows) > limit else None
        return Page(runs, next_cursor, total)

    def facets(self, filters: RunFilter = EVERY_RUN, top: int = 100) -> Facets:
        """Counts for the filter UI; each dimension ignores its own selection.

        Under a search, the dimensions whose filters are the same (all four when none is
        selected) are counted in one pass over the matches: each pass reads every matching
        run (about 40 ms for 12,000 of 100,000). Without one, each dimension is its own
        GROUP BY over its own index, which reads no run at all."""
        counts: dict[str, list[tuple[str, int]]] = {}
        connection = self._reader()
        unselected: dict[str, RunFilter] = {
            "status": replace(filters, statuses=None),
            "namespace": replace(filters, namespaces=None),
            "schedule": replace(filters, schedules=None),
            "workflow": replace(filters, workflows=None),
        }
        passes = [(others, [column]) for column, others in unselected.items()]
        if text_match(filters, self.fts) is not None:
            grouped: dict[RunFilter, list[str]] = {}
            for column, others in unselected.items():
                grouped.setdefault(others, []).append(column)
            passes = list(grouped.items())
        for others, columns in passes:
            where, args = conditions(others, self.fts)
            if len(columns) == 1:
                (column,) = columns
                rows = connection.execute(
                    f"SELECT {column}, count(*) AS n FROM runs "
                    f"WHERE {column} IS NOT NULL AND {' AND '.join(where)} "
                    f"GROUP BY {column} ORDER BY n DESC, {column} LIMIT ?",
                    [*args, top],
                ).fetchall()
                counts[column] = [(str(value), int(n)) for value, n in rows]
                continue
            tallies: dict[str, dict[str, int]] = {column: {} for column in columns}
            listed = ", ".join(columns)
            for *values, n in connection.execute(
                f"SELECT {listed}, count(*) FROM runs WHERE {' AND '.join(where)} "
                f"GROUP BY {listed}",
                args,
            ):
                for column, value in zip(columns, values, strict=True):
                    if value is not None:
                        tally = tallies[column]
                        tally[str(value)] = tally.get(str(value), 0) + int(n)
            for column, tally in tallies.items():
                counts[column] = sorted(tally.items(), key=lambda item: (-item[1], item[0]))[:top]
        return Facets(counts["status"], counts["namespace"], counts["schedule"], counts["workflow"])

    def get(self, folder: str) -> RunRecord | None:
        """The run in `folder`, as indexed."""
        row = (
            self._reader()
            .execute(f"SELECT {COLUMNS} FROM runs WHERE folder = ?", [folder])
            .fetchone()
        )
        return record_of(row) if row is not None else None

    def namespaces(self) -> list[str]:
        """Every namespace some indexed run names: what the viewer asks a person's access to."""
        rows = (
            self._reader()
            .execute("SELECT DISTINCT namespace FROM runs WHERE namespace IS NOT NULL")
            .fetchall()
        )
        return sorted(str(namespace) for (namespace,) in rows)

    def enclosing(self, path: str) -> tuple[str, str | None] | None:
        """The deepest run folder that is `path` or holds it, with its run's namespace (None
        when run.json names none); None when `path` is in no indexed run folder."""
        segments = path.split("/") if path else []
        candidates = ["/".join(segments[:n]) for n in range(len(segments) + 1)]
        row = (
            self._reader()
            .execute(
                f"SELECT folder, namespace FROM runs WHERE folder IN "
                f"({', '.join('?' * len(candidates))}) ORDER BY length(folder) DESC LIMIT 1",
                candidates,
            )
            .fetchone()
        )
        return (str(row[0]), row[1]) if row is not None else None

    def namespaces_under(self, path: str) -> set[str | None]:
        """The namespaces of the run folders strictly under the folder `path` (None for a
        run without one): whether a reader may open the folder, without listing its runs."""
        where, args = _under(path)
        rows = self._reader().execute(f"SELECT DISTINCT namespace FROM runs WHERE {where}", args)
        return {namespace for (namespace,) in rows.fetchall()}

    def children(self, path: str) -> list[tuple[str, str | None, bool]]:
        """The run folders under the folder `path`, by its entry that leads to them: (entry
        name, the run's namespace, whether the entry is the run folder itself), distinct. One
        range scan of the folder column, so a folder of 100,000 runs costs one query."""
        prefix = path + "/" if path else ""
        where, args = _under(path)
        rows = (
            self._reader()
            .execute(
                "SELECT DISTINCT "
                "CASE WHEN instr(rest, '/') = 0 THEN rest "
                "ELSE substr(rest, 1, instr(rest, '/') - 1) END, namespace, instr(rest, '/') = 0 "
                f"FROM (SELECT substr(folder, ?) AS rest, namespace FROM runs WHERE {where})",
                [len(prefix) + 1, *args],
            )
            .fetchall()
        )
        return [(str(child), namespace, bool(own)) for child, namespace, own in rows]

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection to the current generation, reopened after a rebuild."""
        for _ in range(3):
            current = self._current()
            held: tuple[str, sqlite3.Connection] | None = getattr(self._local, "held", None)
            if held is not None and held[0] == current:
                return held[1]
            if held is not None:
                self._close(held[1])
                self._local.held = None
            try:
                connection = self._connect(self.folder / current, create=False)
            except sqlite3.OperationalError:
                continue  # a rebuild removed that generation after we read the link: again
            if self._current() != current or not readable(connection, self.fts):
                self._close(connection)
                if self._current() == current:
                    raise IndexNotBuilt(
                        f"{self.folder / CURRENT} is of another schema version or search"
                    )
                continue
            connection.execute("PRAGMA query_only = 1")
            self._local.held = (current, connection)
            return connection
        raise IndexNotBuilt(f"{self.folder / CURRENT} keeps changing; try again")

    def _current(self) -> str:
        try:
            return os.readlink(self.folder / CURRENT)
        except FileNotFoundError:
            raise IndexNotBuilt(f"no runs index in {self.folder} yet") from None

    def _connect(self, path: Path, *, create: bool) -> sqlite3.Connection:
        # mode=rw: a generation that a rebuild just removed must fail to open, not be created
        # anew and empty.
        mode = "rwc" if create else "rw"
        connection = sqlite3.connect(
            f"file:{path}?mode={mode}", uri=True, check_same_thread=False, timeout=30
        )
        with self._opened_lock:
            self._opened.append(connection)
        return connection

    def _close(self, connection: sqlite3.Connection) -> None:
        with self._opened_lock:
            if connection in self._opened:
                self._opened.remove(connection)
        connection.close()

    def close(self) -> None:
        """Close every connection (call once no thread reads any more)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()

    # --- writing ------------------------------------------------------------------------

    def rebuild(self, objects: Objects) -> PassStats:
        """Index every run of `objects` into a new generation, then make it the current one."""
        with self._write:
            began = time.monotonic()
            stats = PassStats()
            self.folder.mkdir(parents=True, exist_ok=True)
            name = f"runs-{time.time_ns():x}.db"
            path = self.folder / name
            connection = self._connect(path, create=True)
            try:
                # Nobody reads this file until it is complete: no syncs, a journal in memory
                # (not none: FTS5 rolls back statements of its own, and without a journal that
                # left a malformed index at a few thousand runs).
                connection.execute("PRAGMA journal_mode = MEMORY")
                connection.execute("PRAGMA synchronous = OFF")
                connection.executescript(SCHEMA + (FTS_SCHEMA if self.fts else ""))
                connection.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("schema", str(SCHEMA_VERSION)), ("fts", str(int(self.fts)))],
                )
                with connection:
                    self._pass(connection, objects, stats, known=None)
                if self.fts:
                    connection.execute("INSERT INTO runs_fts(runs_fts) VALUES ('optimize')")
                connection.execute("ANALYZE")
                connection.execute("PRAGMA journal_mode = WAL")
            except BaseException:
                self._close(connection)
                for partial in self.folder.glob(f"{name}*"):  # the current one stays
                    partial.unlink()
                raise
            self._close(connection)
            _fsync(path)
            link = self.folder / f".{name}.link"
            os.symlink(name, link)
            os.replace(link, self.folder / CURRENT)
            self._remove_old(keep=name)
            stats.seconds = time.monotonic() - began
            return stats

    def refresh(self, objects: Objects) -> PassStats:
        """Bring the current generation up to date, reading only new and changed runs; a
        rebuild when there is none."""
        if not self.built():
            return self.rebuild(objects)
        with self._write:
            began = time.monotonic()
            stats = PassStats()
            connection = self._connect(self.folder / self._current(), create=False)
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                known = {
                    folder: (etag, output_etag)
                    for folder, etag, output_etag in connection.execute(
                        "SELECT folder, etag, output_etag FROM runs"
                    )
                }
                with connection:
                    self._pass(connection, objects, stats, known)
            finally:
                self._close(connection)
            stats.seconds = time.monotonic() - began
            return stats

    def _pass(
        self,
        connection: sqlite3.Connection,
        objects: Objects,
        stats: PassStats,
        known: Mapping[str, tuple[str | None, str | None]] | None,
    ) -> None:
        """One walk of the store, reading each new or changed run.json as soon as the walk
        lists it (the reads overlap the rest of the walk), then the runs in progress, the
        runs that are gone, and the outputs that are. `known`: the current rows' run.json and
        output etags (None for a new generation)."""
        folders: dict[str, _Folder] = {}

        def wanted() -> Iterator[_Folder]:
            for item in objects.walk(""):
                stats.keys += 1
                folder, _, name = item.path.rpartition("/")
                if folder and not linkable(folder):
                    continue  # "." or ".." in its key: no page of it could be linked safely
                if name == RUN_NAME:
                    entry = folders.setdefault(folder, _Folder(folder))
                    entry.run = item
                    if known is None or folder not in known or known[folder][0] != item.etag:
                        yield entry
                elif name == OUTPUT_NAME:
                    folders.setdefault(folder, _Folder(folder)).output = item

        def store(batch: Sequence[tuple[RunRecord, str | None]]) -> None:
            if known is not None:
                self._delete(connection, [record.folder for record, _ in batch])
            self._insert(connection, batch)
            for record, _ in batch:
                if known is not None and record.folder in known:
                    stats.updated += 1
                else:
                    stats.added += 1

        for batch in _batches(self._read_all(objects, wanted(), stats, set(known or ())), BATCH):
            store(batch)
        running = [
            (record, etag)
            for record, etag in _running(folders)
            if known is None or known.get(record.folder) != (None, etag)
        ]
        for batch in _batches(iter(running), BATCH):
            store(batch)
        gone = [folder for folder in known or () if folder not in folders]
        self._delete(connection, gone)
        stats.removed = len(gone)
        stats.runs = len(folders)
        # A record names its folder's output.ipynb; the few folders without one say so.
        connection.executemany(
            "UPDATE runs SET output = NULL WHERE folder = ? AND output IS NOT NULL",
            [(f.folder,) for f in folders.values() if f.output is None],
        )

    def _read_all(
        self,
        objects: Objects,
        folders: Iterable[_Folder],
        stats: PassStats,
        keep: set[str],
    ) -> Iterator[tuple[RunRecord, str | None]]:
        """Each folder's record, read `workers` at a time; a folder that vanished since the
        walk is skipped, and one that cannot be read now is indexed as unreadable (no etag,
        so the next refresh retries it), or kept as it was when `keep` holds it."""

        def read(item: _Folder) -> tuple[RunRecord | None, int]:
            assert item.run is not None
            reads = 0
            try:
                body = objects.read(item.run.path)
                reads += 1
                results = None
                # run.json carries the results since they exist; an older runner's does not.
                if b'"results"' not in body:
                    with contextlib.suppress(KeyError):
                        reads += 1
                        results = objects.read(_join(item.folder, RESULTS_NAME))
            except KeyError:
                return None, reads
            except Exception as exc:
                if item.folder in keep:
                    return None, -1 - reads
                return _unreadable(item, f"{RUN_NAME} could not be read: {exc}"), -1 - reads
            try:
                record = parse_run(item.folder, body, results)
            except Exception as exc:  # parse_run is lenient; a bug there must not stop a pass
                _log.exception("cannot parse %s", item.run.path)
                record = _unreadable(item, f"{RUN_NAME} could not be parsed: {type(exc).__name__}")
            return replace(record, etag=item.run.etag), reads

        for record, reads in _bounded_map(read, folders, self.workers):
            if reads < 0:  # counted here, on one thread
                stats.unreadable += 1
                reads = -1 - reads
            stats.read += reads
            if record is not None:
                yield record, None

    def _insert(
        self, connection: sqlite3.Connection, items: Sequence[tuple[RunRecord, str | None]]
    ) -> None:
        """Rows for records, each with its output's etag when it is a run in progress."""
        rows = [row_of(record, output_etag) for record, output_etag in items]
        connection.executemany(INSERT, [row for row, _ in rows])
        if self.fts:
            connection.executemany(
                "INSERT INTO runs_fts (rowid, names, parameters, results) "
                "SELECT id, ?, ?, ? FROM runs WHERE folder = ?",
                [(*text, row[0]) for row, text in rows],
            )

    def _delete(self, connection: sqlite3.Connection, folders: Sequence[str]) -> None:
        for start in range(0, len(folders), 500):
            part = list(folders[start : start + 500])
            marks = ", ".join("?" * len(part))
            if self.fts:
                connection.execute(
                    f"DELETE FROM runs_fts WHERE rowid IN "
                    f"(SELECT id FROM runs WHERE folder IN ({marks}))",
                    part,
                )
            connection.execute(f"DELETE FROM runs WHERE folder IN ({marks})", part)

    def _remove_old(self, keep: str) -> None:
        """Every generation but `keep`: a reader still in one holds its open files (POSIX),
        and its next query follows the link to the new one."""
        for path in self.folder.glob("runs-*.db*"):
            if not path.name.startswith(keep):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


# --- walking --------------------------------------------------------------------------------


@dataclass
class _Folder:
    folder: str
    run: ListedObject | None = None
    output: ListedObject | None = None


def _running(folders: Mapping[str, _Folder]) -> Iterator[tuple[RunRecord, str | None]]:
    """The runs in progress (an output notebook, no run.json yet), with the output's etag."""
    for item in folders.values():
        if item.run is None and item.output is not None:
            yield in_progress(item.folder, item.output.modified), item.output.etag


def _under(path: str) -> tuple[str, list[str]]:
    """The SQL condition (and its arguments) for the run folders strictly under `path`."""
    if not path:
        return "folder != ''", []
    # "0" follows "/" in byte order: the range holds exactly the keys under path + "/".
    return "folder >= ? AND folder < ?", [path + "/", path + "0"]


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _fsync(path: Path) -> None:
    """The finished file on disk before the link names it, so a crash cannot leave the link
    pointing at a file that is only partly written."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """`fn` over `items` on `workers` threads, in order, with at most 4 x workers in flight;
    `items` is consumed on the caller's thread, as the window has room."""
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runindex") as pool:
        pending: deque[Future[R]] = deque()
        source = iter(items)
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _unreadable(item: _Folder, note: str) -> RunRecord:
    """What the index shows of a run folder whose run.json it could not use."""
    assert item.run is not None
    return RunRecord(
        folder=item.folder,
        name=item.folder.rsplit("/", 1)[-1] or "(root)",
        status=STATUS_UNKNOWN,
        start=item.run.modified,
        output=_join(item.folder, OUTPUT_NAME),
        notes=(note,),
    )
