"""kubemill.viewer.runindex and runrecord: parsing run.json leniently, and the index's filters,
orders, pages, search, facets, rebuilds and refreshes over a few thousand synthetic runs.

The store here is `MemoryObjects`, a real `Objects` over a dict (ETags are MD5s of the bytes, as
S3's are for simple uploads), so these tests need no S3 server; the integration tests run the
same index over SeaweedFS and over folders the real runner wrote.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kubemill.viewer import runindex
from kubemill.viewer.runindex import (
    BadCursor,
    IndexNotBuilt,
    Objects,
    RunFilter,
    RunIndex,
    Sort,
)
from kubemill.viewer.runindex_sources import Listed, SourceError
from kubemill.viewer.runindex_sql import VALUE_LIMIT
from kubemill.viewer.runrecord import STATUS_RUNNING, STATUS_UNKNOWN, parse_run
from kubemill_testenv.runfolders import EPOCH, folder_of, run_files, synthetic_run

RUNS = 3000


class MemoryObjects:
    """An `Objects` over a dict; counts every read by path."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, datetime.datetime]] = {}
        self.reads: Counter[str] = Counter()
        self.fail: set[str] = set()
        self._lock = threading.Lock()

    def put(self, path: str, data: bytes, modified: datetime.datetime | None = None) -> None:
        self.files[path] = (data, modified or datetime.datetime.now(datetime.UTC))

    def put_run(self, i: int, document: dict[str, Any] | None = None) -> None:
        for path, data in run_files(i, document).items():
            self.put(path, data)

    def walk(self, prefix: str = "") -> Iterator[Listed]:
        for path, (data, modified) in sorted(self.files.items()):
            if path.startswith(prefix):
                yield Listed(path, hashlib.md5(data).hexdigest(), len(data), modified)

    def read(self, path: str) -> bytes:
        with self._lock:
            self.reads[path] += 1
        if path in self.fail:
            raise SourceError(f"cannot read {path}: connection reset")
        try:
            return self.files[path][0]
        except KeyError:
            raise KeyError(path) from None


def _objects(numbers: range) -> MemoryObjects:
    store = MemoryObjects()
    for i in numbers:
        store.put_run(i)
    return store


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return {folder_of(i): synthetic_run(i) for i in range(RUNS)}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunIndex]:
    """The index of RUNS synthetic runs, built once; tests here only read it."""
    built = RunIndex(tmp_path_factory.mktemp("index"))
    stats = built.rebuild(_objects(range(RUNS)))
    assert (stats.runs, stats.read, stats.added) == (RUNS, RUNS, RUNS)
    yield built
    built.close()


def _all(index: RunIndex, filters: RunFilter, sort: Sort = Sort.NEWEST, limit: int = 97) -> list:
    """Every page, following cursors."""
    runs, cursor = [], None
    while True:
        page = index.query(filters, sort, cursor, limit)
        runs += page.runs
        cursor = page.next_cursor
        if cursor is None:
            return runs


# --- parse_run ------------------------------------------------------------------------------


def test_parse_run_reads_the_runners_fields() -> None:
    document = synthetic_run(10)  # schedule-less workflow step "extract", i % 4 != 0
    document["secretParameters"] = {"token": {"fromEnv": "KUBEMILL_SECRET_0"}}
    document["status"], document["failure"] = "Failed", {"reason": "CellError", "message": "m"}
    record = parse_run("ml/x", json.dumps(document).encode())
    assert (record.folder, record.name, record.namespace) == ("ml/x", "run-000010", "analytics")
    assert record.status == "Failed" and (record.reason, record.message) == ("CellError", "m")
    assert record.start == EPOCH + datetime.timedelta(
        minutes=50, microseconds=record.start.microsecond
    )
    assert record.duration == document["durationSeconds"]
    assert record.parameters == document["parameters"]
    assert record.secret_parameters == ("token",)
    assert "KUBEMILL_SECRET_0" not in repr(record)
    assert record.results == document["results"]
    assert record.detail["inputUri"] == document["input"]["uri"]
    assert record.detail["job"] == document["identity"]["job"]
    assert record.output == "ml/x/output.ipynb" and record.notes == ()


