"""The viewer's pure parts: paths and links, paging and sorting, contents models, caches."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kubemill.cli.view import is_loopback
from kubemill.viewer import contents, listing, paths
from kubemill.viewer.cache import CachedPage, MemoryCache, RenderCache
from kubemill.viewer.errors import BadPath, BadRequest
from kubemill.viewer.folders import FolderCache
from kubemill.viewer.listing import Entry
from kubemill.viewer.settings import normalize_base_path

# --- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("", ""),
        ("/", ""),
        ("a", "a"),
        ("a/", "a"),
        ("a/b c/é+%#?.ipynb", "a/b c/é+%#?.ipynb"),
        ("..a/b..", "..a/b.."),
        ("a\\b", "a\\b"),
    ],
)
def test_clean_path_keeps_what_names_something_inside(raw: str, clean: str) -> None:
    assert paths.clean_path(raw) == clean


@pytest.mark.parametrize(
    "raw", ["..", "../etc", "a/../../etc", "a/./b", "/etc/passwd", "//x", "a//b", "a/\x00b", "a//"]
)
def test_clean_path_refuses_what_would_leave_the_root(raw: str) -> None:
    with pytest.raises(BadPath):
        paths.clean_path(raw)


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("a b/c.ipynb", "a%20b/c.ipynb"),
        ("x+y/100%/#1?.txt", "x%2By/100%25/%231%3F.txt"),
        ("é/ü.ipynb", "%C3%A9/%C3%BC.ipynb"),
    ],
)
def test_quote_path_encodes_each_segment(path: str, quoted: str) -> None:
    from urllib.parse import unquote

    assert paths.quote_path(path) == quoted
    assert unquote(quoted) == path  # one decoding gives the key back


def test_join_honours_the_base_path() -> None:
    assert paths.join("", "tree", "") == "/tree/"
    assert paths.join("/hub/km", "tree", "a b", folder=True) == "/hub/km/tree/a%20b/"
    assert paths.join("/hub/km", "view", "r/out.ipynb") == "/hub/km/view/r/out.ipynb"


def test_breadcrumbs() -> None:
    assert paths.breadcrumbs("") == [("/", "")]
    assert paths.breadcrumbs("a/b") == [("/", ""), ("a", "a"), ("b", "a/b")]


@pytest.mark.parametrize(
    ("name", "media"),
    [
        ("out.ipynb", "application/x-ipynb+json"),
        ("run.json", "application/json"),
        ("x.html", "text/html; charset=utf-8"),
        ("evil.js", "text/plain; charset=utf-8"),
        ("evil.mjs", "text/plain; charset=utf-8"),
        ("plot.png", "image/png"),
        ("notes.csv", "text/csv; charset=utf-8"),
        ("blob", "application/octet-stream"),
    ],
)
def test_media_type_never_serves_a_script(name: str, media: str) -> None:
    assert paths.media_type(name) == media


@pytest.mark.parametrize(
    ("name", "plain", "encoded"),
    [
        ("out.ipynb", "out.ipynb", "out.ipynb"),
        # a quote, a backslash, a non-ASCII letter and a newline
        ('a"\\é\n.txt', "a____.txt", "a%22%5C%C3%A9%0A.txt"),
    ],
)
def test_content_disposition_cannot_break_its_header(name: str, plain: str, encoded: str) -> None:
    header = paths.content_disposition("attachment", name)
    assert header == f"attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}"


@pytest.mark.parametrize(
    ("root", "url", "link"),
    [
        ("s3://b/runs/", "s3://b/runs/ns/r1/output.ipynb", "/v/view/ns/r1/output.ipynb"),
        ("s3://b/runs", "s3://b/runs/ns/r1/results.json", "/v/files/ns/r1/results.json"),
        ("s3://b/runs/", "s3://b/runs/ns/r 1/", "/v/tree/ns/r%201/"),
        ("s3://b/runs/", "s3://b/runs/", "/v/tree/"),
        ("s3://b/runs/", "s3://b/other/x.ipynb", None),
        ("s3://b/runs/", "s3://b/runsx/x.ipynb", None),
        ("s3://b/runs/", "s3://c/runs/x.ipynb", None),
        ("s3://b/runs/", "s3://b/runs/a/../../x.ipynb", None),
        ("s3://b/", "s3://b/é #?.ipynb", "/v/view/%C3%A9%20%23%3F.ipynb"),
        ("/data/runs", "/data/runs/a/out.ipynb", "/v/view/a/out.ipynb"),
        ("/data/runs", "file:///data/runs/a%20b/out.ipynb", "/v/view/a%20b/out.ipynb"),
        ("/data/runs", "/data/runs/../secret.ipynb", None),
        ("/data/runs", "/data/runsx/a.ipynb", None),
        ("/data/runs", "https://example.org/a.ipynb", None),
    ],
)
def test_link_mapper(root: str, url: str, link: str | None) -> None:
    assert paths.link_mapper(root, "/v")(url) == link


@pytest.mark.parametrize(
    ("text", "base"),
    [("", ""), ("/", ""), ("viewer", "/viewer"), ("/hub/km/", "/hub/km"), (" /x ", "/x")],
)
def test_normalize_base_path(text: str, base: str) -> None:
    assert normalize_base_path(text) == base


@pytest.mark.parametrize("text", ["/a/../b", "/a b", "/a?x", "/a//b", "/%2e"])
def test_normalize_base_path_refuses(text: str) -> None:
    with pytest.raises(BadPath):
        normalize_base_path(text)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# --- paging and sorting --------------------------------------------------------------------

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def _files(n: int) -> list[Entry]:
    # Times run against names, so the two sorts differ.
    return [Entry(f"f{i:05d}", False, i, T0 - timedelta(minutes=i)) for i in range(n)]


def _walk(entries: list[Entry], sort: listing.Sort, order: str, limit: int) -> list[str]:
    names: list[str] = []
    token = None
    while True:
        chosen = listing.page(entries, sort, order, token, limit)  # type: ignore[arg-type]
        assert len(chosen.entries) <= limit
        names += [e.name for e in chosen.entries]
        if chosen.next_token is None:
            return names
        token = chosen.next_token


@pytest.mark.parametrize("limit", [7, 1000, 2500, 5000])
@pytest.mark.parametrize(("sort", "order"), [("name", "asc"), ("name", "desc"), ("time", "asc")])
def test_paging_shows_every_entry_once_in_order(limit: int, sort: str, order: str) -> None:
    entries = [Entry("dir-b", True), Entry("dir-a", True), *_files(2500)]
    names = _walk(entries, sort, order, limit)  # type: ignore[arg-type]
    assert len(names) == len(entries)
    assert names[:2] == (["dir-a", "dir-b"] if order == "asc" else ["dir-b", "dir-a"])
    files = names[2:]
    if sort == "name":
        assert files == sorted(files, reverse=order == "desc")
    else:  # oldest first: the highest numbers
        assert files == [f"f{i:05d}" for i in reversed(range(2500))]


def test_pages_of_one() -> None:
    entries = [Entry("d", True), *_files(5)]
    assert _walk(entries, "name", "desc", 1) == ["d", *(f"f{i:05d}" for i in range(4, -1, -1))]


def test_time_sort_newest_first_is_the_default_for_time() -> None:
    assert listing.parse_sort("time", None) == ("time", "desc")
    assert listing.parse_sort(None, None) == ("name", "asc")
    names = _walk(_files(10), "time", "desc", 3)
    assert names == [f"f{i:05d}" for i in range(10)]


def test_a_page_token_survives_entries_added_before_it() -> None:
    entries = _files(10)
    first = listing.page(entries, "name", "asc", None, 4)
    assert [e.name for e in first.entries] == ["f00000", "f00001", "f00002", "f00003"]
    relisted = [Entry("a-new", False, 1, T0), *entries]
    second = listing.page(relisted, "name", "asc", first.next_token, 4)
    assert [e.name for e in second.entries] == ["f00004", "f00005", "f00006", "f00007"]


def test_equal_times_page_by_name() -> None:
    entries = [Entry(f"n{i}", False, 0, T0) for i in range(5)]
    assert _walk(entries, "time", "desc", 2) == ["n4", "n3", "n2", "n1", "n0"]


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", "WzUsIDAsICJ4Il0"])
def test_a_bad_page_token_is_a_bad_request(token: str) -> None:
    with pytest.raises(BadRequest):
        listing.page(_files(3), "name", "asc", token, 2)


@pytest.mark.parametrize(("sort", "order"), [("size", None), ("name", "up")])
def test_bad_sort_is_a_bad_request(sort: str, order: str | None) -> None:
    with pytest.raises(BadRequest):
        listing.parse_sort(sort, order)


# --- contents models -----------------------------------------------------------------------

KEYS = {
    "name",
    "path",
    "type",
    "writable",
    "created",
    "last_modified",
    "size",
    "mimetype",
    "content",
    "format",
    "hash",
    "hash_algorithm",
}


def test_isoformat_is_utc_with_z() -> None:
    assert contents.isoformat(T0) == "2027-01-01T00:00:00Z"
    assert contents.isoformat(None) == "1970-01-01T00:00:00Z"


def test_directory_model() -> None:
    rows = [Entry("sub", True), Entry("a.ipynb", False, 5, T0), Entry("b.txt", False, 2, T0)]
    model = contents.directory_model("runs", None, rows)
    assert set(model) == KEYS
    assert (model["type"], model["format"], model["writable"]) == ("directory", "json", False)
    kinds = [(c["path"], c["type"], c["mimetype"], c["content"]) for c in model["content"]]
    assert kinds == [
        ("runs/sub", "directory", None, None),
        ("runs/a.ipynb", "notebook", None, None),
        ("runs/b.txt", "file", "text/plain", None),
    ]
    assert contents.directory_model("runs", None, None)["content"] is None


def test_notebook_model() -> None:
    data = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    model = contents.file_model("r/out.ipynb", T0, len(data), data, None, None)
    assert set(model) == KEYS
    assert (model["type"], model["format"], model["mimetype"]) == ("notebook", "json", None)
    assert model["content"]["nbformat"] == 4
    as_file = contents.file_model("r/out.ipynb", T0, len(data), data, "file", None)
    assert (as_file["type"], as_file["format"], as_file["content"]) == (
        "file",
        "text",
        data.decode(),
    )
    bare = contents.file_model("r/out.ipynb", T0, len(data), None, None, None)
    assert (bare["content"], bare["format"], bare["size"]) == (None, None, len(data))


@pytest.mark.parametrize(
    ("data", "fmt", "content", "format_"),
    [
        ("é\n".encode(), None, "é\n", "text"),
        (b"\x00\xff", None, "AP8=", "base64"),
        (b"hi", "base64", "aGk=", "base64"),
    ],
)
def test_file_model(data: bytes, fmt: str | None, content: str, format_: str) -> None:
    model = contents.file_model("x.dat", T0, len(data), data, None, fmt)  # type: ignore[arg-type]
    assert (model["content"], model["format"]) == (content, format_)
    assert model["mimetype"]


@pytest.mark.parametrize(
    ("name", "data", "kind", "fmt", "reason"),
    [
        ("b.bin", b"\xff", None, "text", "bad format"),
        ("a.txt", b"x", "directory", None, "bad type"),
        ("a.ipynb", b"not json", None, None, "bad type"),
        ("a.ipynb", b"[1]", None, None, "bad type"),
        ("a.ipynb", b"{}", None, "base64", "bad format"),
    ],
)
def test_file_model_refusals_say_why(
    name: str, data: bytes, kind: str | None, fmt: str | None, reason: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        contents.file_model(name, T0, len(data), data, kind, fmt)  # type: ignore[arg-type]
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("query", "parsed"),
    [
        ((None, None, None), (True, None, None)),
        (("0", "file", "text"), (False, "file", "text")),
        (("1", "notebook", "json"), (True, "notebook", "json")),
    ],
)
def test_parse_query(query: tuple[str | None, ...], parsed: tuple[object, ...]) -> None:
    assert contents.parse_query(*query) == parsed


@pytest.mark.parametrize("query", [("2", None, None), (None, "dir", None), (None, None, "xml")])
def test_parse_query_refuses(query: tuple[str | None, ...]) -> None:
    with pytest.raises(BadRequest):
        contents.parse_query(*query)


# --- caches --------------------------------------------------------------------------------


def test_folder_cache_lists_once_within_its_ttl_and_again_after() -> None:
    now = [0.0]
    calls: list[str] = []
    cache = FolderCache(ttl=5, max_entries=100, clock=lambda: now[0])

    async def load() -> list[Entry]:
        calls.append("x")
        await asyncio.sleep(0)
        return [Entry("a", False, 1, T0)]

    async def scenario() -> None:
        # Concurrent requests share one listing.
        await asyncio.gather(*(cache.entries("p", load) for _ in range(5)))
        assert len(calls) == 1
        now[0] = 4.9
        await cache.entries("p", load)
        assert len(calls) == 1
        now[0] = 5.0
        await cache.entries("p", load)
        assert len(calls) == 2

    asyncio.run(scenario())


def test_folder_cache_is_bounded_by_entries() -> None:
    cache = FolderCache(ttl=60, max_entries=10)

    def loader(n: int):  # type: ignore[no-untyped-def]
        async def load() -> list[Entry]:
            return _files(n)

        return load

    async def scenario() -> None:
        await cache.entries("a", loader(6))
        await cache.entries("b", loader(4))
        assert cache.size == 10
        await cache.entries("c", loader(5))  # drops a, the least recently used
        assert cache.size == 9
        await cache.entries("huge", loader(11))  # served, not kept
        assert cache.size == 9

    asyncio.run(scenario())


def test_folder_cache_failure_is_not_kept() -> None:
    cache = FolderCache(ttl=60, max_entries=10)
    attempts: list[int] = []

    async def load() -> list[Entry]:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("flaky")
        return []

    async def scenario() -> None:
        with pytest.raises(OSError):
            await cache.entries("p", load)
        assert await cache.entries("p", load) == ()

    asyncio.run(scenario())


def test_render_cache_round_trip_survives_a_new_instance(tmp_path: Path) -> None:
    page = CachedPage("t é\n", "<style></style>", "<p>body é</p>\n".encode())
    key = RenderCache.key("a b/é.ipynb", "etag1", "v")
    RenderCache(tmp_path, 10_000).put(key, page)
    assert RenderCache(tmp_path, 10_000).get(key) == page
    assert RenderCache(tmp_path, 10_000).get(RenderCache.key("a b/é.ipynb", "etag2", "v")) is None
    assert RenderCache.key("p", "e", "v1") != RenderCache.key("p", "e", "v2")


def test_render_cache_evicts_the_least_recently_used(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, 1100)
    body = b"x" * 300
    for name in ("a", "b", "c"):
        cache.put(name, CachedPage(name, "", body))
    folder = tmp_path / "v2"
    # Make the order of use explicit: a is the oldest, then b, then c.
    for age, name in enumerate(("c", "b", "a")):
        stamp = 1_000_000 - age * 100
        os.utime(folder / f"{name}.page", (stamp, stamp))
    assert cache.get("a") is not None  # used now: the newest
    cache.put("d", CachedPage("d", "", body))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("d") is not None
    assert cache.size() <= 1100


def test_render_cache_ignores_a_damaged_file(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, 1000)
    for damaged in (b"{not json\nb", b'{"title": "t", "head": "", "bytes": 5}\nb'):
        cache.put("k", CachedPage("t", "", b"b"))
        assert cache.get("k") == CachedPage("t", "", b"b")
        (tmp_path / "v2" / "k.page").write_bytes(damaged)
        assert cache.get("k") is None
        assert not (tmp_path / "v2" / "k.page").exists()


def test_memory_cache_is_bounded_by_the_sizes_given() -> None:
    cache: MemoryCache[tuple[str, str], str] = MemoryCache(10)
    cache.put(("a", "1"), "a1", 4)
    cache.put(("b", "1"), "b1", 4)
    assert cache.get(("a", "1")) == "a1"
    cache.put(("c", "1"), "c1", 5)  # drops b: a was used later
    assert cache.get(("b", "1")) is None
    assert cache.get(("a", "1")) == "a1"
    cache.put(("a", "1"), "a1 again", 4)  # replaces, counted once
    assert cache.get(("c", "1")) == "c1"
    cache.put(("huge", "1"), "h", 11)
    assert cache.get(("huge", "1")) is None


def test_a_listing_is_sorted_once_per_listing_and_sort() -> None:
    now = [0.0]
    cache = FolderCache(ttl=5, max_entries=100, clock=lambda: now[0])

    async def load() -> list[Entry]:
        return _files(10)

    async def scenario() -> None:
        by_name = await cache.arranged("p", "name", load)
        assert await cache.arranged("p", "name", load) is by_name
        by_time = await cache.arranged("p", "time", load)
        assert by_time is not by_name
        assert by_time.groups[1][0].name == "f00009"  # the oldest first
        now[0] = 10  # listed again: sorted again
        assert await cache.arranged("p", "name", load) is not by_name

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("host", "here"),
    [
        ("127.0.0.1:8866", True), ("localhost:8866", True), ("LOCALHOST.", True),
        ("[::1]:8866", True), ("127.5.5.5", True), ("nb.example:443", True),
        # A page whose own name now resolves to 127.0.0.1 still sends its own name.
        ("rebind.evil.example:8866", False), ("localhost.evil.example", False),
        ("10.0.0.1:8866", False), ("", False),
    ],
)  # fmt: skip
def test_only_requests_addressed_to_this_machine_are_answered(host: str, here: bool) -> None:
    from kubemill.viewer.app import addressed_here

    assert addressed_here(host, ("nb.example",)) is here


def test_each_root_has_a_runs_index_of_its_own(tmp_path: Path) -> None:
    from kubemill.viewer.settings import ViewerSettings

    a = ViewerSettings(root="s3://team-a/", cache_dir=tmp_path).runs_index_dir
    b = ViewerSettings(root=str(tmp_path / "runs"), cache_dir=tmp_path).runs_index_dir
    assert a != b and a.parent == b.parent == tmp_path / "runs-index"
    given = ViewerSettings(root="s3://team-a/", cache_dir=tmp_path, index_dir=tmp_path / "i")
    assert given.runs_index_dir == tmp_path / "i"


@pytest.mark.parametrize(
    ("path", "linked"),
    [("a/b.ipynb", True), ("a/../b.ipynb", False), ("./b", False), ("a//b", False), ("..", False)],
)
def test_only_paths_a_browser_keeps_as_written_are_linked(path: str, linked: bool) -> None:
    assert paths.linkable(path) is linked
