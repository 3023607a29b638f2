"""The viewer's actions over HTTP, against runs the real runner wrote to a real S3 server: the
re-run form and its manifest, the comparison of two runs, the HTML download, and their 400s
and 404s."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jsonschema
import pytest
import yaml

from kubemill.viewer.settings import ViewerSettings
from kubemill_testenv.s3server import S3Server
from tests.conftest import s3_client
from tests.integration.test_viewer_runs import poll
from tests.integration.viewer_runs_s3 import HOSTILE, Runs, serve_runs, write_runs
from tests.integration.viewer_server import LiveViewer, Reply, live_viewer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(s3_server: S3Server) -> Runs:
    return write_runs(s3_server)


@pytest.fixture(scope="module")
def viewer(
    s3_server: S3Server, runs: Runs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveViewer]:
    with (
        pytest.MonkeyPatch.context() as patch,
        serve_runs(s3_server, runs, tmp_path_factory.mktemp("cache"), patch) as live,
    ):
        yield live


def manifest_of(reply: Reply) -> dict[str, Any]:
    found = re.search(r'<pre id="km-manifest" class="km-manifest">(.*?)</pre>', reply.text, re.S)
    assert found is not None, reply.text[-2000:]
    manifest: dict[str, Any] = yaml.safe_load(unescape(found.group(1)))
    return manifest


def crd_schema() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "crds" / "kubemill.dev_notebookruns.yaml").read_text())
    schema: dict[str, Any] = document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def query(**values: str) -> str:
    return "?" + urlencode({k.replace("__", "."): v for k, v in values.items()}, quote_via=quote)


# --- run again ------------------------------------------------------------------------------


def test_the_re_run_form_is_prefilled_from_the_run(viewer: LiveViewer, runs: Runs) -> None:
    reply = viewer.get(f"/rerun/{runs.first}")
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/html")
    manifest = manifest_of(reply)
    assert manifest["kind"] == "NotebookRun"
    assert re.fullmatch(r"daily-1-[a-z0-9]{5}", manifest["metadata"]["name"])
    assert manifest["metadata"]["namespace"] == "team"
    assert manifest["spec"] == {
        "notebook": runs.params_uri,
        "output": f"s3://{runs.bucket}/runs/",
        "parameters": {"alpha": 0.5, "n": 4},
    }
    jsonschema.validate(manifest, crd_schema())
    # Every declared parameter has its field, with its type.
    for name, kind in (("alpha", "float"), ("region", "str"), ("flags", "list"), ("n", "int")):
        assert f'data-param="{name}"' in reply.text
        assert f"<code>{kind}</code>" in reply.text
    assert "kubectl apply -f run.yaml" in reply.text


def test_edited_values_give_another_manifest_without_script(viewer: LiveViewer, runs: Runs) -> None:
    form = {
        "name": "daily-again",
        "namespace": "team",
        "notebook": runs.params_uri,
        "output": "",
        "image": "",
        "p__alpha": "0.25",
        "p__n": "9",
        "p__flags": '["a", "b"]',
        "p__region": "3",
    }
    reply = viewer.get(f"/rerun/{runs.first}" + query(**form))
    assert reply.status == 200, reply.text
    manifest = manifest_of(reply)
    assert manifest["metadata"]["name"] == "daily-again"
    assert manifest["spec"]["parameters"] == {"alpha": 0.25, "n": 9, "flags": ["a", "b"],
                                              "region": "3"}  # fmt: skip
    jsonschema.validate(manifest, crd_schema())

    answer = json.loads(viewer.get(f"/api/rerun/{runs.first}" + query(**form)).body)
    assert yaml.safe_load(answer["yaml"]) == manifest


def test_a_bad_value_is_a_400_naming_it_beside_its_field(viewer: LiveViewer, runs: Runs) -> None:
    form = {"name": "x", "notebook": runs.params_uri, "p__n": "many", "p__alpha": "fast"}
    reply = viewer.get(f"/rerun/{runs.first}" + query(**form))
    assert reply.status == 400
    assert "&#x27;many&#x27; is not of the declared type int" in reply.text
    assert "&#x27;fast&#x27; is not of the declared type float" in reply.text
    assert '<pre id="km-manifest" class="km-manifest"></pre>' in reply.text
    answer = json.loads(viewer.get(f"/api/rerun/{runs.first}" + query(**form)).body)
    assert answer["valid"] is False and set(answer["errors"]) == {"p.n", "p.alpha"}


def test_a_hostile_parameter_value_is_text_on_every_page(viewer: LiveViewer, runs: Runs) -> None:
    for path in (
        f"/rerun/{runs.hostile}",
        f"/compare?a={quote(runs.hostile)}&b={quote(runs.first)}",
        f"/html/{runs.hostile}",
        f"/view/{runs.hostile}",
    ):
        reply = viewer.get(path)
        assert reply.status == 200, (path, reply.text)
        assert HOSTILE not in reply.text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in reply.text, path
    manifest = manifest_of(viewer.get(f"/rerun/{runs.hostile}"))
    assert manifest["spec"]["parameters"]["region"] == HOSTILE  # the value, intact


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/rerun/team/missing/output.ipynb", 404),
        ("/rerun/team/daily-1/run.json", 404),
        ("/rerun/team/%2E%2E/x.ipynb", 400),
        ("/api/rerun/team/missing/output.ipynb", 404),
        ("/html/team/missing/output.ipynb", 404),
        ("/html/team/daily-1/run.json", 404),
        ("/compare", 400),
        ("/compare?b=team/daily-1", 400),
        ("/compare?a=team/daily-1&a=team/daily-2&b=x", 400),
        ("/compare?run=team/daily-1/output.ipynb", 400),
        ("/compare?a=team/daily-1&b=team/missing", 404),
        ("/compare?a=team/missing", 404),
        ("/compare?a=../x&b=team/daily-1", 400),
    ],
)
def test_missing_and_bad_requests(viewer: LiveViewer, path: str, status: int) -> None:
    reply = viewer.get(path)
    assert reply.status == status, reply.text
    if path.startswith("/api/"):
        assert "message" in json.loads(reply.body)


def test_actions_are_read_only(viewer: LiveViewer, runs: Runs) -> None:
    for path in (f"/rerun/{runs.first}", "/compare", f"/api/rerun/{runs.first}"):
        assert viewer.request("POST", path).status == 405


# --- compare --------------------------------------------------------------------------------


def test_two_runs_of_one_notebook_side_by_side(viewer: LiveViewer, runs: Runs) -> None:
    # Run folders stand for their output notebooks.
    reply = viewer.get(f"/compare?a=team/daily-1&b={quote(runs.second)}")
    assert reply.status == 200, reply.text
    text = reply.text
    assert "(1 of 2 differ)" in text  # parameters: alpha
    assert '<tr class="km-diff"><th>alpha</th>' in text
    # params.ipynb prints alpha: that cell's output differs, the rest do not.
    rows = re.findall(r'<tr class="km-cell-pair (km-\w+)" data-state="([^"]*)">(.*?)</tr>', text)
    differing = [row for row in rows if row[1].startswith("outputs differ")]
    assert len(differing) == 1
    assert "<code>import kubemill</code>" in differing[0][2]  # the cell that prints alpha
    assert f'href="/view/{runs.first}#km-cell-' in differing[0][2]
    assert f'href="/view/{runs.second}#km-cell-' in differing[0][2]


def test_runs_of_different_notebooks_are_refused(viewer: LiveViewer, runs: Runs) -> None:
    reply = viewer.get(f"/compare?a={quote(runs.first)}&b={quote(runs.other)}")
    assert reply.status == 400
    assert "only runs of the same notebook are compared" in reply.text
    assert runs.fails_uri in reply.text


def test_a_run_alone_offers_its_sibling_runs(
    viewer: LiveViewer, runs: Runs, s3_server: S3Server
) -> None:
    # A sibling folder without an output.ipynb: comparing with it could only be a 404.
    s3_client(s3_server).put_object(Bucket=runs.bucket, Key="runs/team/notes/a.txt", Body=b"x")
    poll(lambda: viewer.get("/tree/team/"), lambda r: "notes/" in r.text, "the notes folder")
    reply = viewer.get(f"/compare?a={quote(runs.first)}")
    assert reply.status == 200
    options = re.findall(r'<option value="([^"]*)">', reply.text)
    assert sorted(options) == sorted([runs.second, runs.hostile, runs.other])


def test_a_run_compared_with_itself_is_refused(viewer: LiveViewer, runs: Runs) -> None:
    reply = viewer.get(f"/compare?a=team/daily-1&b={quote(runs.first)}")
    assert reply.status == 400
    assert f"{runs.first} would be compared with itself" in reply.text


def test_the_runs_view_sends_two_ticked_runs_to_compare(viewer: LiveViewer, runs: Runs) -> None:
    page = poll(
        lambda: viewer.get("/runs"),
        lambda r: r.status == 200 and r.text.count('name="run"') == 4,
        "the four runs in the runs view",
    )
    assert '<form id="km-compare" method="get" action="/compare">' in page.text
    assert f'value="{runs.first}" form="km-compare"' in page.text
    reply = viewer.get(f"/compare?run={quote(runs.first)}&run={quote(runs.second)}")
    assert reply.status == 200 and "Compare two runs" in reply.text


# --- the notebook page and the HTML download ----------------------------------------------------


def test_the_notebook_page_links_to_the_actions(viewer: LiveViewer, runs: Runs) -> None:
    links = viewer.get(f"/view/{runs.first}").links()
    assert f"/files/{runs.first}" in links
    assert f"/html/{runs.first}" in links
    assert f"/rerun/{runs.first}" in links
    assert f"/compare?a={quote(runs.first, safe='')}" in links


def test_the_html_download_is_the_rendered_page_as_a_file(viewer: LiveViewer, runs: Runs) -> None:
    reply = viewer.get(f"/html/{runs.first}")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.headers["Content-Disposition"].startswith('attachment; filename="daily-1.html"')
    assert 'class="km-header"' in reply.text and "alpha=0.5" in reply.text
    # Opened from disk, it needs nothing from the viewer: the script is inline, outputs too.
    assert "/static/viewer.js" not in reply.text and "?output=" not in reply.text
    assert "kubemillFrameHeight" in reply.text


def test_every_action_honours_the_base_path(
    s3_server: S3Server, runs: Runs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_runs(s3_server, runs, tmp_path / "cache", monkeypatch, base_path="/hub/km") as live:
        links = live.get(f"/hub/km/view/{runs.first}").links()
        assert f"/hub/km/html/{runs.first}" in links and f"/hub/km/rerun/{runs.first}" in links
        page = live.get(f"/hub/km/rerun/{runs.first}")
        assert page.status == 200
        assert f'action="/hub/km/rerun/{runs.first}" data-api="/hub/km/api/rerun/' in page.text
        assert 'src="/hub/km/static/actions.js"' in page.text
        assert live.get("/hub/km/static/actions.js").status == 200
        assert live.get(f"/hub/km/api/rerun/{runs.first}").status == 200
        compared = live.get(f"/hub/km/compare?a={quote(runs.first)}&b={quote(runs.second)}")
        assert compared.status == 200
        assert f"/hub/km/view/{runs.second}" in compared.links()
        assert live.get(f"/hub/km/html/{runs.first}").status == 200
        assert live.get(f"/rerun/{runs.first}").status == 404


# --- with authentication ------------------------------------------------------------------------


class Reviews:
    """The API server's answers from a table: ada may get notebookruns in team-a only."""

    def create(self, kind: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        spec = body["spec"]
        if kind == "TokenReview":
            user = {"t-ada": "ada"}.get(spec["token"], "")
            return {"status": {"authenticated": bool(user), "user": {"username": user}}}
        namespace = spec["resourceAttributes"]["namespace"]
        return {"status": {"allowed": (spec["user"], namespace) == ("ada", "team-a")}}


def test_compare_reads_only_runs_one_may_read(tmp_path: Path) -> None:
    """/compare names its notebooks in the query, where the app's path check does not look:
    both, and the picker's choices, are checked like any path."""
    for namespace, name in (("team-a", "one"), ("team-a", "two"), ("team-b", "secret")):
        folder = tmp_path / "runs" / namespace / name
        folder.mkdir(parents=True)
        identity = {"name": name, "namespace": namespace}
        (folder / "run.json").write_text(json.dumps({"status": "Succeeded", "identity": identity}))
        nb = {"nbformat": 4, "nbformat_minor": 5, "cells": [],
              "metadata": {"kubemill": {"input": {"uri": "s3://nb/x.ipynb"}}}}  # fmt: skip
        (folder / "output.ipynb").write_text(json.dumps(nb))
    settings = ViewerSettings(
        root=str(tmp_path / "runs"), cache_dir=tmp_path / "cache", auth_modes=("token",),
        refresh_seconds=3600, namespace_from_path=True,
    )  # fmt: skip
    ada = {"Authorization": "Bearer t-ada"}
    with live_viewer(settings, reviews=Reviews()) as live:
        poll(lambda: live.get("/api/runs", ada), lambda r: r.status != 503, "the runs index")
        assert live.get("/compare?a=team-a/one&b=team-a/two", ada).status == 200
        for query in ("a=team-a/one&b=team-b/secret", "a=team-b/secret&b=team-a/one",
                      "a=team-b/secret", "a=team-b/nothing&b=team-a/one"):  # fmt: skip
            reply = live.get(f"/compare?{query}", ada)
            assert reply.status == 403, (query, reply.status, reply.text)
            assert "secret</" not in reply.text
        picker = live.get("/compare?a=team-a/one", ada)
        assert re.findall(r'<option value="([^"]*)">', picker.text) == ["team-a/two/output.ipynb"]
        assert live.get("/compare?a=team-a/one&b=team-a/two").status == 401