@pytest.mark.parametrize(
    ("body", "status", "note"),
    [
        (b"{not json", STATUS_UNKNOWN, "run.json is not JSON"),
        (b"", STATUS_UNKNOWN, "run.json is not JSON"),
        (b"[1, 2]", STATUS_UNKNOWN, "run.json is list, not an object"),
        (b'{"startTime": "2026-01-01T00:00:00Z"}', STATUS_UNKNOWN, "run.json has no status"),
        (b'{"status": "Succeeded", "identity": "x"}', "Succeeded", "identity is str"),
        (b'{"status": "Succeeded", "startTime": 5}', "Succeeded", "startTime '5' is not a time"),
        (b'{"status": "Failed", "failure": {"reason": 10}}', "Failed", "failure.reason is int"),
        (b'{"status": "Succeeded", "durationSeconds": "1h"}', "Succeeded", "durationSeconds is"),
        (b'{"status": "Succeeded", "durationSeconds": 1e999}', "Succeeded", "a finite number"),
        (
            b'{"status": "Succeeded", "durationSeconds": 1' + b"0" * 400 + b"}",
            "Succeeded",
            "a finite number",
        ),
        (b'{"status": "Succeeded", "parameters": [1]}', "Succeeded", "parameters is list"),
        (b'{"status": "Succeeded", "upstream": {"a": 1}}', "Succeeded", "upstream is not a list"),
        (b'{"status": 3}', STATUS_UNKNOWN, "status is int"),
        (b"[" * 100_000, STATUS_UNKNOWN, "run.json is not JSON"),
    ],
)
def test_parse_run_is_lenient(body: bytes, status: str, note: str) -> None:
    record = parse_run("ns/broken-run", body)
    assert record.status == status
    assert record.name == "broken-run" and record.folder == "ns/broken-run"
    assert any(note in text for text in record.notes), record.notes


def test_parse_run_keeps_what_it_can_read_of_a_partial_file() -> None:
    body = json.dumps(
        {
            "status": "Succeeded",
            "startTime": "2026-03-01T10:00:00.000Z",
            "endTime": "2026-03-01T10:00:30.500Z",
            "identity": {"run": "r", "namespace": 7, "schedule": "nightly"},
            "parameters": {"a": 1},
        }
    ).encode()
    record = parse_run("", body)
    assert (record.name, record.namespace, record.schedule) == ("r", None, "nightly")
    assert record.duration == 30.5  # from start and end when durationSeconds is missing
    assert record.parameters == {"a": 1} and record.output == "output.ipynb"
    assert record.notes == ("identity.namespace is int, not text; ignored",)
    assert parse_run("", b"{}").name == "(root)"


def test_results_json_is_read_when_given_and_falls_back_to_run_json() -> None:
    body = json.dumps({"status": "Succeeded", "results": {"a": 1}}).encode()
    assert parse_run("f", body, b'{"a": 1, "b": 2}').results == {"a": 1, "b": 2}
    broken = parse_run("f", body, b"{")
    assert broken.results == {"a": 1} and "results.json is not JSON" in broken.notes[0]
    assert parse_run("f", body, b"[]").results == {"a": 1}


# --- queries --------------------------------------------------------------------------------


def test_the_first_page_is_the_newest_runs(index: RunIndex) -> None:
    page = index.query()
    assert page.total == RUNS and len(page.runs) == 50 and page.next_cursor
    assert [r.name for r in page.runs] == [f"run-{i:06d}" for i in range(RUNS - 1, RUNS - 51, -1)]
    assert index.query(limit=10_000).runs.__len__() == 500  # the most one page holds


@pytest.mark.parametrize("sort", list(Sort))
def test_pages_follow_each_order_to_the_end_without_repeats(index: RunIndex, sort: Sort) -> None:
    runs = _all(index, RunFilter(), sort)
    assert len(runs) == RUNS and len({r.folder for r in runs}) == RUNS
    key = (
        (lambda r: (r.start, r.folder)) if "start" in sort.value else (lambda r: (r.name, r.folder))
    )
    assert runs == sorted(runs, key=key, reverse=sort.value.startswith("-"))


