"""An executed notebook as one HTML page: a run header, the cells, and outputs that cannot hurt.

Pure functions of the notebook's bytes: the viewer renders each object version once and caches
the page, and serves big outputs on their own through `render_output`.

What a page promises:
- Nothing in it runs a script of the notebook's. HTML and JavaScript outputs live in
  `<iframe sandbox="allow-scripts">` frames without `allow-same-origin`: an opaque origin that
  cannot read the viewer's cookies or call its API. Markdown (cells and outputs) is rendered by
  nbconvert's mistune renderer and then sanitized to an allow-list; everything else is escaped.
- One broken output (bad base64, an unknown mime bundle, a renderer error, bad widget state)
  becomes a placeholder that names the problem; the rest of the page renders.
- The page stays small however big the notebook is: outputs above `OUTPUT_INLINE_LIMIT`, and
  every output once the page holds `PAGE_INLINE_BUDGET`, are left out and loaded on demand from
  the output URL (`render_output` answers it).
- It needs no network: no MathJax, no require.js. TeX is shown as the text it is written in.

How the viewer serves a page (see `Rendered`):
- the page's Content-Security-Policy should read (`{hash}` is FRAME_SCRIPT_CSP_HASH)
  `default-src 'self'; script-src 'self' {hash}; style-src 'self' 'unsafe-inline';
  img-src 'self' data:; frame-src 'self'; object-src 'none'; base-uri 'none'`;
  `'unsafe-inline'` styles because notebook markdown keeps its (sanitized) style attributes;
- `{base}/static/viewer.js` serves VIEWER_JS (optional: pass its URL as `script_url`);
- the output URL (by default `?output=<cell>.<output>` relative to the page) answers with
  `render_output(...)`, sent with `Content-Security-Policy: {OUTPUT_CSP}` and
  `X-Content-Type-Options: nosniff`, so even an output opened in its own tab runs sandboxed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import html
import json
import math
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubemill.runner.contract import RECORD_MIMETYPE, SCRAPBOOK_MIMETYPES
from kubemill.runner.notebook import ANCHOR_ID, ANCHOR_TAG, BANNER_TAG

from .nbread import NotebookUnreadable, load
from .nbread import mapping as _mapping
from .nbread import tags as _tags
from .pages import duration as _seconds
from .render_assets import FRAME_CSS, FRAME_SCRIPT, PAGE_CSS, VIEWER_JS, ansi_css

__all__ = [
    "OUTPUT_CSP",
    "OUTPUT_INLINE_LIMIT",
    "PAGE_INLINE_BUDGET",
    "OutputNotFound",
    "Outputs",
    "Rendered",
    "output_of",
    "outputs_of",
    "render_notebook",
    "render_output",
]

#: An output whose inline HTML would be bigger than this is loaded on demand instead. 256 KiB
#: holds a typical matplotlib PNG (20-150 KB as base64) or a DataFrame of a few hundred rows.
OUTPUT_INLINE_LIMIT = 256 * 1024
#: Once the page's outputs and sources hold this much, every further output bigger than
#: SMALL_OUTPUT is loaded on demand and every further source or text is cut to TEXT_EXCERPT on
#: each side: a browser opens a page of 2 MB at once, and a 50 MB notebook stays near that
#: (plus a few hundred bytes per further output).
PAGE_INLINE_BUDGET = 1536 * 1024
#: Still inlined after the budget is spent: a placeholder would not be much smaller.
SMALL_OUTPUT = 2 * 1024
#: Characters shown from each end of a text (stream, traceback, source) that is cut: a log's
#: beginning says what ran, its end how it finished.
TEXT_EXCERPT = 4 * 1024
#: An image above this is behind a "show output" box even when loaded lazily: one such image
#: costs more than the whole page.
CLICK_TO_LOAD = 4 * 1024 * 1024
#: The header shows the slowest cells, not all of them: the timings of every cell are on the
#: cells themselves.
SLOWEST_CELLS = 10
#: A parameter or result value longer than this (as JSON) is cut in the header.
HEADER_VALUE_LIMIT = 2000

#: The header for responses of `render_output`: an HTML output opened in its own tab (not in
#: the page's frame) still runs in an opaque origin, and an SVG's scripts with it.
OUTPUT_CSP = "sandbox allow-scripts"

_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# The order JupyterLab and nbconvert prefer, richest first.
_MIME_ORDER = (
    "application/javascript",
    "text/html",
    "text/markdown",
    "image/svg+xml",
    "image/png",
    "image/jpeg",
    "image/gif",
    "text/latex",
    "application/json",
    "text/plain",
)
_IMAGE_SIGNATURES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}
# Cells removed from the page entirely (nbconvert's TagRemovePreprocessor, Jupyter Book).
_REMOVE_CELL = frozenset({"remove_cell", "remove-cell"})
_REMOVE_INPUT = frozenset({"remove_input", "remove-input"})
_REMOVE_OUTPUT = frozenset({"remove_output", "remove-output"})
# Shown collapsed, as JupyterLab shows them and Jupyter Book's hide-* tags ask.
_HIDE_INPUT = frozenset({"hide-input", "hide_input", "hide-cell", "hide_cell"})
_HIDE_OUTPUT = frozenset({"hide-output", "hide_output", "hide-cell", "hide_cell"})
_CELL_TYPES = ("code", "markdown", "raw")
# What makes an HTML output need scripts: a script element, an event handler attribute, or a
# javascript: URL. Such an output is framed by URL (see `_Page.frame`), since a srcdoc frame
# inherits the page's policy, which blocks all three.
_SCRIPT = re.compile(r"<\s*script|\son[a-z]+\s*=|javascript:", re.IGNORECASE)


@dataclass(frozen=True)
class Rendered:
    """A rendered notebook; the viewer puts the three parts into its own page layout."""

    title: str  # for <title>: the notebook's name and the run's status, as text (escape it)
    head: str  # for <head>: the styles, and the viewer script when `script_url` was given
    body: str  # the page's main area


class OutputNotFound(LookupError):
    """`render_output` was asked for an output that is not there or has nothing to serve."""


class _Unrenderable(Exception):
    """One output (or one markdown cell) cannot be shown; the message names the problem."""


def _default_output_url(cell: int, output: int) -> str:
    return f"?output={cell}.{output}"


def render_notebook(
    data: bytes,
    *,
    name: str,
    link: Callable[[str], str | None],
    output_url: Callable[[int, int], str] = _default_output_url,
    script_url: str | None = None,
    standalone: bool = False,
) -> Rendered:
    """The page for one executed notebook.

    `link` maps a storage URL (s3://bucket/key or a local path) to its viewer URL, or None when
    it is outside the viewed store. `output_url(cell, output)` is where an output left out of
    the page is loaded from (`render_output` answers it); the default is relative to the page.
    `script_url` is where the viewer serves VIEWER_JS; without it the page works unscripted.

    `standalone`: a page to keep as a file, that needs nothing from the viewer (opened from
    disk, a frame or image by URL would be refused by the viewer's frame-ancestors, or be gone
    with it): every output inline whatever its size, HTML and JavaScript in `srcdoc` frames
    (still `sandbox="allow-scripts"` without same-origin: an opaque origin; a file has no
    Content-Security-Policy to block their scripts), and VIEWER_JS inline; `output_url` and
    `script_url` are not used.

    Never raises for bad content: a file that is not a notebook gives a page that says so.
    """
    head = _head(None) + f"<script>{VIEWER_JS}</script>" if standalone else _head(script_url)
    try:
        nb = _parse(data)
    except _Unrenderable as exc:
        body = _broken(f"{name} cannot be shown as a notebook: {exc}")
        return Rendered(title=name, head=head, body=f'<div class="km-nb">{body}</div>')
    page = _Page(nb, link, output_url, standalone=standalone)
    return Rendered(title=page.title(name), head=head, body=page.render(name))


def render_output(data: bytes, cell: int, output: int) -> tuple[str, bytes]:
    """One output of the notebook on its own: (Content-Type, body), for the output URL.

    Images come decoded, text as text, HTML and JavaScript as a document for a sandboxed frame.
    Serve it with `Content-Security-Policy: OUTPUT_CSP`. Raises OutputNotFound when the cell or
    output does not exist or holds nothing that can be served. A viewer serving many outputs
    of one notebook reads it once with `outputs_of` and serves each with `output_of`.
    """
    return output_of(outputs_of(data), cell, output)


@dataclass(frozen=True)
class Outputs:
    """A notebook's outputs, cell by cell, read once per notebook version: a page that leaves
    its big outputs out loads each on demand, and parsing a 50 MB notebook for each of them
    took a few hundred ms of CPU per output."""

    #: Each cell's outputs; None for a cell that is not a code cell.
    cells: tuple[list[Any] | None, ...]
    #: Why the notebook cannot be read, when it cannot (then `cells` is empty).
    problem: str | None = None


def outputs_of(data: bytes) -> Outputs:
    """The outputs of every cell (the sources and metadata are not kept)."""
    try:
        nb = _parse(data)
    except _Unrenderable as exc:
        return Outputs((), f"the notebook cannot be read: {exc}")
    cells: list[list[Any] | None] = []
    for cell in nb.cells:
        found = _mapping(cell)
        if found.get("cell_type") != "code":
            cells.append(None)
            continue
        outputs = found.get("outputs")
        cells.append(outputs if isinstance(outputs, list) else [])
    return Outputs(tuple(cells))


def output_of(outputs: Outputs, cell: int, output: int) -> tuple[str, bytes]:
    """`render_output` of a notebook read by `outputs_of`."""
    if outputs.problem is not None:
        raise OutputNotFound(outputs.problem)
    found = outputs.cells[cell] if 0 <= cell < len(outputs.cells) else None
    if found is None:
        raise OutputNotFound(f"there is no code cell {cell}")
    if not 0 <= output < len(found):
        raise OutputNotFound(f"cell {cell} has no output {output}")
    try:
        return _served(found[output])
    except _Unrenderable as exc:
        raise OutputNotFound(f"output {output} of cell {cell} cannot be served: {exc}") from None


# --- reading ------------------------------------------------------------------------------


def _parse(data: bytes) -> _Notebook:
    """The notebook's cells and metadata, as leniently as can be (`nbread.load`): a reader
    wants every cell it can show, and one malformed output must cost only itself."""
    try:
        raw = load(data)
    except NotebookUnreadable as exc:
        raise _Unrenderable(str(exc)) from None
    return _Notebook(raw["cells"], _mapping(raw.get("metadata")))


@dataclass(frozen=True)
class _Notebook:
    cells: list[Any]  # anything at all: each cell is checked as it is rendered
    metadata: Mapping[str, Any]


def _text(value: Any, what: str) -> str:
    """A multiline string field: a string, or a list of strings as nbformat allows."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "".join(value)
    kind = "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    raise _Unrenderable(f"its {what} is {kind}, not text")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def _broken(message: str) -> str:
    return f'<div class="km-broken" role="note">{_esc(message)}</div>'


def _number(value: Any) -> float | None:
    """A finite number the notebook recorded, else None (a huge int, inf and NaN included)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# --- the page -------------------------------------------------------------------------------


def _head(script_url: str | None) -> str:
    from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]

    pygments_css = HtmlFormatter(style="default").get_style_defs(".km-nb .highlight")
    script = f'<script src="{_esc(script_url)}" defer></script>' if script_url else ""
    return f"<style>{PAGE_CSS}{ansi_css()}{pygments_css}</style>{script}"


@dataclass(frozen=True)
class _Timing:
    seconds: float | None
    status: str | None
    start: str | None


class _Page:
    """One rendering: the notebook, the callbacks, and how much of the budget is spent."""

    def __init__(
        self,
        nb: _Notebook,
        link: Callable[[str], str | None],
        output_url: Callable[[int, int], str],
        *,
        standalone: bool = False,
    ) -> None:
        self.nb = nb
        self.link = link
        self.output_url = output_url
        self.standalone = standalone
        meta = nb.metadata
        self.run = _mapping(_mapping(meta).get("kubemill"))
        self.lexer = str(_mapping(_mapping(meta).get("language_info")).get("pygments_lexer") or "")
        self.language = str(_mapping(_mapping(meta).get("kernelspec")).get("language") or "python")
        self.widget_state = _mapping(_mapping(_mapping(meta).get("widgets")).get(_WIDGET_STATE))
        self.highlight = _highlighter(self.lexer)
        self.spent = 0
        self.failed_cell = self._find_cell(_mapping(self.run.get("failure")))
        self.early_cell = self._find_cell(_mapping(self.run.get("earlyExit")))

    # -- budget --

    def over_budget(self) -> bool:
        return not self.standalone and self.spent >= PAGE_INLINE_BUDGET

    def fits(self, size: int) -> bool:
        """Whether an output of `size` bytes of HTML goes into the page, and if so count it."""
        if self.standalone:
            return True
        if size > OUTPUT_INLINE_LIMIT or (self.over_budget() and size > SMALL_OUTPUT):
            return False
        self.spent += size
        return True

    # -- the whole page --

    def status(self) -> str:
        status = self.run.get("status")
        return status if isinstance(status, str) else ""

    def title(self, name: str) -> str:
        return f"{name} · {self.status()}" if self.status() else name

    def render(self, name: str) -> str:
        parts = ['<div class="km-nb">']
        if self.run:
            try:
                parts.append(self.header(name))
            except Exception as exc:  # metadata is the notebook's: anything can be in it
                parts.append(_broken(f"the run's metadata could not be shown: {exc!r}"))
        else:
            parts.append(f'<header class="km-header"><h1>{_esc(name)}</h1></header>')
        parts.append(
            '<input type="checkbox" id="km-hide-code" class="km-toggle">'
            '<label for="km-hide-code" class="km-toggle-label"><span class="km-state">'
            "Hide code</span></label>"
            '<div class="km-cells">'
        )
        for index, cell in enumerate(self.nb.cells):
            parts.append(self.cell(index, cell))
        parts.append("</div></div>")
        return "".join(parts)

    def _find_cell(self, where: Mapping[str, Any]) -> int | None:
        """The index of the cell a failure or early exit names: by id, else by index."""
        cells = self.nb.cells
        cell_id = where.get("cellId")
        if isinstance(cell_id, str):
            for index, cell in enumerate(cells):
                if _mapping(cell).get("id") == cell_id:
                    return index
        position = where.get("cell")
        if isinstance(position, int) and not isinstance(position, bool):
            return position if 0 <= position < len(cells) else None
        return None

    # -- the header --

    def header(self, name: str) -> str:
        run = self.run
        status = self.status() or "Unknown"
        failure = _mapping(run.get("failure"))
        early = _mapping(run.get("earlyExit"))
        reason = failure.get("reason")
        state = f"{status}: {reason}" if reason else status
        if early and status == "Succeeded":
            state = "Succeeded: stopped early"
        parts = [
            f'<header class="km-header"><h1>{_esc(name)} '
            f'<span class="km-state km-state-{_esc(status.lower())}">{_esc(state)}</span></h1>'
        ]
        parts.append(self.banner(status, failure, early))
        parts.append(self.facts())
        parts.append(self.values_table("Parameters", run.get("parameters"), self.secrets()))
        parts.append(self.values_table("Results", run.get("results"), ""))
        parts.append(self.lineage())
        parts.append(self.timings_table())
        parts.append("</header>")
        return "".join(parts)

    def banner(self, status: str, failure: Mapping[str, Any], early: Mapping[str, Any]) -> str:
        if failure or status == "Failed":
            where = self.failed_cell
            jump = (
                f' <a href="#km-cell-{where}" class="km-jump">Go to the failing cell.</a>'
                if where is not None
                else ""
            )
            message = failure.get("message") or "the run failed"
            extra = ""
            if failure.get("storageError"):
                extra = f"<br>The output was not saved in full: {_esc(failure['storageError'])}"
            if failure and where is None and isinstance(failure.get("traceback"), str):
                extra += (
                    "<details><summary>traceback</summary>"
                    f"<pre>{_esc(failure['traceback'])}</pre></details>"
                )
            return (
                f'<div class="km-banner" role="alert"><strong>Execution failed: '
                f"{_esc(failure.get('reason') or 'Failed')}</strong> — {_esc(message)}.{jump}"
                f"{extra}</div>"
            )
        if early:
            jump = (
                f' <a href="#km-cell-{self.early_cell}" class="km-jump">Go to the cell.</a>'
                if self.early_cell is not None
                else ""
            )
            skipped = _number(early.get("skippedCells"))
            rest = f" {skipped:.0f} code cell(s) after it were not run." if skipped else ""
            message = early.get("message") or "a cell ended the notebook early"
            return (
                f'<div class="km-banner km-banner-early" role="note"><strong>Succeeded: stopped '
                f"early</strong> — {_esc(message)}.{rest}{jump}</div>"
            )
        if status == "Running":
            return (
                '<div class="km-banner km-banner-running" role="note"><strong>This run is still '
                "in progress.</strong> This is a checkpoint; the final output replaces it.</div>"
            )
        return ""

    def facts(self) -> str:
        run = self.run
        identity = _mapping(run.get("identity"))
        kernel = _mapping(run.get("kernel"))
        rows: list[tuple[str, str]] = []
        namespace = identity.get("namespace")
        if identity.get("run"):
            where = f" in namespace {namespace}" if namespace else ""
            rows.append(("NotebookRun", _esc(f"{identity['run']}{where}")))
        # The operator may add these to the runner's identity; shown when present.
        for key, label in (("schedule", "NotebookSchedule"), ("workflow", "NotebookWorkflow")):
            if identity.get(key):
                rows.append((label, _esc(identity[key])))
        if identity.get("step"):
            rows.append(("Workflow step", _esc(identity["step"])))
        for key, label in (("job", "Job"), ("pod", "Pod"), ("node", "Node")):
            if identity.get(key):
                rows.append((label, _esc(identity[key])))
        if run.get("startTime"):
            rows.append(("Started", _esc(run["startTime"])))
        if run.get("endTime"):
            rows.append(("Ended", _esc(run["endTime"])))
        duration = _number(run.get("durationSeconds"))
        if duration is not None:
            rows.append(("Duration", _esc(_seconds(duration))))
        if kernel.get("name"):
            language = " ".join(
                str(kernel[k]) for k in ("language", "languageVersion") if kernel.get(k)
            )
            rows.append(("Kernel", _esc(f"{kernel['name']} ({language})" if language else "")))
        if isinstance(run.get("tolerantCellErrors"), int):
            rows.append(("Cell errors allowed", _esc(run["tolerantCellErrors"])))
        if run.get("kubemillVersion"):
            rows.append(("kubemill", _esc(run["kubemillVersion"])))
        cells = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
        return f'<dl class="km-facts">{cells}</dl>' if rows else ""

    def secrets(self) -> str:
        secrets = _mapping(self.run.get("secretParameters"))
        if not secrets:
            return ""
        names = ", ".join(
            f"{n} (from ${_mapping(v).get('fromEnv', '?')})" for n, v in sorted(secrets.items())
        )
        return f'<p class="km-note">Secret parameters, not shown: {_esc(names)}</p>'

    def values_table(self, title: str, values: Any, note: str) -> str:
        if not isinstance(values, Mapping) or not values:
            return f"<h2>{title}</h2>{note}" if note else ""
        rows = []
        for key, value in values.items():
            text = json.dumps(value, ensure_ascii=False, indent=None, default=str)
            if len(text) > HEADER_VALUE_LIMIT:
                text = text[:HEADER_VALUE_LIMIT] + f"… ({_size(len(text))} in all)"
            rows.append(f"<tr><th>{_esc(key)}</th><td><pre>{_esc(text)}</pre></td></tr>")
        return f'<h2>{title}</h2><table class="km-table">{"".join(rows)}</table>{note}'

    def linked(self, url: Any) -> str:
        """A storage URL, as a link when the viewer serves it."""
        if not isinstance(url, str) or not url:
            return ""
        target = self.link(url)
        if target is None:
            return f"<code>{_esc(url)}</code>"
        return f'<a href="{_esc(target)}"><code>{_esc(url)}</code></a>'

    def lineage(self) -> str:
        source = _mapping(self.run.get("input"))
        rows = []
        if source.get("uri"):
            rows.append(("Notebook", self.linked(source["uri"])))
        for key, label in (("sha256", "SHA-256"), ("etag", "ETag"), ("versionId", "Version")):
            if source.get(key):
                rows.append((label, f"<code>{_esc(source[key])}</code>"))
        upstream = self.run.get("upstream")
        table = ""
        if isinstance(upstream, list) and upstream:
            lines = []
            for entry in map(_mapping, upstream):
                run = _esc(entry.get("name", "?"))
                if entry.get("namespace"):
                    run += f" <span class='km-note'>({_esc(entry['namespace'])})</span>"
                params = entry.get("parameters")
                gave = ", ".join(map(str, params)) if isinstance(params, list) else ""
                results = self.linked(entry.get("resultsUrl"))
                if entry.get("resultsSha256"):
                    results += f"<br><code>sha256 {_esc(entry['resultsSha256'])}</code>"
                lines.append(
                    f"<tr><td>{run}</td><td>{self.linked(entry.get('outputUrl'))}</td>"
                    f"<td>{_esc(gave)}</td><td>{results}</td></tr>"
                )
            table = (
                '<table class="km-table"><tr><th>Upstream run</th><th>Output</th>'
                f"<th>Gave parameters</th><th>Results read</th></tr>{''.join(lines)}</table>"
            )
        if not rows and not table:
            return ""
        facts = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
        return f'<h2>Lineage</h2><dl class="km-facts">{facts}</dl>{table}'

    def timings_table(self) -> str:
        timed = []
        for index, cell in enumerate(self.nb.cells):
            if not isinstance(cell, Mapping) or cell.get("cell_type") != "code":
                continue
            timing = _timing(cell)
            if timing.seconds is not None:
                timed.append((timing.seconds, index, cell.get("execution_count"), timing))
        if not timed:
            return ""
        timed.sort(key=lambda item: -item[0])
        total = sum(item[0] for item in timed)
        rows = "".join(
            f'<tr><td><a href="#km-cell-{index}">In [{_esc(count if count else " ")}]</a></td>'
            f"<td>{_esc(_seconds(seconds))}</td><td>{_esc(timing.status or '')}</td></tr>"
            for seconds, index, count, timing in timed[:SLOWEST_CELLS]
        )
        return (
            f"<details><summary>Cell timings: {len(timed)} cells, {_esc(_seconds(total))} "
            f"in cells; the slowest {min(len(timed), SLOWEST_CELLS)}</summary>"
            f'<table class="km-table"><tr><th>Cell</th><th>Time</th><th>Status</th></tr>'
            f"{rows}</table></details>"
        )

    # -- cells --

    def cell(self, index: int, cell: Any) -> str:
        if not isinstance(cell, Mapping) or cell.get("cell_type") not in _CELL_TYPES:
            kind = _mapping(cell).get("cell_type")
            return _broken(f"Cell {index + 1} could not be shown: unknown cell type {kind!r}")
        tags = _tags(cell)
        if tags & _REMOVE_CELL:
            return ""
        if self.run and tags & {BANNER_TAG, ANCHOR_TAG}:
            return ""  # the runner's banner and anchor cells: the header says it better
        kind = cell.get("cell_type")
        classes = f"km-cell km-{_esc(kind)}"
        if index == self.failed_cell:
            classes += " km-failed"
        opening = f'<div class="{classes}" id="km-cell-{index}">'
        if index == self.failed_cell:
            # The anchor the runner's own banner links to, for links made from it elsewhere.
            opening += f'<span id="{ANCHOR_ID}"></span>'
        if kind == "markdown":
            return f"{opening}{self.markdown_cell(cell)}</div>"
        if kind == "raw":
            source = self.clipped_source(cell)
            return f'{opening}<pre class="km-raw">{_esc(source)}</pre></div>'
        return f"{opening}{self.code_cell(index, cell, tags)}</div>"

    def clipped_source(self, cell: Mapping[str, Any]) -> str:
        try:
            source = _text(cell.get("source", ""), "source")
        except _Unrenderable:
            source = ""
        limit = TEXT_EXCERPT if self.over_budget() else OUTPUT_INLINE_LIMIT
        if not self.standalone and len(source) > 2 * limit:
            source = (
                f"{source[:limit]}\n… {_size(len(source) - 2 * limit)} of the source left out "
                f"(download the notebook to read it all) …\n{source[-limit:]}"
            )
        self.spent += len(source)
        return source

    def markdown_cell(self, cell: Mapping[str, Any]) -> str:
        source = self.clipped_source(cell)
        attachments = cell.get("attachments")
        try:
            rendered = _markdown(source, attachments if isinstance(attachments, dict) else {})
        except Exception as exc:
            return (
                _broken(f"this markdown cell could not be rendered: {_problem(exc)}")
                + f"<pre>{_esc(source)}</pre>"
            )
        return f'<div class="km-markdown">{rendered}</div>'

    def code_cell(self, index: int, cell: Mapping[str, Any], tags: frozenset[str]) -> str:
        meta = _mapping(cell.get("metadata"))
        jupyter = _mapping(meta.get("jupyter"))
        count = cell.get("execution_count")
        timing = _timing(cell)
        badge = ""
        if self.run and timing.seconds is None and not timing.status and count is None:
            timing = _Timing(None, "skipped", None)  # after the failing cell: never started
        if timing.seconds is not None or timing.status:
            status = timing.status or ""
            words = [_seconds(timing.seconds) if timing.seconds is not None else ""]
            if status not in ("", "ok"):
                words.append("not run" if status == "skipped" else status)
            when = f' title="started {_esc(timing.start)}"' if timing.start else ""
            badge = (
                f'<span class="km-time km-time-{_esc(status)}"{when}>'
                f"{_esc(' '.join(w for w in words if w))}</span>"
            )
        parts = [
            f'<div class="km-prompt">In [{_esc(count if count is not None else " ")}]:{badge}</div>'
        ]
        if not tags & _REMOVE_INPUT:
            source = self.clipped_source(cell)
            code = self.highlight(source, self.language)
            if jupyter.get("source_hidden") or meta.get("hide_input") or tags & _HIDE_INPUT:
                parts.append(
                    '<details class="km-input km-hidden"><summary>code hidden by the notebook'
                    f"</summary>{code}</details>"
                )
            else:
                parts.append(f'<div class="km-input">{code}</div>')
        outputs = cell.get("outputs")
        if tags & _REMOVE_OUTPUT or not isinstance(outputs, list) or not outputs:
            return "".join(parts)
        shown = "".join(self.output(index, number, out) for number, out in enumerate(outputs))
        if jupyter.get("outputs_hidden") or tags & _HIDE_OUTPUT:
            parts.append(
                '<details class="km-outputs km-hidden"><summary>output hidden by the notebook'
                f"</summary>{shown}</details>"
            )
        else:
            parts.append(f'<div class="km-outputs">{shown}</div>')
        return "".join(parts)

    # -- outputs --

    def output(self, cell: int, number: int, output: Any) -> str:
        """One output, or a placeholder that says why it is not shown."""
        try:
            if not isinstance(output, Mapping):
                raise _Unrenderable("it is not an output object")
            return f'<div class="km-output">{self.output_html(cell, number, output)}</div>'
        except Exception as exc:
            return _broken(f"Output {number + 1} could not be shown: {_problem(exc)}")

    def output_html(self, cell: int, number: int, output: Mapping[str, Any]) -> str:
        kind = output.get("output_type")
        if kind == "stream":
            name = output.get("name")
            css = "km-stderr" if name == "stderr" else "km-stdout"
            text = self.clipped_text(_text(output.get("text", ""), "text"), cell, number)
            return f'<pre class="{css}">{text}</pre>'
        if kind == "error":
            text = _traceback(output)
            return f'<pre class="km-error">{self.clipped_text(text, cell, number)}</pre>'
        if kind not in ("display_data", "execute_result"):
            raise _Unrenderable(f"unknown output type {kind!r}")
        bundle = output.get("data")
        if not isinstance(bundle, Mapping):
            raise _Unrenderable("it has no mime bundle")
        meta = _mapping(output.get("metadata"))
        if _WIDGET_VIEW in bundle:
            return self.widget(bundle, cell, number)
        for mime in (RECORD_MIMETYPE, *SCRAPBOOK_MIMETYPES):
            if mime in bundle and "text/plain" not in bundle:
                return _recorded(bundle[mime], mime)
        mime = _choose(bundle)
        value = bundle[mime]
        if mime in ("application/javascript", "text/html"):
            return self.frame(mime, _text(value, mime), cell, number)
        if mime == "text/markdown":
            source = _text(value, mime)
            if not self.fits(len(source)):
                return self.lazy_frame(mime, len(source), cell, number)
            return f'<div class="km-markdown">{_markdown(source, {})}</div>'
        if mime.startswith("image/"):
            return self.image(mime, value, _mapping(meta.get(mime)), cell, number)
        if mime == "application/json":
            text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
            return f"<pre>{self.clipped_text(text, cell, number, ansi=False)}</pre>"
        text = _text(value, mime)
        css = ' class="km-tex"' if mime == "text/latex" else ""
        return f"<pre{css}>{self.clipped_text(text, cell, number, ansi=mime == 'text/plain')}</pre>"

    def clipped_text(self, text: str, cell: int, number: int, *, ansi: bool = True) -> str:
        """Text as HTML (ANSI colours kept), cut in the middle when it is too big to inline."""
        if self.fits(len(text)):
            return _ansi(text) if ansi else _esc(text)
        head, tail = text[:TEXT_EXCERPT], text[-TEXT_EXCERPT:]
        self.spent += len(head) + len(tail)
        url = _esc(self.output_url(cell, number))
        cut = (
            f'<span class="km-clip">… {_size(len(text) - len(head) - len(tail))} left out: '
            f'<a href="{url}" target="_blank" rel="noopener">show all ({_size(len(text))})'
            "</a> …</span>\n"
        )
        convert = _ansi if ansi else _esc
        return f"{convert(head)}\n{cut}{convert(tail)}"

    def frame(self, mime: str, content: str, cell: int, number: int) -> str:
        """HTML or JavaScript, in a sandboxed frame without same-origin.

        Scripted content is framed by URL, not `srcdoc`: a srcdoc frame inherits the page's
        Content-Security-Policy, which (rightly) blocks the notebook's inline scripts; the
        output URL is served with its own policy, OUTPUT_CSP. A standalone page has no policy:
        everything goes into `srcdoc`.
        """
        scripted = mime == "application/javascript" or bool(_SCRIPT.search(content))
        document = _frame_document(mime, content) if self.standalone or not scripted else ""
        srcdoc = _esc(document)
        if not self.standalone and (scripted or not self.fits(len(srcdoc))):
            if len(content) > OUTPUT_INLINE_LIMIT or self.over_budget():
                return self.lazy_frame(mime, len(content), cell, number)
            url = _esc(self.output_url(cell, number))
            return (
                f'<iframe class="km-frame" sandbox="allow-scripts" loading="lazy" src="{url}" '
                f'title="{_esc(mime)} output"></iframe>'
            )
        return (
            f'<iframe class="km-frame" sandbox="allow-scripts" srcdoc="{srcdoc}" '
            f'title="{_esc(mime)} output"></iframe>'
        )

    def lazy_frame(self, mime: str, size: int, cell: int, number: int) -> str:
        url = _esc(self.output_url(cell, number))
        return (
            f'<details class="km-lazy"><summary>show output ({_size(size)}, {_esc(mime)})'
            f'</summary><iframe class="km-frame" sandbox="allow-scripts" data-src="{url}" '
            f'title="{_esc(mime)} output"></iframe>'
            f'<a href="{url}" target="_blank" rel="noopener">open it on its own</a></details>'
        )

    def image(self, mime: str, value: Any, meta: Mapping[str, Any], cell: int, number: int) -> str:
        if mime == "image/svg+xml":
            svg = _text(value, mime)
            if "<svg" not in svg:
                raise _Unrenderable("the image/svg+xml data is not an SVG document")
            encoded = base64.b64encode(svg.encode()).decode()
        else:
            encoded = "".join(_text(value, mime).split())
        size = {} if mime == "image/svg+xml" else _pixels(mime, _check_image(mime, encoded))
        # The notebook's own size wins: matplotlib's retina images ask for half their pixels.
        asked = {
            k: meta[k]
            for k in ("width", "height")
            if isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool)
        }
        if asked:
            size = asked
        dims = "".join(f' {k}="{v}"' for k, v in size.items())
        if self.fits(len(encoded)):
            return f'<img src="data:{mime};base64,{encoded}" alt="{_esc(mime)} output"{dims}>'
        url = _esc(self.output_url(cell, number))
        weight = _size(len(encoded) * 3 // 4)
        if len(encoded) > CLICK_TO_LOAD:
            return (
                f'<details class="km-lazy"><summary>show output ({weight}, {_esc(mime)})'
                f'</summary><img data-src="{url}" alt="{_esc(mime)} output"{dims}>'
                f'<a href="{url}" target="_blank" rel="noopener">open it on its own</a></details>'
            )
        return (
            f'<img loading="lazy" src="{url}" alt="{_esc(mime)} output ({weight})"{dims}>'
            f'<div class="km-note"><a href="{url}" target="_blank" rel="noopener">'
            f"image, {weight}, loaded as you scroll</a></div>"
        )

    def widget(self, bundle: Mapping[str, Any], cell: int, number: int) -> str:
        """A widget needs a live kernel: its text fallback, and a note saying so."""
        view = bundle.get(_WIDGET_VIEW)
        model = view.get("model_id") if isinstance(view, Mapping) else None
        states = _mapping(self.widget_state.get("state"))
        if not isinstance(model, str):
            note = _broken("Interactive widget with a malformed view (no model_id).")
        elif model not in states or not isinstance(states.get(model), Mapping):
            note = _broken("Interactive widget whose state was not saved in the notebook.")
        else:
            note = (
                '<div class="km-note">Interactive widget: shown as its text, since widgets '
                "need a live kernel.</div>"
            )
        fallback = bundle.get("text/plain")
        text = _text(fallback, "text/plain") if fallback is not None else ""
        shown = f"<pre>{self.clipped_text(text, cell, number)}</pre>" if text else ""
        return note + shown


def _problem(exc: Exception) -> str:
    if isinstance(exc, _Unrenderable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _choose(bundle: Mapping[str, Any]) -> str:
    for mime in _MIME_ORDER:
        if mime in bundle:
            return mime
    types = ", ".join(sorted(map(str, bundle))) or "none"
    raise _Unrenderable(f"no type the viewer can show (it has: {types})")


def _check_image(mime: str, encoded: str) -> bytes:
    """The image's bytes, once they are base64 and start as an image of their type does."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Unrenderable(f"the {mime} data is not valid base64 ({exc})") from None
    if not raw.startswith(_IMAGE_SIGNATURES[mime]):
        raise _Unrenderable(f"the {mime} data is not a {mime.split('/')[1].upper()} image")
    return raw


def _pixels(mime: str, raw: bytes) -> dict[str, int]:
    """A PNG's or GIF's width and height from its header: an image loaded later keeps its place
    in the page, so the browser's lazy loading fetches only what is near the screen."""
    if mime == "image/png" and len(raw) >= 24:
        width, height = struct.unpack(">II", raw[16:24])
    elif mime == "image/gif" and len(raw) >= 10:
        width, height = struct.unpack("<HH", raw[6:10])
    else:
        return {}
    return {"width": width, "height": height} if width and height else {}


def _recorded(value: Any, mime: str) -> str:
    """A result recorded without a text form (scrapbook's `glue(..., display=False)`)."""
    scrap = _mapping(value)
    shown = scrap.get("value", scrap.get("data"))
    text = json.dumps(shown, ensure_ascii=False, default=str)
    text = text if len(text) <= 200 else text[:197] + "..."
    return f'<pre class="km-note">recorded {_esc(scrap.get("name", "?"))} = {_esc(text)}</pre>'


def _traceback(output: Mapping[str, Any]) -> str:
    lines = output.get("traceback")
    if isinstance(lines, list) and lines and all(isinstance(line, str) for line in lines):
        return "\n".join(lines)
    return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"


def _timing(cell: Mapping[str, Any]) -> _Timing:
    """A cell's run time and how it ended: the runner's own record, else what nbclient
    (record_timing) and papermill wrote, so a notebook executed elsewhere shows them too."""
    meta = _mapping(cell.get("metadata"))
    ours = _mapping(meta.get("kubemill"))
    if ours:
        status, start = ours.get("status"), ours.get("startTime")
        return _Timing(
            _number(ours.get("durationSeconds")),
            status if isinstance(status, str) else None,
            start if isinstance(start, str) else None,
        )
    execution = _mapping(meta.get("execution"))
    busy = execution.get("iopub.status.busy") or execution.get("iopub.execute_input")
    began = _instant(busy)
    ended = _instant(execution.get("iopub.status.idle") or execution.get("shell.execute_reply"))
    seconds = None
    if began is not None and ended is not None:
        with contextlib.suppress(TypeError):  # one with a time zone, one without
            seconds = (ended - began).total_seconds()
    papermill = _mapping(meta.get("papermill"))
    if seconds is None:
        seconds = _number(papermill.get("duration"))
    status = _PAPERMILL_STATUS.get(str(papermill.get("status")))
    if papermill.get("exception") is True:
        status = "error"
    return _Timing(seconds, status, busy if isinstance(busy, str) else None)


#: papermill's per-cell status, in the runner's words.
_PAPERMILL_STATUS = {
    "completed": "ok",
    "failed": "error",
    "pending": "skipped",
    "running": "running",
}


# --- converters (nbconvert's, with an allow-list after them) --------------------------------


def _ansi(text: str) -> str:
    from nbconvert.filters.ansi import ansi2html

    return str(ansi2html(text))


def _highlighter(lexer: str) -> Callable[[str, str], str]:
    """Code as highlighted HTML (pygments, through nbconvert), with the notebook's lexer."""
    from nbconvert.filters.highlight import Highlight2HTML

    highlight = Highlight2HTML(pygments_lexer=lexer or None)

    def html_of(source: str, language: str) -> str:
        if not source:
            return '<div class="highlight"><pre></pre></div>'
        try:
            return str(highlight(source, language))
        except Exception:  # an unknown lexer name in the metadata: plain, escaped text will do
            return f'<div class="highlight"><pre>{_esc(source)}</pre></div>'

    return html_of


def _markdown(source: str, attachments: Mapping[str, Any]) -> str:
    """Markdown with nbconvert's renderer (math left as TeX text), then sanitized: raw HTML in
    markdown is allowed to format, never to script."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    renderer = IPythonRenderer(
        escape=False, allow_harmful_protocols=False, attachments=dict(attachments)
    )
    return _sanitize(str(MarkdownWithMath(renderer=renderer).render(source)))


_ALLOWED_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "figcaption",
        "figure",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "mark",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "u",
        "ul",
        "var",
    }
)
_ALLOWED_STYLES = frozenset(
    {
        "color",
        "background-color",
        "font-weight",
        "font-style",
        "font-size",
        "text-align",
        "text-decoration",
        "margin",
        "padding",
        "border",
        "width",
        "height",
        "display",
    }
)


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    if name == "id":
        return not value.startswith("km-")  # the page's own anchors and toggle keep their ids
    if name in ("class", "title", "style", "align"):
        return True
    if tag == "a":
        return name in ("href", "name", "target", "rel")
    if tag == "img":
        return name in ("src", "alt", "width", "height")
    if tag in ("td", "th"):
        return name in ("colspan", "rowspan")
    if tag in ("ol", "li"):
        return name in ("start", "value", "type")
    return tag == "details" and name == "open"


def _sanitize(fragment: str) -> str:
    # bleach comes with nbconvert (its SanitizeHTML preprocessor uses it) and ships no types.
    import bleach  # type: ignore[import-untyped]
    from bleach.css_sanitizer import CSSSanitizer  # type: ignore[import-untyped]

    return str(
        bleach.clean(
            fragment,
            tags=_ALLOWED_TAGS,
            attributes=_allowed_attribute,
            protocols={"http", "https", "mailto", "data"},
            css_sanitizer=CSSSanitizer(allowed_css_properties=_ALLOWED_STYLES),
            strip=True,
            strip_comments=True,
        )
    )


# --- outputs served on their own ---------------------------------------------------------


def _frame_document(mime: str, content: str) -> str:
    """The document of an HTML or JavaScript output's frame, with FRAME_SCRIPT for its height."""
    if mime == "application/javascript":
        # Classic Jupyter hands a JavaScript output `element`, the node to draw into; "</" is
        # written "<\/" so that no "</script>" in the code can end the script element early.
        script = content.replace("</", "<\\/")
        body = (
            '<div id="output"></div><script>var element = document.getElementById("output");'
            f"\n{script}\n</script>"
        )
    else:
        body = content
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><style>{FRAME_CSS}</style></head>'
        f"<body>{body}<script>{FRAME_SCRIPT}</script></body></html>"
    )


