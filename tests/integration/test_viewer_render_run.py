"""The viewer's page for notebooks the real runner executed: the metadata it reads is the
metadata `kubemill run` writes (the unit tests build that metadata by hand)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kubemill.runner.contract import ENV_RUN_IDENTITY
from kubemill.viewer.render import render_notebook
from tests.conftest import NOTEBOOKS, kubemill
from tests.unit.test_viewer_render import Page

pytestmark = pytest.mark.integration


def _jump_target(page: Page) -> dict[str, object]:
    (jump,) = [a for a in page.find("a") if a["attrs"].get("class") == "km-jump"]
    return page.by_id(jump["attrs"]["href"].removeprefix("#"))


def test_pages_of_real_runs_show_their_header_banner_and_timings(tmp_path: Path) -> None:
    identity = {
        ENV_RUN_IDENTITY["run"]: "daily-7",
        ENV_RUN_IDENTITY["namespace"]: "analytics",
        ENV_RUN_IDENTITY["job"]: "daily-7-x1",
    }
    args = ["-p", "alpha", "0.5"]
    ok = kubemill(["run", str(NOTEBOOKS / "params.ipynb"), f"{tmp_path}/ok/", *args], env=identity)
    assert ok.returncode == 0, ok.stderr
    failed = kubemill(["run", str(NOTEBOOKS / "fails.ipynb"), f"{tmp_path}/failed/"])
    assert failed.returncode == 10, failed.stderr
    early = kubemill(["run", str(NOTEBOOKS / "sysexit0.ipynb"), f"{tmp_path}/early/"])
    assert early.returncode == 0, early.stderr

    def page(run: str) -> tuple[str, Page]:
        data = (tmp_path / run / "output.ipynb").read_bytes()
        rendered = render_notebook(data, name=run, link=lambda url: f"/view{url}")
        return rendered.title, Page(rendered.body)

    title, shown = page("ok")
    assert title == "ok · Succeeded"
    header = shown.find("header")[0]["text"]
    digest = hashlib.sha256((NOTEBOOKS / "params.ipynb").read_bytes()).hexdigest()
    for expected in ("daily-7 in namespace analytics", "daily-7-x1", "alpha", "0.5", digest):
        assert expected in header, expected
    assert '"eu"' in header and "region" in header  # a recorded result
    (source,) = [a for a in shown.find("a") if "params.ipynb" in a["text"]]
    assert source["attrs"]["href"] == f"/view{NOTEBOOKS / 'params.ipynb'}"
    # Every code cell that ran carries its time; the header counts them.
    times = shown.with_class("km-time")
    assert len(times) == 3 and all(t["text"].endswith(("ms", "s")) for t in times)
    assert "3 cells" in header

    title, shown = page("failed")
    assert title == "failed · Failed"
    (banner,) = shown.with_class("km-banner")
    assert "Execution failed: CellError" in banner["text"] and "KeyError" in banner["text"]
    target = _jump_target(shown)
    assert "raise KeyError" in str(target["text"])
    # The runner's own banner and anchor cells are replaced by the header, not repeated.
    assert "The run stopped in the next cell" not in shown.text()

    title, shown = page("early")
    assert title == "early · Succeeded"
    (banner,) = shown.with_class("km-banner-early")
    assert "SystemExit 0" in banner["text"]
    assert "sys.exit(0)" in str(_jump_target(shown)["text"])
    assert "not run" in shown.text()