def test_filters_match_the_runs_written(
    index: RunIndex, documents: dict[str, dict[str, Any]]
) -> None:
    def expected(check: Any) -> set[str]:
        return {folder for folder, doc in documents.items() if check(doc)}

    def found(filters: RunFilter) -> set[str]:
        runs = _all(index, filters)
        assert index.query(filters).total == len(runs)
        return {r.folder for r in runs}

    failed = expected(lambda d: d["status"] == "Failed")
    assert 0 < len(failed) < RUNS
    assert found(RunFilter(statuses=frozenset({"Failed"}))) == failed
    ml = expected(lambda d: d["identity"]["namespace"] == "ml")
    assert found(RunFilter(namespaces=frozenset({"ml"}))) == ml
    assert found(RunFilter(allowed_namespaces=frozenset({"ml", "ops"}))) == ml | expected(
        lambda d: d["identity"]["namespace"] == "ops"
    )
    assert found(RunFilter(allowed_namespaces=frozenset())) == set()
    assert found(RunFilter(schedules=frozenset({"ml-daily-3"}))) == expected(
        lambda d: d["identity"].get("schedule") == "ml-daily-3"
    )
    workflow = expected(lambda d: d["identity"].get("workflow") == "ops-pipeline-1")
    assert workflow and found(RunFilter(workflows=frozenset({"ops-pipeline-1"}))) == workflow
    since, until = EPOCH + datetime.timedelta(days=2), EPOCH + datetime.timedelta(days=3)
    in_range = found(RunFilter(started_from=since, started_before=until))
    assert len(in_range) == 24 * 12  # one run every 5 minutes
    combined = RunFilter(
        namespaces=frozenset({"ml"}),
        statuses=frozenset({"Failed"}),
        started_from=since,
        started_before=since + datetime.timedelta(days=60),
    )
    assert found(combined) == {
        f
        for f in ml & failed
        if since <= _start(documents[f]) < since + datetime.timedelta(days=60)
    }


def _start(document: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(document["startTime"].replace("Z", "+00:00"))


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("apac", lambda i, d: d["parameters"]["region"] == "apac"),
        ("batch007", lambda i, d: i % 1000 == 7),
        ("batch00", lambda i, d: i % 1000 < 10),  # a word's start
        ("run-001234", lambda i, d: i == 1234),  # a name
        ("table-nordics", lambda i, d: "table-nordics" in json.dumps(d["results"])),  # a result
        (
            "ml-pipeline-2 transform",
            lambda i, d: (
                d["identity"].get("workflow") == "ml-pipeline-2"
                and d["identity"].get("step") == "transform"
            ),
        ),  # every word must match
        ("db_password", lambda i, d: i % 4 == 0),  # a secret parameter, by name only
        ("KUBEMILL_SECRET_0", lambda i, d: False),  # nothing of a secret's source
        ("nosuchword", lambda i, d: False),
    ],
)
def test_text_search(index: RunIndex, text: str, check: Any) -> None:
    expected = {folder_of(i) for i in range(RUNS) if check(i, synthetic_run(i))}
    assert expected or text in ("KUBEMILL_SECRET_0", "nosuchword")
    assert {r.folder for r in _all(index, RunFilter(text=text))} == expected


@pytest.mark.parametrize("text", ['"', "AND", "a OR", "NEAR(a b)", "x:y", "^", "*", "(", "é∑😀"])
def test_search_text_is_never_read_as_query_syntax(index: RunIndex, text: str) -> None:
    assert index.query(RunFilter(text=text)).total >= 0


def test_facets_count_under_the_other_selections(
    index: RunIndex, documents: dict[str, dict[str, Any]]
) -> None:
    facets = index.facets()
    statuses = Counter(d["status"] for d in documents.values())
    assert dict(facets.statuses) == statuses
    assert dict(facets.namespaces) == Counter(
        d["identity"]["namespace"] for d in documents.values()
    )
    assert sum(n for _, n in facets.schedules) == sum(
        "schedule" in d["identity"] for d in documents.values()
    )
    assert facets.statuses[0] == ("Succeeded", statuses["Succeeded"])  # most frequent first
    # Selecting a namespace narrows the other facets, not its own.
    narrowed = index.facets(RunFilter(namespaces=frozenset({"ml"})))
    assert dict(narrowed.namespaces) == dict(facets.namespaces)
    assert sum(n for _, n in narrowed.statuses) == RUNS // 5
    assert {name for name, _ in narrowed.workflows} == {f"ml-pipeline-{k}" for k in range(3)}
    # What the user may not read is not counted anywhere, its own facet included.
    allowed = index.facets(RunFilter(allowed_namespaces=frozenset({"ops"})))
    assert [name for name, _ in allowed.namespaces] == ["ops"]
    assert all(name.startswith("ops-") for name, _ in allowed.schedules)


