"""kubemill.viewer.render: the run header, hidden cells, broken outputs, sandboxing, big notebooks.

Notebooks are built here with nbformat, with `metadata.kubemill` shaped as the runner writes it
(tests/integration/test_viewer_render_run.py checks that shape against a real run), plus a real
papermill output from tests/notebooks/. Pages are read back with html.parser, never with
regular expressions, so an escaping mistake shows up as a tag where text was expected.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import struct
import time
import zlib
from collections.abc import Callable, Mapping
from html.parser import HTMLParser
from typing import Any, ClassVar

import nbformat
import pytest
from nbformat.v4 import (
    new_code_cell,
    new_markdown_cell,
    new_notebook,
    new_output,
    new_raw_cell,
)

from kubemill.viewer.render import (
    OUTPUT_INLINE_LIMIT,
    OutputNotFound,
    Rendered,
    render_notebook,
    render_output,
)
from kubemill.viewer.render_assets import FRAME_SCRIPT, FRAME_SCRIPT_CSP_HASH, VIEWER_JS
from tests.conftest import NOTEBOOKS

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
NASTY = "</iframe></pre></div><script>alert('x')</script>\"' onload=\"alert(1)\" &amp;"
#: HTML that would escape a frame's srcdoc attribute if it were not escaped; nothing scripted.
BREAKOUT = '"\'></iframe></div><b class="x">bold</b> &quot;'


class Page(HTMLParser):
    """Every element of a page, with its attributes, the text inside it, and its ancestors."""

    VOID: ClassVar[set[str]] = {"input", "img", "br", "hr", "meta", "link", "col"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self.stack: list[dict[str, Any]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = {
            "tag": tag,
            "attrs": dict(attrs),
            "text": "",
            "ancestors": list(self.stack),
        }
        self.elements.append(element)
        if tag not in self.VOID:
            self.stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.stack) - 1, -1, -1):
            if self.stack[depth]["tag"] == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element["text"] += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, Any]]:
        return [
            e
            for e in self.elements
            if e["tag"] == tag and all(e["attrs"].get(k) == v for k, v in attrs.items())
        ]

    def by_id(self, ident: str) -> dict[str, Any]:
        found = [e for e in self.elements if e["attrs"].get("id") == ident]
        assert len(found) == 1, f"{len(found)} elements with id {ident!r}"
        return found[0]

    def with_class(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.elements if name in (e["attrs"].get("class") or "").split()]

    def text(self) -> str:
        return "".join(e["text"] for e in self.elements if not e["ancestors"])


def render(nb: Any, link: Callable[[str], str | None] | None = None) -> tuple[Rendered, Page]:
    data = nbformat.writes(nb).encode() if not isinstance(nb, bytes) else nb
    rendered = render_notebook(data, name="report.ipynb", link=link or (lambda url: None))
    return rendered, Page(rendered.body)


def kubemill_metadata(**extra: Any) -> dict[str, Any]:
    """`metadata.kubemill` as `runner/run.py` writes it for a run in a cluster."""
    meta: dict[str, Any] = {
        "kubemillVersion": "0.1.0",
        "status": "Succeeded",
        "input": {
            "uri": "s3://notebooks/reports/daily.ipynb",
            "sha256": "ab" * 32,
            "etag": '"etag-1"',
            "versionId": "v7",
        },
        "output": "s3://results/analytics/daily-1/output.ipynb",
        "parameters": {"region": "eu", "alpha": 0.1},
        "secretParameters": {"db_password": {"fromEnv": "KUBEMILL_SECRET_0"}},
        "kernel": {
            "name": "python3",
            "language": "python",
            "languageVersion": "3.11.7",
            "implementation": "ipython",
        },
        "runner": {"python": "3.11.7", "platform": "Linux"},
        "startTime": "2026-11-29T10:00:00.000Z",
        "durationSeconds": 125.5,
        "checkpoints": 2,
        "endTime": "2026-11-29T10:02:05.500Z",
        "identity": {
            "run": "daily-1",
            "runUid": "uid-1",
            "namespace": "analytics",
            "pod": "daily-1-abc-xyz",
            "node": "node-1",
            "job": "daily-1-abc",
        },
        "upstream": [
            {
                "name": "etl-7",
                "namespace": "analytics",
                "uid": "uid-0",
                "outputUrl": "s3://results/analytics/etl-7/output.ipynb",
                "parameters": ["table"],
                "resultsUrl": "s3://results/analytics/etl-7/results.json",
                "resultsSha256": "cd" * 32,
            }
        ],
        "results": {"rows": 1204, "accuracy": 0.93},
    }
    meta.update(extra)
    return meta


def timed(cell: Any, seconds: float, status: str = "ok") -> Any:
    cell.metadata["kubemill"] = {
        "startTime": "2026-11-29T10:00:01.000Z",
        "durationSeconds": seconds,
        "status": status,
    }
    return cell


def run_notebook(meta: dict[str, Any], cells: list[Any]) -> Any:
    nb = new_notebook(cells=cells)
    nb.metadata["kubemill"] = meta
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    return nb


def store_link(url: str) -> str | None:
    return "/view/" + url.removeprefix("s3://") if url.startswith("s3://results/") else None


# --- the header -------------------------------------------------------------------------------


def test_succeeded_run_header_shows_parameters_results_lineage_and_timings() -> None:
    cells = [
        timed(new_code_cell("alpha = 0.1", execution_count=1), 0.02),
        timed(new_code_cell("train()", execution_count=2), 98.5),
    ]
    rendered, page = render(run_notebook(kubemill_metadata(), cells), store_link)
    assert rendered.title == "report.ipynb · Succeeded"
    header = page.find("header")[0]["text"]
    for expected in (
        "Succeeded",
        "daily-1 in namespace analytics",
        "daily-1-abc",  # the Job
        "2m 06s",  # the duration
        "python3 (python 3.11.7)",
        "region",
        '"eu"',
        "accuracy",
        "0.93",
        "1204",
        "db_password (from $KUBEMILL_SECRET_0)",
        "s3://notebooks/reports/daily.ipynb",
        "ab" * 32,
        "v7",
        "etl-7",
        "cd" * 32,
        "2 cells",
    ):
        assert expected in header, expected
    # Upstream outputs in the viewed store are links; the input notebook's bucket is not.
    hrefs = [a["attrs"]["href"] for a in page.find("a")]
    assert "/view/results/analytics/etl-7/output.ipynb" in hrefs
    assert "/view/results/analytics/etl-7/results.json" in hrefs
    assert not any("notebooks/reports" in href for href in hrefs)
    # Per-cell timings sit on each cell, and the slowest cell leads the header's table.
    assert "98.50 s" in page.by_id("km-cell-1")["text"]
    timing_rows = page.find("tr")
    assert "In [2]" in timing_rows[-2]["text"] and "In [1]" in timing_rows[-1]["text"]
    assert not page.with_class("km-banner")


def test_failed_run_banner_links_to_the_failing_cell() -> None:
    # As the runner saves a failed run: its banner on top, its anchor above the failing cell.
    banner = new_markdown_cell('<span style="color:red">Execution failed: CellError</span>')
    banner.metadata["tags"] = ["kubemill-banner"]
    anchor = new_markdown_cell('<span id="kubemill-failed-cell">The run stopped here</span>')
    anchor.metadata["tags"] = ["kubemill-error-anchor"]
    failing = timed(new_code_cell("raise KeyError('x')", execution_count=2), 0.1, "error")
    failing.outputs = [
        new_output(
            "error",
            ename="KeyError",
            evalue="'x'",
            traceback=["\x1b[0;31mKeyError\x1b[0m: 'x'"],
        )
    ]
    cells = [
        banner,
        timed(new_code_cell("x = 1", execution_count=1), 0.01),
        anchor,
        failing,
        new_code_cell("print('never runs')"),
    ]
    failure = {
        "reason": "CellError",
        "message": "cell In [2] raised KeyError: 'x'",
        "cell": 3,
        "cellId": failing.id,
        "executionCount": 2,
        "ename": "KeyError",
        "evalue": "'x'",
        "traceback": "KeyError: 'x'",
    }
    meta = kubemill_metadata(status="Failed", failure=failure, results={})
    rendered, page = render(run_notebook(meta, cells))
    assert rendered.title == "report.ipynb · Failed"
    (shown,) = page.with_class("km-banner")
    assert "Execution failed: CellError" in shown["text"]
    assert "cell In [2] raised KeyError: 'x'" in shown["text"]
    (jump,) = [a for a in page.find("a") if a["attrs"].get("class") == "km-jump"]
    target = page.by_id(jump["attrs"]["href"].removeprefix("#"))
    assert "raise KeyError" in target["text"]
    assert "km-failed" in target["attrs"]["class"]
    assert page.by_id("kubemill-failed-cell")["ancestors"][-1] is target
    # The traceback keeps its colours as classes, not as escape codes.
    (red,) = page.with_class("ansi-red-fg")
    assert red["text"] == "KeyError"
    # The runner's own banner and anchor cells give way to the header.
    assert "The run stopped here" not in page.text()
    assert "error" in page.with_class("km-time-error")[0]["text"]


def test_failed_cell_found_by_index_when_its_id_is_gone() -> None:
    cells = [new_code_cell("ok()"), new_code_cell("boom()")]
    failure = {"reason": "CellTimeout", "message": "too slow", "cell": 1, "cellId": "gone"}
    _, page = render(run_notebook(kubemill_metadata(status="Failed", failure=failure), cells))
    (jump,) = [a for a in page.find("a") if a["attrs"].get("class") == "km-jump"]
    assert "boom()" in page.by_id(jump["attrs"]["href"][1:])["text"]


def test_failure_without_a_cell_shows_the_traceback_and_no_link() -> None:
    failure = {"reason": "KernelDied", "message": "the kernel died", "traceback": "Boom<tb>"}
    meta = kubemill_metadata(status="Failed", failure=failure)
    _, page = render(run_notebook(meta, [new_code_cell("x")]))
    (shown,) = page.with_class("km-banner")
    assert "Execution failed: KernelDied" in shown["text"] and "Boom<tb>" in shown["text"]
    assert not [a for a in page.find("a") if a["attrs"].get("class") == "km-jump"]


def test_early_exit_says_so_and_marks_the_skipped_cells() -> None:
    exiting = timed(new_code_cell("sys.exit(0)", execution_count=2), 0.1, "exited")
    skipped = new_code_cell("print('later')")
    skipped.metadata["kubemill"] = {"status": "skipped"}
    early = {
        "cell": 1,
        "cellId": exiting.id,
        "executionCount": 2,
        "code": 0,
        "skippedCells": 1,
        "message": "the notebook stopped early at cell In [2] (SystemExit 0)",
    }
    cells = [timed(new_code_cell("import sys", execution_count=1), 0.01), exiting, skipped]
    _, page = render(run_notebook(kubemill_metadata(earlyExit=early), cells))
    (shown,) = page.with_class("km-banner-early")
    assert "Succeeded: stopped early" in shown["text"]
    assert "(SystemExit 0)" in shown["text"] and "1 code cell(s) after it" in shown["text"]
    (jump,) = [a for a in page.find("a") if a["attrs"].get("class") == "km-jump"]
    assert "sys.exit(0)" in page.by_id(jump["attrs"]["href"][1:])["text"]
    assert "not run" in page.by_id("km-cell-2")["text"]
    assert "exited" in page.by_id("km-cell-1")["text"]


def test_a_checkpoint_says_the_run_is_in_progress() -> None:
    meta = kubemill_metadata(status="Running", results={})
    rendered, page = render(run_notebook(meta, [new_code_cell("x")]))
    assert rendered.title.endswith("Running")
    assert "still in progress" in page.with_class("km-banner-running")[0]["text"]


@pytest.mark.parametrize(
    "meta",
    [
        {"status": 3, "failure": "not an object", "parameters": [1, 2], "identity": "x"},
        {"upstream": [None, "text", {"outputUrl": 5}], "input": [], "earlyExit": {"cell": -9}},
        {"results": {"x": float("nan")}, "durationSeconds": "long", "kernel": None},
        {"durationSeconds": float("inf"), "earlyExit": {"skippedCells": 10**400}},
        # Markup where a number belongs is not a number: nothing of it reaches the page.
        {"earlyExit": {"message": "m", "skippedCells": '<meta http-equiv="refresh" id="bad">'}},
    ],
)
def test_malformed_run_metadata_still_renders_the_cells(meta: dict[str, Any]) -> None:
    cell = new_code_cell("visible_source()")
    cell.metadata["kubemill"] = {"durationSeconds": float("inf")}
    nb = run_notebook(meta, [cell])
    data = json.dumps(nb).encode()  # nbformat.writes would refuse NaN
    _, page = render(data)
    assert "visible_source" in page.text()
    assert not page.find("meta")


def test_a_notebook_without_kubemill_metadata_has_no_run_header() -> None:
    nb = new_notebook(cells=[new_markdown_cell("# Plain"), new_code_cell("1 + 1")])
    rendered, page = render(nb)
    assert rendered.title == "report.ipynb"
    assert not page.with_class("km-banner") and not page.find("dl")
    assert page.find("h1")[0]["text"].startswith("report.ipynb")


def test_a_papermill_report_mode_output_renders_with_its_error_link_and_hidden_code() -> None:
    data = (NOTEBOOKS / "papermill_report_failed.ipynb").read_bytes()
    rendered, page = render(data)
    assert rendered.title == "report.ipynb"
    # papermill's own error banner links to its anchor, which survives sanitizing.
    links = [a for a in page.find("a") if a["attrs"].get("href") == "#papermill-error-cell"]
    assert links
    assert "encountered an exception" in page.by_id("papermill-error-cell")["text"]
    assert "papermill-boom" in page.text()
    # Report mode: every code cell's source is inside a closed "hidden" box, outputs are not.
    sources = [e for e in page.with_class("highlight")]
    assert sources
    for source in sources:
        hidden_by = [a for a in source["ancestors"] if "km-hidden" in a["attrs"].get("class", "")]
        assert hidden_by and hidden_by[0]["tag"] == "details"
        assert "open" not in hidden_by[0]["attrs"]
    assert "SECRET-SOURCE-MARKER 5" in page.with_class("km-stdout")[0]["text"]
    # Timings from nbclient's and papermill's cell metadata; the unrun cell says so.
    assert "not run" in page.text()
    # TeX stays as text: no MathJax, nothing fetched.
    assert "$e^{i\\pi} = -1$" in page.text()


# --- hidden cells and the code toggle ---------------------------------------------------------


def _cell_with(source: str, *, tags: list[str] | None = None, **meta: Any) -> Any:
    cell = new_code_cell(source, execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text=f"out-of-{source}")]
    cell.metadata.update(meta)
    if tags:
        cell.metadata["tags"] = tags
    return cell


def _closed(element: dict[str, Any]) -> bool:
    return any(a["tag"] == "details" and "open" not in a["attrs"] for a in element["ancestors"])


def _source_hidden(page: Page, source: str) -> bool:
    (shown,) = [e for e in page.with_class("highlight") if e["text"].strip() == source]
    return _closed(shown)


def _output_hidden(page: Page, source: str) -> bool:
    (shown,) = [e for e in page.with_class("km-stdout") if e["text"] == f"out-of-{source}"]
    return _closed(shown)


def test_cells_hidden_or_removed_by_metadata_and_tags_stay_hidden() -> None:
    nb = new_notebook(
        cells=[
            _cell_with("shown"),
            _cell_with("srchidden", jupyter={"source_hidden": True}),
            _cell_with("outhidden", jupyter={"outputs_hidden": True}),
            _cell_with("hideinputext", hide_input=True),
            _cell_with("tagremovecell", tags=["remove_cell"]),
            _cell_with("tagremovecell2", tags=["remove-cell"]),
            _cell_with("tagremoveinput", tags=["remove-input"]),
            _cell_with("tagremoveoutput", tags=["remove_output"]),
            _cell_with("taghideinput", tags=["hide-input"]),
            _cell_with("taghideoutput", tags=["hide-output"]),
        ]
    )
    _, page = render(nb)
    text = page.text()
    assert not _source_hidden(page, "shown") and not _output_hidden(page, "shown")
    assert _source_hidden(page, "srchidden") and not _output_hidden(page, "srchidden")
    assert _output_hidden(page, "outhidden") and not _source_hidden(page, "outhidden")
    assert _source_hidden(page, "hideinputext")
    assert "tagremovecell" not in text  # neither source nor output
    assert not [e for e in page.with_class("highlight") if "tagremoveinput" in e["text"]]
    assert not _output_hidden(page, "tagremoveinput")
    assert not _source_hidden(page, "tagremoveoutput") and "out-of-tagremoveoutput" not in text
    assert _source_hidden(page, "taghideinput") and not _output_hidden(page, "taghideinput")
    assert _output_hidden(page, "taghideoutput") and not _source_hidden(page, "taghideoutput")


def test_the_code_toggle_is_a_checkbox_before_the_cells_and_a_css_rule() -> None:
    rendered, page = render(new_notebook(cells=[new_code_cell("x = 1")]))
    (box,) = page.find("input", type="checkbox")
    (label,) = page.find("label")
    assert label["attrs"]["for"] == box["attrs"]["id"]
    cells = page.with_class("km-cells")[0]
    assert page.elements.index(box) < page.elements.index(cells)
    assert box["ancestors"] == cells["ancestors"]  # siblings: the ~ selector reaches the cells
    assert ".km-toggle:checked ~ .km-cells .km-input{display:none}" in rendered.head
    assert page.with_class("km-input")


# --- broken outputs -----------------------------------------------------------------------------


def _display(data: Any, metadata: Mapping[str, Any] | None = None) -> Any:
    # Not new_output: it validates, and some of these outputs are broken on purpose.
    return nbformat.from_dict(
        {"output_type": "display_data", "data": data, "metadata": dict(metadata or {})}
    )


BROKEN = [
    pytest.param(
        _display({"image/png": "not base64 at all!"}), "not valid base64", id="bad-base64"
    ),
    pytest.param(
        _display({"image/png": base64.b64encode(b"GIF89a-not-a-png").decode()}),
        "is not a PNG image",
        id="png-that-is-not",
    ),
    pytest.param(
        _display({"image/svg+xml": "just text"}), "not an SVG document", id="svg-that-is-not"
    ),
    pytest.param(
        _display({"application/vnd.acme.chart+json": {"x": 1}}),
        "no type the viewer can show (it has: application/vnd.acme.chart+json)",
        id="unknown-mime-bundle",
    ),
    pytest.param(
        _display({"text/html": {"not": "text"}}),
        "text/html is an object, not text",
        id="html-not-text",
    ),
    pytest.param(
        _display({"text/markdown": ["ok", 5]}),
        "text/markdown is a list, not text",
        id="markdown-not-text",
    ),
    pytest.param(
        {"output_type": "hologram", "data": {}}, "unknown output type 'hologram'", id="kind"
    ),
    pytest.param(
        {"output_type": "execute_result", "data": "text", "execution_count": 1, "metadata": {}},
        "it has no mime bundle",
        id="no-bundle",
    ),
]


@pytest.mark.parametrize(("output", "problem"), BROKEN)
def test_one_broken_output_gives_a_placeholder_and_the_page_renders(
    output: Any, problem: str
) -> None:
    cell = new_code_cell("show()", execution_count=1)
    cell.outputs = [new_output("stream", name="stdout", text="before"), output]
    nb = new_notebook()
    nb.cells = [cell, new_markdown_cell("**after the broken one**")]  # unvalidated
    _, page = render(json.dumps(nb).encode())
    (placeholder,) = page.with_class("km-broken")
    assert "Output 2 could not be shown" in placeholder["text"]
    assert problem in placeholder["text"]
    assert "before" in page.text()
    assert page.find("strong")[-1]["text"] == "after the broken one"


def test_a_cell_that_is_not_one_gives_a_placeholder() -> None:
    nb = run_notebook(kubemill_metadata(), [])
    nb.cells = ["text", {"cell_type": "widget"}, {"cell_type": "code", "source": ["ok", "()"]}]
    _, page = render(json.dumps(nb).encode())
    first, second = page.with_class("km-broken")
    assert "Cell 1 could not be shown" in first["text"]
    assert "unknown cell type 'widget'" in second["text"]
    assert "ok()" in page.by_id("km-cell-2")["text"]


def test_a_markdown_cell_the_renderer_rejects_gives_a_placeholder_with_its_source() -> None:
    broken = new_markdown_cell("![chart](attachment:missing.png) and <b>text</b>")
    nb = new_notebook(cells=[broken, new_markdown_cell("**next cell**")])
    _, page = render(nb)
    (placeholder,) = page.with_class("km-broken")
    assert "could not be rendered" in placeholder["text"]
    assert "missing attachment: missing.png" in placeholder["text"]
    assert "attachment:missing.png) and <b>text</b>" in page.text()  # shown as text
    assert page.find("strong")[-1]["text"] == "next cell"


def test_markdown_attachments_render_as_data_urls() -> None:
    cell = new_markdown_cell("![chart](attachment:c.png)")
    cell.attachments = {"c.png": {"image/png": base64.b64encode(PNG).decode()}}
    _, page = render(new_notebook(cells=[cell]))
    (image,) = page.find("img")
    assert image["attrs"]["src"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("widgets", "view", "note"),
    [
        ({"m1": {"model_name": "IntSliderModel", "state": {}}}, {"model_id": "m1"}, "km-note"),
        ({}, {"model_id": "m1"}, "km-broken"),
        ({"m1": "not a state"}, {"model_id": "m1"}, "km-broken"),
        ({"m1": {}}, "not a view", "km-broken"),
    ],
    ids=["saved-state", "no-state", "bad-state", "bad-view"],
)
def test_widgets_show_their_text_and_a_note(widgets: Any, view: Any, note: str) -> None:
    cell = new_code_cell("slider", execution_count=1)
    cell.outputs = [
        _display(
            {
                "application/vnd.jupyter.widget-view+json": view,
                "text/plain": "IntSlider(value=3)",
            }
        )
    ]
    nb = new_notebook(cells=[cell, new_markdown_cell("**after**")])
    nb.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {"state": widgets, "version_major": 2}
    }
    _, page = render(json.dumps(nb).encode())
    (shown,) = page.with_class(note)
    assert "widget" in shown["text"].lower()
    assert "IntSlider(value=3)" in page.text()
    assert page.find("strong")[-1]["text"] == "after"


def test_recorded_results_and_plain_outputs_render_inline() -> None:
    cell = new_code_cell("record()", execution_count=1)
    cell.outputs = [
        _display({"application/scrapbook.scrap.json+json": {"name": "rows", "data": 12}}),
        _display({"application/json": {"a": [1, 2]}}),
        _display({"text/latex": "$$x^2$$"}),
        new_output("execute_result", data={"text/plain": "\x1b[1;32m42\x1b[0m"}, execution_count=1),
        _display({"image/png": base64.b64encode(PNG).decode()}, {"image/png": {"width": 40}}),
    ]
    _, page = render(new_notebook(cells=[cell]))
    text = page.text()
    assert "recorded rows = 12" in text and '"a": [' in text and "$$x^2$$" in text
    assert page.with_class("ansi-green-intense-fg")[0]["text"] == "42"
    (image,) = page.find("img")
    assert image["attrs"]["src"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert image["attrs"]["width"] == "40"
    assert not page.with_class("km-broken")


def test_a_file_that_is_not_a_notebook_renders_a_page_saying_so() -> None:
    for data in (b"<html>nope</html>", b'{"cells": []}', "é".encode("latin-1")):
        rendered, page = render(data)
        (shown,) = page.with_class("km-broken")
        assert "cannot be shown as a notebook" in shown["text"]
        assert rendered.title == "report.ipynb"


# --- sandboxing and escaping ----------------------------------------------------------------------


def _assert_sandboxed(page: Page) -> None:
    """No script element, no event handler, and every frame sandboxed without same-origin."""
    assert not page.find("script")
    for element in page.elements:
        handlers = [name for name in element["attrs"] if name.startswith("on")]
        assert not handlers, element
        for name in ("href", "src"):
            value = (element["attrs"].get(name) or "").strip().lower()
            assert not value.startswith("javascript:"), element
    for frame in page.find("iframe"):
        assert frame["attrs"]["sandbox"] == "allow-scripts"


def test_html_and_javascript_outputs_run_only_inside_sandboxed_frames() -> None:
    cell = new_code_cell(NASTY, execution_count=1)
    table = "<table><tr><td>cell " + BREAKOUT + "</td></tr></table>"
    cell.outputs = [
        _display({"text/html": table, "text/plain": "plain"}),
        _display({"text/html": "<div id='p'></div><script>document.cookie</script>"}),
        _display({"text/html": "<img src=x onerror='parent.x()'>"}),
        _display({"application/javascript": "element.textContent = '</script>' + 1;"}),
        new_output("stream", name="stdout", text=NASTY),
        _display({"text/markdown": "md <img src=x onerror=alert(1)> [a](javascript:alert(1))"}),
        _display({"image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg'><script>x()</script>"}),
        new_output("error", ename="E", evalue=NASTY, traceback=[NASTY]),
    ]
    markdown = new_markdown_cell(
        "# Title\n\n<script>alert(1)</script><img src=x onerror=alert(2)>"
        '<a href="javascript:alert(3)">j</a><span id="km-cell-0">clobber</span>'
        '<iframe src="https://evil"></iframe><style>body{display:none}</style>'
    )
    raw = new_raw_cell(NASTY)
    _, page = render(new_notebook(cells=[markdown, cell, raw]))
    _assert_sandboxed(page)
    # The source, the stream, the raw cell and the traceback come back as the text they are.
    assert page.text().count("<script>alert('x')</script>") == 4
    frames = page.find("iframe")
    assert len(frames) == 4
    inline, scripted, handler, javascript = frames
    assert set(inline["attrs"]) == {"class", "sandbox", "srcdoc", "title"}
    # The static table's frame holds it whole, with the height script the CSP hash allows.
    document = Page(inline["attrs"]["srcdoc"])
    (cell_in_frame,) = document.find("td")
    assert cell_in_frame["text"] == 'cell "\'>bold "'
    assert document.find("b", **{"class": "x"})[0]["text"] == "bold"
    (script,) = [s for s in document.find("script") if s["text"]]
    assert script["text"] == FRAME_SCRIPT
    digest = base64.b64encode(hashlib.sha256(script["text"].encode()).digest()).decode()
    assert f"'sha256-{digest}'" == FRAME_SCRIPT_CSP_HASH
    # Scripted outputs are framed by URL: a srcdoc frame would inherit the page's CSP.
    assert scripted["attrs"]["src"] == "?output=1.1" and "srcdoc" not in scripted["attrs"]
    assert handler["attrs"]["src"] == "?output=1.2"
    assert javascript["attrs"]["src"] == "?output=1.3"
    # The SVG is an image (its script never runs), the markdown lost its handler and link.
    (svg,) = [i for i in page.find("img") if i["attrs"]["src"].startswith("data:image/svg")]
    assert b"<script>" in base64.b64decode(svg["attrs"]["src"].split(",", 1)[1])
    assert page.by_id("km-cell-0")["tag"] == "div"  # the markdown could not take its id
    assert "clobber" in page.text()


def test_scripted_outputs_are_served_as_frame_documents() -> None:
    cell = new_code_cell("x", execution_count=1)
    cell.outputs = [
        _display({"text/html": "<b>hi</b><script>go()</script>"}),
        _display({"application/javascript": "element.textContent = '</script><b>';"}),
    ]
    data = nbformat.writes(new_notebook(cells=[cell])).encode()
    kind, body = render_output(data, 0, 0)
    assert kind == "text/html; charset=utf-8"
    assert b"<b>hi</b><script>go()</script>" in body and FRAME_SCRIPT.encode() in body
    kind, body = render_output(data, 0, 1)
    scripts = [s for s in Page(body.decode()).find("script") if "element" in s["text"]]
    assert scripts[0]["text"].strip().endswith("'<\\/script><b>';")


def test_render_output_serves_each_kind_and_refuses_what_is_not_there() -> None:
    cell = new_code_cell("x", execution_count=1)
    encoded = base64.b64encode(PNG).decode()
    cell.outputs = [
        new_output("stream", name="stdout", text="log line\n"),
        _display({"image/png": encoded[:40] + "\n" + encoded[40:]}),
        new_output("error", ename="E", evalue="v", traceback=["\x1b[0;31mE\x1b[0m: v"]),
        _display({"image/png": "%%%"}),
        _display({"image/svg+xml": "<svg></svg>"}),
        _display({"application/json": {"k": 1}}),
    ]
    nb = new_notebook(cells=[new_markdown_cell("m"), cell])
    data = nbformat.writes(nb).encode()
    assert render_output(data, 1, 0) == ("text/plain; charset=utf-8", b"log line\n")
    assert render_output(data, 1, 1) == ("image/png", PNG)
    assert render_output(data, 1, 2) == ("text/plain; charset=utf-8", b"E: v")
    assert render_output(data, 1, 4) == ("image/svg+xml", b"<svg></svg>")
    assert json.loads(render_output(data, 1, 5)[1]) == {"k": 1}
    for where in ((1, 3), (1, 6), (0, 0), (2, 0), (-1, 0)):
        with pytest.raises(OutputNotFound):
            render_output(data, *where)
    with pytest.raises(OutputNotFound):
        render_output(b"not json", 0, 0)


def test_viewer_js_only_sizes_its_own_frames_and_loads_opened_boxes() -> None:
    assert "event.source" in VIEWER_JS and "kubemillFrameHeight" in VIEWER_JS
    assert "data-src" in VIEWER_JS
    rendered = render_notebook(
        nbformat.writes(new_notebook()).encode(),
        name="n",
        link=lambda url: None,
        script_url="/base/static/viewer.js",
    )
    (script,) = Page(rendered.head).find("script")
    assert script["attrs"]["src"] == "/base/static/viewer.js" and not script["text"]


# --- big notebooks ------------------------------------------------------------------------------


def test_a_50_mb_notebook_gives_a_small_page_and_its_outputs_on_their_own() -> None:
    """A notebook of mostly images, as a long report is, plus one huge log and one huge table.

    The page must stay under 2 MB and render in seconds; what it leaves out is served whole.
    """
    cells = []
    images = []
    for index in range(60):
        # About 600 KB of base64 each: over the per-output limit.
        raw = PNG + hashlib.sha256(str(index).encode()).digest() * 14000
        images.append(raw)
        cell = new_code_cell(f"plot({index})", execution_count=index + 1)
        cell.outputs = [_display({"image/png": base64.b64encode(raw).decode()})]
        cells.append(cell)
    for index in range(100):
        # About 120 KB each: small enough to inline, until the page budget is spent.
        raw = PNG + hashlib.sha256(str(-index).encode()).digest() * 2800
        cell = new_code_cell(f"small({index})")
        cell.outputs = [_display({"image/png": base64.b64encode(raw).decode()})]
        cells.append(cell)
    log = "".join(f"step {i}: loss {1 / (i + 1):.6f}\n" for i in range(200_000))
    log_cell = new_code_cell("train()")
    log_cell.outputs = [new_output("stream", name="stdout", text=log)]
    table = "<table>" + "<tr><td>row</td><td>value</td></tr>" * 100_000 + "</table>"
    table_cell = new_code_cell("df")
    table_cell.outputs = [_display({"text/html": table, "text/plain": "df"})]
    cells += [log_cell, table_cell]
    data = nbformat.writes(new_notebook(cells=cells)).encode()
    assert len(data) > 50 * 1024 * 1024

    began = time.monotonic()
    rendered = render_notebook(data, name="big.ipynb", link=lambda url: None)
    seconds = time.monotonic() - began
    page = Page(rendered.body)
    size = len(rendered.body.encode()) + len(rendered.head.encode())
    assert size < 2 * 1024 * 1024, size
    assert seconds < 30, seconds
    # Big images load lazily from the output URL; the budget sends later small ones there too.
    lazy = [i for i in page.find("img") if i["attrs"]["src"].startswith("?output=")]
    inline = [i for i in page.find("img") if i["attrs"]["src"].startswith("data:")]
    assert len(lazy) > 60 and inline
    assert all(i["attrs"].get("loading") == "lazy" for i in lazy)
    assert render_output(data, 7, 0) == ("image/png", images[7])
    # The log shows its two ends and links to the whole of it.
    log_text = page.with_class("km-stdout")[0]["text"]
    assert log_text.startswith("step 0: loss") and "step 199999" in log_text
    assert len(log_text) < 3 * OUTPUT_INLINE_LIMIT // 32
    assert render_output(data, 160, 0) == ("text/plain; charset=utf-8", log.encode())
    # The table is behind a "show output" box that loads its frame only when opened.
    (box,) = [b for b in page.with_class("km-lazy") if "text/html" in b["text"]]
    assert "show output (" in box["text"]
    (frame,) = [f for f in page.find("iframe") if any(a is box for a in f["ancestors"])]
    assert frame["attrs"]["data-src"] == "?output=161.0" and "src" not in frame["attrs"]
    assert table.encode() in render_output(data, 161, 0)[1]


def test_a_standalone_page_holds_every_output_and_needs_no_url() -> None:
    """The HTML download: opened from disk, nothing may be loaded from the viewer."""
    big_image = PNG + b"\0" * (OUTPUT_INLINE_LIMIT + 1)
    cells = [new_code_cell("x", execution_count=1) for _ in range(5)]
    cells[0].outputs = [_display({"text/html": "<script>document.title = 'ran'</script>"})]
    cells[1].outputs = [_display({"application/javascript": "element.textContent = 1"})]
    cells[2].outputs = [_display({"text/html": "<p>" + "x" * OUTPUT_INLINE_LIMIT + "</p>"})]
    cells[3].outputs = [_display({"image/png": base64.b64encode(big_image).decode()})]
    cells[4].outputs = [new_output("stream", name="stdout", text="y" * 3 * OUTPUT_INLINE_LIMIT)]
    data = nbformat.writes(new_notebook(cells=cells)).encode()

    def no_url(cell: int, output: int) -> str:
        raise AssertionError("a standalone page uses no output URL")

    rendered = render_notebook(
        data, name="n", link=lambda url: None, output_url=no_url, script_url="/s.js",
        standalone=True,
    )  # fmt: skip
    page = Page(rendered.body)
    _assert_sandboxed(page)
    frames = page.find("iframe")
    assert len(frames) == 3 and all("srcdoc" in f["attrs"] for f in frames)
    assert "document.title = &#x27;ran&#x27;" in rendered.body  # escaped into srcdoc
    assert "x" * OUTPUT_INLINE_LIMIT in frames[2]["attrs"]["srcdoc"]
    (image,) = page.find("img")
    assert image["attrs"]["src"] == "data:image/png;base64," + base64.b64encode(big_image).decode()
    assert "y" * 3 * OUTPUT_INLINE_LIMIT in page.with_class("km-stdout")[0]["text"]
    assert not page.with_class("km-lazy") and not page.with_class("km-clip")
    assert f"<script>{VIEWER_JS}</script>" in rendered.head and "/s.js" not in rendered.head


def test_output_urls_come_from_the_callback() -> None:
    cell = new_code_cell("x", execution_count=1)
    cell.outputs = [_display({"text/html": "<script>1</script>"})]
    rendered = render_notebook(
        nbformat.writes(new_notebook(cells=[cell])).encode(),
        name="n",
        link=lambda url: None,
        output_url=lambda c, o: f"/base/output/a%20b.ipynb?cell={c}&output={o}",
    )
    (frame,) = Page(rendered.body).find("iframe")
    assert frame["attrs"]["src"] == "/base/output/a%20b.ipynb?cell=0&output=0"
    assert 'src="/base/output/a%20b.ipynb?cell=0&amp;output=0"' in rendered.body


def test_escaping_of_names_and_links() -> None:
    nb = run_notebook(kubemill_metadata(), [new_code_cell("x")])
    rendered = render_notebook(
        nbformat.writes(nb).encode(),
        name=NASTY,
        link=lambda url: f'/view?u="{url}"',
    )
    page = Page(rendered.body)
    _assert_sandboxed(page)
    assert page.find("h1")[0]["text"].startswith(NASTY)
    assert any(
        a["attrs"]["href"] == '/view?u="s3://notebooks/reports/daily.ipynb"' for a in page.find("a")
    )
    assert html.escape(NASTY) in rendered.body


def test_an_unknown_lexer_leaves_code_as_plain_text() -> None:
    nb = new_notebook(cells=[new_code_cell("x = '<b>'")])
    nb.metadata["language_info"] = {"name": "cobol", "pygments_lexer": "no-such-lexer"}
    nb.metadata["kernelspec"] = {"name": "k", "display_name": "K", "language": "no-such-language"}
    _, page = render(nb)
    (code,) = page.with_class("highlight")
    assert code["text"].strip() == "x = '<b>'"


def _png(width: int, height: int) -> bytes:
    """A real, uncompressed RGB PNG: big for its size in pixels, as a lazy image should be."""
    rows = b"".join(b"\x00" + b"\x80" * 3 * width for _ in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 0))
        + chunk(b"IEND", b"")
    )


def test_a_lazy_image_keeps_its_place_so_only_what_is_near_the_screen_loads() -> None:
    cell = new_code_cell("plot()", execution_count=1)
    big = _png(320, 300)
    cell.outputs = [_display({"image/png": base64.b64encode(big).decode()})]
    _, page = render(new_notebook(cells=[cell]))
    (image,) = page.find("img")
    assert image["attrs"]["src"] == "?output=0.0" and image["attrs"]["loading"] == "lazy"
    assert (image["attrs"]["width"], image["attrs"]["height"]) == ("320", "300")
    data = nbformat.writes(new_notebook(cells=[cell])).encode()
    assert render_output(data, 0, 0) == ("image/png", big)
