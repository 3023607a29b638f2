"""The runs view served over real HTTP, its index built and refreshed by the running viewer from
a real folder and a real S3 server (SeaweedFS).

Run folders come from `kubemill_testenv.runfolders` (shaped like the runner's, checked against
the real runner by test_viewer_runindex.py), so the expected answer of every filter is computed
from the same synthetic documents.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest

from kubemill.viewer.runindex import Objects
from kubemill.viewer.runindex_sources import SourceError
from kubemill.viewer.settings import ViewerSettings
from kubemill.viewer.storage import LocalStore
from kubemill_testenv.runfolders import folder_of, run_files, synthetic_run, write_local, write_s3
from kubemill_testenv.s3server import S3Server
from tests.integration.viewer_server import LiveViewer, Reply, live_viewer

pytestmark = pytest.mark.integration

RUNS = 36
#: The run whose parameters and results carry markup: they must show as text.
HOSTILE = 99
SCRIPT = "<script>alert('x')</script>"
#: How long the index may take to build or to pick up a change, at a tenth of a second a refresh.
DEADLINE = 30.0


def poll(probe: Callable[[], Reply], done: Callable[[Reply], bool], what: str) -> Reply:
    """Ask until `done` holds, at most DEADLINE seconds: the index works on its own thread."""
    deadline = time.monotonic() + DEADLINE
    while True:
        reply = probe()
        if done(reply):
            return reply
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still {reply.status} {reply.text[:300]}")
        time.sleep(0.05)


def api(viewer: LiveViewer, **query: Any) -> dict[str, Any]:
    pairs = [(k, v) for k, values in query.items() for v in _list(values)]
    reply = viewer.get("/api/runs" + ("?" + urlencode(pairs, quote_via=quote) if pairs else ""))
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    result: dict[str, Any] = json.loads(reply.body)
    return result


def _list(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]


def folders(answer: dict[str, Any]) -> list[str]:
    return [run["folder"] for run in answer["runs"]]


def built(viewer: LiveViewer) -> None:
    poll(lambda: viewer.get("/api/runs"), lambda r: r.status == 200, "the runs index")


def hostile_run() -> dict[str, Any]:
    document = synthetic_run(HOSTILE)
    document["status"] = "Succeeded"
    document.pop("failure", None)
    document["parameters"] = {"title": SCRIPT, "region": "nordics"}
    document["results"] = {"note": '"><img src=x onerror=alert(1)>'}
    document["identity"]["schedule"] = "<b>sched</b>"
    return document


def hostile_files() -> dict[str, bytes]:
    return run_files(HOSTILE, hostile_run())


def documents() -> dict[str, dict[str, Any]]:
    """Every run the tests write, by folder."""
    found = {folder_of(i): synthetic_run(i) for i in range(RUNS)}
    found[folder_of(HOSTILE)] = hostile_run()
    return found


def expected(select: Callable[[dict[str, Any]], bool]) -> set[str]:
    return {folder for folder, document in documents().items() if select(document)}


def every_page(viewer: LiveViewer, **query: Any) -> list[list[str]]:
    """The folders of each page, following nextCursor from the first page to the last."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        answer = api(viewer, **query, **({"cursor": cursor} if cursor else {}))
        pages.append(folders(answer))
        cursor = answer["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100


@pytest.fixture
def local_runs(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    write_local(root, range(RUNS))
    for path, data in hostile_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


def local_settings(root: Path, tmp_path: Path, **overrides: Any) -> ViewerSettings:
    values: dict[str, Any] = {
        "root": str(root),
        "cache_dir": tmp_path / "cache",
        "refresh_seconds": 0.1,
    }
    values.update(overrides)
    return ViewerSettings(**values)


# --- over a folder -------------------------------------------------------------------------


def test_filters_search_and_facets(local_runs: Path, tmp_path: Path) -> None:
    with live_viewer(local_settings(local_runs, tmp_path)) as viewer:
        built(viewer)
        every = api(viewer, limit=500)
        assert every["total"] == RUNS + 1
        assert len(every["runs"]) == RUNS + 1

        failed = api(viewer, status="Failed", limit=500)
        assert set(folders(failed)) == expected(lambda d: d["status"] == "Failed")
        assert failed["total"] == len(failed["runs"]) > 0
        assert all(run["reason"] for run in failed["runs"])

        two = api(viewer, namespace=["ml", "ops"], limit=500)
        assert set(folders(two)) == expected(lambda d: d["identity"]["namespace"] in ("ml", "ops"))

        schedule = synthetic_run(0)["identity"]["schedule"]
        by_schedule = api(viewer, schedule=schedule, limit=500)
        assert set(folders(by_schedule)) == expected(
            lambda d: d["identity"].get("schedule") == schedule
        )
        workflow = next(
            d["identity"]["workflow"]
            for d in map(synthetic_run, range(RUNS))
            if "workflow" in d["identity"]
        )
        by_workflow = api(viewer, workflow=workflow, limit=500)
        assert set(folders(by_workflow)) == expected(
            lambda d: d["identity"].get("workflow") == workflow
        )
        assert all(run["step"] for run in by_workflow["runs"])

        # Run i starts i x 5 minutes after the epoch: runs 12 to 23 start in this hour.
        first = synthetic_run(0)["startTime"][:10]
        window = api(
            viewer, **{"from": f"{first}T01:00:00Z", "to": f"{first}T02:00:00Z"}, limit=500
        )
        assert set(folders(window)) == {folder_of(i) for i in range(12, 24)}
        day = api(viewer, **{"from": first, "to": first}, limit=500)
        assert set(folders(day)) == set(documents())  # all start that day

        # Search: a tag names one run; a region is in its parameters and its results.
        assert folders(api(viewer, q="batch007")) == [folder_of(7)]
        nordics = api(viewer, q="nordics", limit=500)
        assert set(folders(nordics)) == expected(lambda d: d["parameters"]["region"] == "nordics")
        both = api(viewer, q="nordics", status="Succeeded", limit=500)
        assert set(folders(both)) == expected(
            lambda d: d["parameters"]["region"] == "nordics" and d["status"] == "Succeeded"
        )

        # Facets: each dimension's counts under the other selections, its own ignored.
        statuses = Counter(d["status"] for d in documents().values())
        facets = api(viewer, status="Failed")["facets"]
        assert {f["value"]: f["count"] for f in facets["status"]} == dict(statuses)
        failed_per_namespace = Counter(
            d["identity"]["namespace"] for d in documents().values() if d["status"] == "Failed"
        )
        assert {f["value"]: f["count"] for f in facets["namespace"]} == dict(failed_per_namespace)

        # The HTML form shows those counts beside each option, its selection kept.
        page = viewer.get("/runs?status=Failed")
        assert page.status == 200
        assert re.search(r'value="Failed" checked> Failed <span class="muted">\(\d+\)', page.text)
        assert f"{failed['total']} runs" in page.text
        assert page.text.count('<tr class="run">') == failed["total"]


@pytest.mark.parametrize("sort", ["newest", "oldest", "name", "name-desc"])
def test_paging_with_the_cursor_shows_each_run_once_both_ways(
    local_runs: Path, tmp_path: Path, sort: str
) -> None:
    with live_viewer(local_settings(local_runs, tmp_path)) as viewer:
        built(viewer)
        pages = every_page(viewer, sort=sort, limit=5)
        seen = [folder for page in pages for folder in page]
        assert len(pages) == 8  # 37 runs, 5 a page
        assert len(seen) == len(set(seen)) == RUNS + 1
        whole = folders(api(viewer, sort=sort, limit=500))
        assert seen == whole

        # Back from the last page with previousCursor: the same pages, in reverse.
        answer = api(viewer, sort=sort, limit=5, cursor=_cursor_before(viewer, sort, pages))
        back = [folders(answer)]
        while answer["previousCursor"]:
            answer = api(viewer, sort=sort, limit=5, before=answer["previousCursor"])
            back.append(folders(answer))
        assert back[::-1] == pages

        # The HTML links keep the filters and the order.
        html = viewer.get(f"/runs?status=Succeeded&sort={sort}&limit=5")
        following = re.search(r'<a rel="next" href="([^"]*)"', html.text)
        assert following is not None
        link = unescape(following.group(1))
        assert "status=Succeeded" in link and "limit=5" in link
        assert (f"sort={sort}" in link) == (sort != "newest")
        second = viewer.get(link)
        assert second.status == 200
        assert re.search(r'<a rel="prev" href="[^"]*before=', second.text)


def _cursor_before(viewer: LiveViewer, sort: str, pages: list[list[str]]) -> str:
    """The cursor that opens the last page: the next cursor of the page before it."""
    cursor = None
    for _ in pages[:-1]:
        cursor = api(viewer, sort=sort, limit=5, **({"cursor": cursor} if cursor else {}))[
            "nextCursor"
        ]
    assert cursor is not None
    return cursor


def test_pages_link_to_notebooks_and_back_to_the_files(local_runs: Path, tmp_path: Path) -> None:
    with live_viewer(local_settings(local_runs, tmp_path)) as viewer:
        built(viewer)
        answer = api(viewer, limit=10)
        for run in answer["runs"]:
            assert run["url"] == f"/view/{run['folder']}/output.ipynb"
            assert viewer.get(run["url"]).status == 200
        page = viewer.get("/runs?limit=10")
        notebooks = [link for link in page.links() if link.startswith("/view/")]
        assert notebooks == [run["url"] for run in answer["runs"]]
        assert "/tree/" in page.links()  # the header: back to the files
        tree = viewer.get("/tree/")
        assert "/runs" in tree.links()  # and from the files to the runs


def test_markup_in_a_run_is_shown_as_text(local_runs: Path, tmp_path: Path) -> None:
    with live_viewer(local_settings(local_runs, tmp_path)) as viewer:
        built(viewer)
        page = viewer.get("/runs?q=nordics")
        assert page.status == 200
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "<b>sched</b>" not in page.text
        assert "title=&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page.text
        assert "schedule &lt;b&gt;sched&lt;/b&gt;" in page.text
        # The filter form echoes a search as text too.
        echoed = viewer.get("/runs?" + urlencode({"q": '"><script>x</script>'}))
        assert echoed.status == 200
        assert "<script>x" not in echoed.text
        answer = api(viewer, q="nordics", limit=500)
        hostile = next(run for run in answer["runs"] if run["folder"] == folder_of(HOSTILE))
        assert hostile["parameters"]["title"] == SCRIPT


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("cursor=bm90LWEtY3Vyc29y", "cursor: the page cursor is not one this viewer made"),
        ("from=last-week", "from &#x27;last-week&#x27; is not a day (YYYY-MM-DD)"),
        ("to=2026-02-30", "to &#x27;2026-02-30&#x27; is not a day"),
        ("limit=9999", "limit must be a whole number from 1 to 500"),
    ],
)
def test_bad_queries_are_400_naming_the_problem(
    local_runs: Path, tmp_path: Path, query: str, message: str
) -> None:
    with live_viewer(local_settings(local_runs, tmp_path)) as viewer:
        built(viewer)
        page = viewer.get(f"/runs?{query}")
        assert page.status == 400
        assert message in page.text
        answer = viewer.get(f"/api/runs?{query}")
        assert answer.status == 400
        assert unescape(message) in json.loads(answer.body)["message"]


