"""The viewer in a real browser: Debian's Chromium, driven by Playwright, against `kubemill
view`'s app serving run folders the real runner wrote.

What a person does: open a folder, open a failed run's notebook, follow the failure banner to
the failing cell, hide the code, download the notebook; and what a notebook must not do: read
the viewer's cookies or call its API from an output's script. Screenshots go to
out/screenshots/ (the README shows one).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from kubemill.viewer.settings import ViewerSettings
from kubemill_testenv.debian import chromium
from tests.integration.viewer_server import LiveViewer, live_viewer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "tests" / "notebooks"
SHOTS = ROOT / "out" / "screenshots"

# What an output's script tries, each recorded on the frame's own body for the test to read.
PROBE = """
<div id="probe">probing</div>
<script>
const results = {};
try { results.cookie = document.cookie; } catch (e) { results.cookie = "blocked: " + e.name; }
try { results.storage = String(localStorage.length); }
catch (e) { results.storage = "blocked: " + e.name; }
fetch("/api/contents/", {credentials: "include"})
  .then(r => r.text().then(t => { results.api = "read " + t.length + " bytes"; }))
  .catch(e => { results.api = "blocked: " + e.name; })
  .finally(() => { document.body.dataset.results = JSON.stringify(results); });
</script>
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium(),
            # This machine's network is closed: Chromium's background connections would fail.
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of run folders as kubemill writes them: a failed run, and a notebook whose
    output carries a script."""
    root = tmp_path_factory.mktemp("runs")
    subprocess.run(
        [sys.executable, "-m", "kubemill", "run", str(NOTEBOOKS / "fails.ipynb"),
         str(root / "team" / "failed") + "/"],
        capture_output=True, check=False, timeout=180,
    )  # fmt: skip
    assert (root / "team" / "failed" / "output.ipynb").is_file()
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("display(HTML(probe))", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("display_data", {"text/html": PROBE})]
    nb.cells = [cell]
    (root / "team" / "scripted").mkdir(parents=True)
    nbformat.write(nb, str(root / "team" / "scripted" / "output.ipynb"))
    return root


@pytest.fixture(scope="module")
def viewer(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveViewer]:
    settings = ViewerSettings(root=str(runs), cache_dir=tmp_path_factory.mktemp("cache"), port=0)
    with live_viewer(settings) as live:
        yield live


def open_page(browser: Browser, viewer: LiveViewer) -> Page:
    context = browser.new_context(accept_downloads=True)
    base = f"http://127.0.0.1:{viewer.port}"
    context.add_cookies([{"name": "session", "value": "secret-session", "url": base}])
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_person_finds_a_failed_run_follows_the_banner_and_hides_the_code(
    browser: Browser, viewer: LiveViewer
) -> None:
    page = open_page(browser, viewer)
    page.goto(f"http://127.0.0.1:{viewer.port}/tree/team/failed/")
    page.get_by_role("link", name="output.ipynb").first.click()
    page.wait_for_url("**/view/team/failed/output.ipynb")
    banner = page.get_by_role("alert")
    assert "KeyError" in banner.inner_text()
    shoot(page, "viewer-failed-run")

    banner.get_by_role("link", name="Go to the failing cell.").click()
    page.wait_for_url("**#km-cell-*")
    anchor = page.url.rsplit("#", 1)[1]
    failing = page.locator(f"#{anchor}")
    assert "raise KeyError" in failing.inner_text()
    assert failing.evaluate("e => e.getBoundingClientRect().top < window.innerHeight")

    code = failing.locator(".km-input")
    assert code.is_visible()
    page.get_by_text("Hide code").click()
    assert code.is_hidden()
    assert failing.locator(".km-outputs").is_visible()  # the traceback stays

    with page.expect_download() as download:
        page.get_by_role("link", name="download .ipynb").click()
    assert download.value.suggested_filename == "output.ipynb"
    saved = download.value.path()
    failure = json.loads(Path(saved).read_text())["metadata"]["kubemill"]["failure"]
    assert failure["ename"] == "KeyError"
    page.context.close()


def test_an_outputs_script_runs_but_cannot_read_cookies_or_call_the_api(
    browser: Browser, viewer: LiveViewer
) -> None:
    page = open_page(browser, viewer)
    page.goto(f"http://127.0.0.1:{viewer.port}/view/team/scripted/output.ipynb")
    assert "secret-session" in page.evaluate("document.cookie")  # the page itself has it
    frame = next(f for f in _frames(page) if "output=" in f.url)
    frame.wait_for_function("document.body.dataset.results !== undefined")
    results: dict[str, Any] = json.loads(frame.evaluate("document.body.dataset.results"))
    shoot(page, "viewer-sandboxed-output")
    assert results["cookie"].startswith("blocked: "), results
    assert results["storage"].startswith("blocked: "), results
    assert results["api"].startswith("blocked: "), results
    page.context.close()


def _frames(page: Page) -> list[Any]:
    page.wait_for_function("document.querySelectorAll('iframe').length > 0")
    page.wait_for_load_state("load")
    return page.frames