@pytest.mark.parametrize("text", ["apac", "batch00", "table eu", "run-001234", "nosuchword"])
@pytest.mark.parametrize("sort", list(Sort))
def test_a_search_pages_alike_whether_it_walks_the_order_or_sorts_its_matches(
    index: RunIndex, text: str, sort: Sort, monkeypatch: pytest.MonkeyPatch
) -> None:
    filters = RunFilter(text=text)
    monkeypatch.setattr(runindex, "WALK_ABOVE", RUNS)  # never walks: sorts the matches
    sorted_matches = [r.folder for r in _all(index, filters, sort, limit=40)]
    totals = {index.query(filters, sort).total, index.query(filters, sort, limit=3).total}
    monkeypatch.setattr(runindex, "WALK_ABOVE", 0)  # always walks
    assert [r.folder for r in _all(index, filters, sort, limit=40)] == sorted_matches
    assert totals == {index.query(filters, sort).total} == {len(sorted_matches)}
    failed = RunFilter(text=text, statuses=frozenset({"Failed"}))
    assert index.query(failed, sort).total == len(_all(index, failed, sort))


@pytest.mark.parametrize(
    "filters",
    [
        RunFilter(text="apac"),
        RunFilter(text="apac", statuses=frozenset({"Failed"})),
        RunFilter(text="table", namespaces=frozenset({"ml", "ops"}), statuses=frozenset({"X"})),
        RunFilter(text="batch00", schedules=frozenset({"ml-daily-3"})),
        RunFilter(text="eu", allowed_namespaces=frozenset({"ops", "ml"})),
    ],
)
def test_facets_under_a_search_count_what_selecting_each_value_would_show(
    index: RunIndex, filters: RunFilter
) -> None:
    facets = index.facets(filters)
    for counted, field in (
        (facets.statuses, "statuses"),
        (facets.namespaces, "namespaces"),
        (facets.schedules, "schedules"),
        (facets.workflows, "workflows"),
    ):
        assert counted == sorted(counted, key=lambda item: (-item[1], item[0]))
        for value, n in counted:
            assert index.query(replace(filters, **{field: frozenset({value})})).total == n
    assert sum(n for _, n in facets.statuses) == index.query(replace(filters, statuses=None)).total


@pytest.mark.parametrize("cursor", ["", "garbage!", "W10", "WyJuYW1lIiwxLCJ4Il0"])
def test_a_foreign_cursor_is_refused(index: RunIndex, cursor: str) -> None:
    with pytest.raises(BadCursor):
        index.query(cursor=cursor)


def test_a_cursor_belongs_to_its_order(index: RunIndex) -> None:
    cursor = index.query(sort=Sort.NAME).next_cursor
    assert cursor is not None
    with pytest.raises(BadCursor):
        index.query(sort=Sort.NEWEST, cursor=cursor)
    assert index.query(sort=Sort.NAME, cursor=cursor).runs[0].name == "run-000050"


def test_get_one_run(index: RunIndex) -> None:
    record = index.get(folder_of(42))
    assert record is not None and record.name == "run-000042" and record.etag
    assert index.get("no/such") is None


# --- passes over a store --------------------------------------------------------------------


def test_cursors_stay_put_when_runs_arrive_between_pages(tmp_path: Path) -> None:
    store = _objects(range(0, 400, 2))  # the even runs
    index = RunIndex(tmp_path)
    index.rebuild(store)
    first = index.query(limit=60)
    for i in (*range(1, 400, 2), 400, 401):  # odd runs land between them, two newer on top
        store.put_run(i)
    assert index.refresh(store).added == 202
    rest = []
    cursor = first.next_cursor
    while cursor is not None:
        page = index.query(cursor=cursor, limit=60)
        rest += page.runs
        cursor = page.next_cursor
    seen = [r.folder for r in first.runs + rest]
    assert len(seen) == len(set(seen))
    # Every run that was there is shown once; of the new ones, those older than page 1's end.
    evens = {folder_of(i) for i in range(0, 400, 2)}
    assert evens <= set(seen)
    oldest_first = min(r.start for r in first.runs if r.start)
    assert {f for f in seen if f not in evens} == {
        folder_of(i) for i in range(1, 400, 2) if _start(synthetic_run(i)) < oldest_first
    }
    index.close()