def _served(output: Any) -> tuple[str, bytes]:
    if not isinstance(output, Mapping):
        raise _Unrenderable("it is not an output object")
    kind = output.get("output_type")
    plain = "text/plain; charset=utf-8"
    if kind == "stream":
        return plain, _text(output.get("text", ""), "text").encode()
    if kind == "error":
        return plain, _strip_ansi(_traceback(output)).encode()
    bundle = output.get("data")
    if not isinstance(bundle, Mapping):
        raise _Unrenderable("it has no mime bundle")
    if _WIDGET_VIEW in bundle:
        return plain, _text(bundle.get("text/plain", ""), "text/plain").encode()
    mime = _choose(bundle)
    value = bundle[mime]
    page = "text/html; charset=utf-8"
    if mime in ("application/javascript", "text/html"):
        return page, _frame_document(mime, _text(value, mime)).encode()
    if mime == "text/markdown":
        return page, _frame_document("text/html", _markdown(_text(value, mime), {})).encode()
    if mime == "image/svg+xml":
        return mime, _text(value, mime).encode()
    if mime.startswith("image/"):
        encoded = "".join(_text(value, mime).split())
        _check_image(mime, encoded)
        return mime, base64.b64decode(encoded)
    if mime == "application/json":
        return "application/json", json.dumps(value, indent=2, ensure_ascii=False).encode()
    return plain, _strip_ansi(_text(value, mime)).encode()


def _strip_ansi(text: str) -> str:
    from nbconvert.filters.ansi import strip_ansi

    return str(strip_ansi(text))