def test_a_new_run_shows_after_a_refresh(local_runs: Path, tmp_path: Path) -> None:
    with live_viewer(local_settings(local_runs, tmp_path)) as viewer:
        built(viewer)
        assert api(viewer, q="batch040")["total"] == 0
        write_local(local_runs, [40])
        reply = poll(
            lambda: viewer.get("/api/runs?q=batch040"),
            lambda r: r.status == 200 and json.loads(r.body)["total"] == 1,
            "run 40 in the index",
        )
        assert folders(json.loads(reply.body)) == [folder_of(40)]


# --- while there is no index yet -----------------------------------------------------------


class GatedStore(LocalStore):
    """A folder whose runs index cannot be read at first (the store is down), then waits for
    the test to open the gate: the viewer before its first index is built."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.walks = 0

    def objects(self) -> Objects:
        inner = super().objects()
        store = self

        class Gated:
            def walk(self, prefix: str) -> Iterator[Any]:
                store.walks += 1
                if store.walks == 1:
                    raise SourceError("the store is down")
                store.gate.wait(DEADLINE)
                return inner.walk(prefix)

            def read(self, path: str) -> bytes:
                return inner.read(path)

        return Gated()


def test_while_the_index_is_built_the_view_says_so(local_runs: Path, tmp_path: Path) -> None:
    store = GatedStore(local_runs)
    try:
        with live_viewer(local_settings(local_runs, tmp_path), store=store) as viewer:
            # The first pass fails: said, and tried again (the second pass waits at the gate).
            answer = poll(lambda: viewer.get("/api/runs"), lambda r: store.walks >= 2, "a retry")
            assert answer.status == 503
            assert answer.headers["Retry-After"] == "5"
            assert "being built" in json.loads(answer.body)["message"]
            page = viewer.get("/runs")
            assert page.status == 503
            assert page.headers["Retry-After"] == "5"
            assert "The runs index is being built" in page.text
            assert '<meta http-equiv="refresh" content="5">' in page.text
            assert viewer.get("/tree/").status == 200  # the rest of the viewer serves
            store.gate.set()
            built(viewer)
            assert api(viewer)["total"] == RUNS + 1
    finally:
        store.gate.set()


def test_a_failed_first_pass_is_shown_and_retried(local_runs: Path, tmp_path: Path) -> None:
    store = GatedStore(local_runs)
    try:
        # A long interval: the failure stays on the page until the next tick.
        settings = local_settings(local_runs, tmp_path, refresh_seconds=DEADLINE)
        with live_viewer(settings, store=store) as viewer:
            reply = poll(
                lambda: viewer.get("/api/runs"),
                lambda r: "the store is down" in r.text,
                "the failure",
            )
            assert reply.status == 503
            assert "the last attempt failed: SourceError: the store is down" in reply.text
            page = viewer.get("/runs")
            assert "The last attempt failed: SourceError: the store is down" in page.text
    finally:
        store.gate.set()


# --- over S3 -------------------------------------------------------------------------------


def test_runs_view_over_s3(
    s3_server: S3Server,
    s3_admin: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_s3(s3_admin, bucket, "runs/", range(RUNS))
    for path, data in hostile_files().items():
        s3_admin.put_object(Bucket=bucket, Key="runs/" + path, Body=data)
    # Read with the read-only identity, through the runner's credential chain.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader_secret_key)
    settings = ViewerSettings(
        root=f"s3://{bucket}/runs/",
        cache_dir=tmp_path / "cache",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region="us-east-1",
        refresh_seconds=0.2,
        base_path="/hub/kubemill",
    )
    with live_viewer(settings) as viewer:
        poll(
            lambda: viewer.get("/hub/kubemill/api/runs"),
            lambda r: r.status == 200,
            "the runs index over S3",
        )

        def s3_api(query: str) -> dict[str, Any]:
            reply = viewer.get("/hub/kubemill/api/runs?" + query)
            assert reply.status == 200, reply.text
            result: dict[str, Any] = json.loads(reply.body)
            return result

        assert s3_api("limit=500")["total"] == RUNS + 1
        failed = s3_api("status=Failed&limit=500")
        assert set(folders(failed)) == expected(lambda d: d["status"] == "Failed")
        assert folders(s3_api("q=batch011")) == [folder_of(11)]

        pages = []
        query = "limit=7&sort=name"
        while True:
            answer = s3_api(query)
            pages.append(folders(answer))
            if not answer["next"]:
                break
            assert urlsplit(answer["next"]).path == "/hub/kubemill/api/runs"
            query = urlsplit(answer["next"]).query
        seen = [folder for page in pages for folder in page]
        assert len(seen) == len(set(seen)) == RUNS + 1

        page = viewer.get("/hub/kubemill/runs?q=batch011")
        assert page.status == 200
        (link,) = [link for link in page.links() if "/view/" in link]
        assert link == f"/hub/kubemill/view/{folder_of(11)}/output.ipynb"
        assert viewer.get(link).status == 200
        assert "<script>alert" not in viewer.get("/hub/kubemill/runs").text

        write_s3(s3_admin, bucket, "runs/", [41])
        poll(
            lambda: viewer.get("/hub/kubemill/api/runs?q=batch041"),
            lambda r: r.status == 200 and json.loads(r.body)["total"] == 1,
            "run 41 in the index",
        )
        started = datetime.datetime.fromisoformat(s3_api("q=batch041")["runs"][0]["startTime"])
        assert started == datetime.datetime.fromisoformat(
            synthetic_run(41)["startTime"].replace("Z", "+00:00")
        )