def test_refresh_reads_only_new_and_changed_runs(tmp_path: Path) -> None:
    store = _objects(range(100))
    index = RunIndex(tmp_path)
    assert not index.built()
    with pytest.raises(IndexNotBuilt):
        index.query()
    assert index.refresh(store).read == 100  # no index yet: a rebuild
    store.reads.clear()
    unchanged = index.refresh(store)
    assert (unchanged.read, unchanged.added, unchanged.updated, unchanged.removed) == (0, 0, 0, 0)
    changed = synthetic_run(5)
    changed["status"], changed["failure"] = "Failed", {"reason": "KernelDied", "message": "oom"}
    store.put_run(5, changed)
    store.put_run(100)
    for path in run_files(7):
        del store.files[path]
    stats = index.refresh(store)
    assert set(store.reads) == {f"{folder_of(5)}/run.json", f"{folder_of(100)}/run.json"}
    assert (stats.read, stats.added, stats.updated, stats.removed) == (2, 1, 1, 1)
    assert index.get(folder_of(5)).reason == "KernelDied"  # type: ignore[union-attr]
    assert index.get(folder_of(7)) is None
    assert index.query(RunFilter(text="oom")).total == 0  # messages are not searched
    assert index.query(RunFilter(statuses=frozenset({"Failed"}), text=folder_of(5))).total == 1
    index.close()


def test_a_run_in_progress_is_shown_and_replaced_when_it_ends(tmp_path: Path) -> None:
    store = _objects(range(3))
    running = "ml/run-live"
    store.put(f"{running}/output.ipynb", b"{}", EPOCH + datetime.timedelta(days=400))
    index = RunIndex(tmp_path)
    index.rebuild(store)
    record = index.query().runs[0]
    assert (record.folder, record.status, record.name) == (running, STATUS_RUNNING, "run-live")
    assert record.output == f"{running}/output.ipynb" and "no run.json yet" in record.notes[0]
    assert store.reads[f"{running}/output.ipynb"] == 0  # never read: it can be large
    store.put(f"{running}/output.ipynb", b'{"a": 1}', EPOCH + datetime.timedelta(days=401))
    assert index.refresh(store).updated == 1  # a new checkpoint moves it, still unread
    assert index.query().runs[0].start == EPOCH + datetime.timedelta(days=401)
    assert index.refresh(store).updated == 0
    done = synthetic_run(0)
    done["identity"]["run"] = "run-live"
    store.put(f"{running}/run.json", json.dumps(done).encode())
    stats = index.refresh(store)
    assert (stats.read, stats.updated) == (1, 1)
    assert index.get(running).status == "Succeeded"  # type: ignore[union-attr]
    index.close()


def test_one_bad_folder_costs_only_itself(tmp_path: Path) -> None:
    store = _objects(range(20))
    store.put("ns/broken/run.json", b'{"status": "Succeeded", "startTime": "yesterday"')
    store.fail.add(f"{folder_of(3)}/run.json")
    index = RunIndex(tmp_path)
    stats = index.rebuild(store)
    assert (stats.added, stats.unreadable) == (21, 1)
    broken = index.get("ns/broken")
    assert broken is not None and broken.status == STATUS_UNKNOWN and broken.notes
    assert broken.output is None  # the folder has no output.ipynb
    unreadable = index.get(folder_of(3))
    assert unreadable is not None and unreadable.etag is None
    assert "connection reset" in unreadable.notes[0]
    # The unreadable run is read again at the next refresh; once readable, it is indexed.
    store.fail.clear()
    assert index.refresh(store).read == 1
    assert index.get(folder_of(3)).status != STATUS_UNKNOWN  # type: ignore[union-attr]
    # While a known run cannot be read, it keeps what was indexed.
    store.put_run(4, {**synthetic_run(4), "status": "Failed"})
    store.fail.add(f"{folder_of(4)}/run.json")
    before = index.get(folder_of(4))
    assert index.refresh(store).unreadable == 1
    assert index.get(folder_of(4)) == before
    index.close()


def test_large_values_are_capped_in_the_index_and_named(tmp_path: Path) -> None:
    store = MemoryObjects()
    document = synthetic_run(1)
    document["parameters"]["blob"] = "x" * (VALUE_LIMIT + 10)
    document["results"]["big"] = list(range(VALUE_LIMIT))
    store.put_run(1, document)
    index = RunIndex(tmp_path)
    index.rebuild(store)
    record = index.get(folder_of(1))
    assert record is not None
    assert "blob" not in record.parameters and record.parameters["region"]
    assert "big" not in record.results and "rows" in record.results
    assert "parameters too large for the index, left out: blob" in record.notes
    assert "results too large for the index, left out: big" in record.notes
    index.close()


def test_a_rebuild_swaps_generations_under_readers(tmp_path: Path) -> None:
    index = RunIndex(tmp_path)
    index.rebuild(_objects(range(10)))
    assert index.query().total == 10
    seen: list[int] = []

    def reader() -> None:
        seen.append(index.query().total)  # this thread's connection, to the first generation

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    index.rebuild(_objects(range(25)))
    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    assert seen == [10, 25] and index.query().total == 25
    assert len(list(tmp_path.glob("runs-*.db"))) == 1  # the old generation is gone
    assert (tmp_path / "runs.db").is_symlink()
    index.close()


