"""Acting on runs in a real browser (Debian's Chromium through Playwright) against the viewer
serving runs the real runner wrote to a real S3 server: search the runs view and open a run,
download it as .ipynb and as HTML, compare two runs, and build a re-run manifest (with and
without script). Screenshots go to out/screenshots/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from kubemill_testenv.s3server import S3Server
from tests.conftest import s3_client
from tests.integration.test_viewer_browser import browser, open_page, shoot
from tests.integration.test_viewer_runs import poll
from tests.integration.viewer_runs_s3 import Runs, serve_runs, write_runs
from tests.integration.viewer_server import LiveViewer

pytestmark = pytest.mark.integration

__all__ = ["browser"]  # the fixture, shared with the other browser tests


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
        poll(
            lambda: live.get("/api/runs"),
            lambda r: r.status == 200 and json.loads(r.body)["total"] == 4,
            "the four runs in the index",
        )
        yield live


def url(viewer: LiveViewer, path: str) -> str:
    return f"http://127.0.0.1:{viewer.port}{path}"


def manifest(page: Page) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load(page.locator("#km-manifest").inner_text())
    return found


def test_search_the_runs_open_one_and_download_it(
    browser: Browser, viewer: LiveViewer, runs: Runs
) -> None:
    page = open_page(browser, viewer)
    page.goto(url(viewer, "/runs"))
    expect(page.locator("tr.run")).to_have_count(4)
    shoot(page, "viewer-runs")

    page.get_by_label("Search").fill("daily")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/runs?*q=daily*")
    expect(page.locator("tr.run")).to_have_count(2)
    assert "2 runs" in page.locator("p.count").inner_text()

    page.get_by_role("link", name="daily-1", exact=True).click()
    page.wait_for_url(f"**/view/{runs.first}")
    assert "alpha=0.5" in page.locator(".km-cells").inner_text()

    with page.expect_download() as notebook:
        page.get_by_role("link", name="download .ipynb").click()
    assert notebook.value.suggested_filename == "output.ipynb"
    recorded = json.loads(Path(notebook.value.path()).read_text())["metadata"]["kubemill"]
    assert recorded["parameters"] == {"alpha": 0.5, "n": 4}

    with page.expect_download() as rendered:
        page.get_by_role("link", name="download HTML").click()
    assert rendered.value.suggested_filename == "daily-1.html"
    html = Path(rendered.value.path()).read_text()
    assert 'class="km-header"' in html and "alpha=0.5" in html
    page.context.close()


def test_compare_two_ticked_runs_and_go_to_a_differing_cell(
    browser: Browser, viewer: LiveViewer, runs: Runs
) -> None:
    page = open_page(browser, viewer)
    page.goto(url(viewer, "/runs?sort=name"))
    page.get_by_label("compare daily-1").check()
    page.get_by_label("compare daily-2").check()
    page.get_by_role("button", name="Compare the two ticked runs").click()
    page.wait_for_url("**/compare?*")
    expect(page.get_by_role("heading", name="Compare two runs")).to_be_visible()
    parameters = page.locator("table.km-compare-parameters")
    expect(parameters.get_by_role("row", name="alpha 0.5 0.7")).to_have_class("km-diff")
    expect(parameters.get_by_role("row", name="n 4 4")).to_have_class("km-same")
    differing = page.locator('tr.km-cell-pair[data-state="outputs differ"]')
    expect(differing).to_have_count(1)
    shoot(page, "viewer-compare")

    differing.get_by_role("link").first.click()
    page.wait_for_url(f"**/view/{runs.first}#km-cell-*")
    anchor = page.url.rsplit("#", 1)[1]
    assert "alpha=" in page.locator(f"#{anchor}").inner_text()
    page.context.close()


def test_the_re_run_form_builds_a_manifest_as_one_types(
    browser: Browser, viewer: LiveViewer, runs: Runs
) -> None:
    page = open_page(browser, viewer)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(url(viewer, f"/view/{runs.first}"))
    page.get_by_role("link", name="run again").click()
    page.wait_for_url(f"**/rerun/{runs.first}")
    assert manifest(page)["spec"]["parameters"] == {"alpha": 0.5, "n": 4}

    page.get_by_label("alpha").fill("0.9")
    expect(page.locator("#km-manifest")).to_contain_text('"alpha": 0.9')
    assert manifest(page)["spec"]["parameters"] == {"alpha": 0.9, "n": 4}
    page.get_by_label("flags").fill('["eu", "us"]')
    expect(page.locator("#km-manifest")).to_contain_text('- "us"')

    page.get_by_label("n", exact=True).fill("many")
    error = page.locator('[data-error-for="p.n"]')
    expect(error).to_be_visible()
    expect(error).to_have_text("'many' is not of the declared type int")
    expect(page.locator("#km-manifest")).to_have_text("")
    shoot(page, "viewer-rerun-error")

    page.get_by_label("n", exact=True).fill("12")
    expect(error).to_be_hidden()
    # Quoted: kubectl's YAML reader takes a bare n for false.
    expect(page.locator("#km-manifest")).to_contain_text('"n": 12')
    built = manifest(page)
    assert built["spec"]["parameters"] == {"alpha": 0.9, "n": 12, "flags": ["eu", "us"]}
    shoot(page, "viewer-rerun")

    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert yaml.safe_load(page.evaluate("navigator.clipboard.readText()")) == built
    page.context.close()


def test_the_re_run_form_works_without_script(
    browser: Browser, viewer: LiveViewer, runs: Runs
) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url(viewer, f"/rerun/{runs.first}"))
    expect(page.get_by_role("button", name="Copy")).to_be_hidden()  # it needs script
    page.get_by_label("region").fill("us")
    page.get_by_role("button", name="Build the manifest").click()
    page.wait_for_url("**p.region=us*")
    assert manifest(page)["spec"]["parameters"] == {"alpha": 0.5, "n": 4, "region": "us"}

    page.get_by_label("alpha").fill("fast")
    page.get_by_role("button", name="Build the manifest").click()
    page.wait_for_url("**p.alpha=fast*")
    expect(page.locator('[data-error-for="p.alpha"]')).to_have_text(
        "'fast' is not of the declared type float"
    )
    context.close()


#: Writes into its own frame what it could reach: it runs only when the frame is loaded.
SCRIPTED = (
    '<p id="probe">not run</p><script>document.getElementById("probe").textContent = '
    '"ran in origin " + window.origin;</script>'
)
#: Above render.OUTPUT_INLINE_LIMIT: the viewer's page loads it on demand.
BIG = '<p id="big">big output</p>' + "<!--" + "x" * 300_000 + "-->"


def test_the_downloaded_html_shows_scripted_and_big_outputs_opened_from_disk(
    browser: Browser, viewer: LiveViewer, runs: Runs, s3_server: S3Server, tmp_path: Path
) -> None:
    cells = [
        {"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": i + 1,
         "source": "display(HTML(x))",
         "outputs": [{"output_type": "display_data", "metadata": {}, "data": {"text/html": h}}]}
        for i, h in enumerate((SCRIPTED, BIG))
    ]  # fmt: skip
    notebook = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
    s3_client(s3_server).put_object(
        Bucket=runs.bucket, Key="runs/shared/scripted.ipynb", Body=json.dumps(notebook).encode()
    )
    page = open_page(browser, viewer)
    page.goto(url(viewer, "/view/shared/scripted.ipynb"))
    with page.expect_download() as rendered:
        page.get_by_role("link", name="download HTML").click()
    saved = tmp_path / rendered.value.suggested_filename
    rendered.value.save_as(saved)
    assert f"127.0.0.1:{viewer.port}" not in saved.read_text()  # nothing from the viewer

    page.goto(saved.as_uri())
    page.wait_for_load_state("load")
    frames = page.locator("iframe.km-frame")
    expect(frames).to_have_count(2)
    for index, (selector, text) in enumerate(
        (("#probe", "ran in origin null"), ("#big", "big output"))
    ):
        # An opaque origin ("null"): the file's own origin stays out of the output's reach.
        expect(frames.nth(index).content_frame.locator(selector)).to_have_text(text)
    shoot(page, "viewer-downloaded-html")
    page.context.close()