class FailingWalk(MemoryObjects):
    """A store whose listing breaks after `after` keys (an endpoint gone mid-walk)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def walk(self, prefix: str = "") -> Iterator[Listed]:
        for n, item in enumerate(super().walk(prefix)):
            if n == self.after:
                raise SourceError("cannot list: connection reset")
            yield item


def test_a_failed_pass_changes_nothing(tmp_path: Path) -> None:
    index = RunIndex(tmp_path)
    index.rebuild(_objects(range(10)))
    files = sorted(p.name for p in tmp_path.iterdir())
    broken = FailingWalk(after=100)
    for i in range(50):
        broken.put_run(i)
    with pytest.raises(SourceError):
        index.rebuild(broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # no partial generation left
    with pytest.raises(SourceError):
        index.refresh(broken)  # rolled back: one transaction
    assert index.query().total == 10
    index.close()


def test_readers_see_the_index_before_or_after_a_refresh_never_between(tmp_path: Path) -> None:
    store = _objects(range(500))
    index = RunIndex(tmp_path)
    index.rebuild(store)
    for i in range(500, 3500):
        store.put_run(i)
    totals: set[int] = set()
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            page = index.query()
            totals.add(page.total)
            assert len(page.runs) == 50

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        index.refresh(store)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert totals <= {500, 3500} and 500 in totals
    assert index.query().total == 3500
    index.close()


def test_a_file_of_another_schema_version_is_not_read(tmp_path: Path) -> None:
    import sqlite3

    index = RunIndex(tmp_path)
    index.rebuild(_objects(range(3)))
    connection = sqlite3.connect(tmp_path / "runs.db")
    with connection:
        connection.execute("UPDATE meta SET value = '0' WHERE key = 'schema'")
    connection.close()
    other = RunIndex(tmp_path)
    assert not other.built()
    assert other.refresh(_objects(range(4))).added == 4  # rebuilt
    assert other.query().total == 4
    index.close()
    other.close()


def test_search_without_fts5_finds_the_same_runs(tmp_path: Path) -> None:
    store = _objects(range(300))
    with_fts, without = RunIndex(tmp_path / "a"), RunIndex(tmp_path / "b")
    without.fts = False
    with_fts.rebuild(store)
    without.rebuild(store)
    for text in ("apac", "run-000123", "table-eu", "batch007", "nosuchword", "db_password"):
        a = {r.folder for r in _all(with_fts, RunFilter(text=text))}
        b = {r.folder for r in _all(without, RunFilter(text=text))}
        assert a == b, text
        assert a or text == "nosuchword"
    with_fts.close()
    without.close()


def test_objects_protocol_is_what_the_sources_implement() -> None:
    store: Objects = MemoryObjects()
    assert list(store.walk("")) == []


def test_a_run_folder_whose_key_a_browser_would_rewrite_is_not_indexed(tmp_path: Path) -> None:
    """`evil/../victim/run.json` would show a row (its name and parameters the writer's) whose
    link a browser resolves to victim/output.ipynb."""
    store = _objects(range(3))
    for path, data in run_files(0).items():
        store.put("evil/../" + path, data)
    index = RunIndex(tmp_path)
    index.rebuild(store)
    assert index.query().total == 3
    assert not [p for p in store.reads if p.startswith("evil/")]


def test_a_folder_this_user_may_not_list_is_skipped_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A volume's root-owned lost+found (mode 0700) under a viewer that is not root. (These
    tests run as root, who may list anything: the refusal is played by os.scandir.)"""
    from kubemill.viewer import runindex_sources

    (tmp_path / "runs" / "lost+found").mkdir(parents=True)
    (tmp_path / "runs" / "ok").mkdir()
    (tmp_path / "runs" / "ok" / "run.json").write_text("{}")
    scandir = os.scandir

    def refusing(path: Any) -> Any:
        if str(path).endswith("lost+found"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(runindex_sources.os, "scandir", refusing)
    listed = [item.path for item in runindex_sources.LocalObjects(tmp_path / "runs").walk()]
    assert listed == ["ok/run.json"]
    with pytest.raises(runindex_sources.SourceError, match="permission denied"):
        list(runindex_sources.LocalObjects(tmp_path / "runs" / "lost+found").walk())
