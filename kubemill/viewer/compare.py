"""Two runs of the same notebook side by side: parameters, results and durations, and which
cells' outputs differ.

Pure functions of the two executed notebooks' bytes; the viewer's handler (`actions.py`) reads
them and answers with `compare_html`.

Same notebook: both runs record the input notebook's URI (`metadata.kubemill.input.uri`), and
runs of different URIs are refused (`DifferentNotebooks`): their cells do not correspond, so a
cell-by-cell answer would mislead. A run without a recorded URI (a notebook executed by other
tools) is compared with a warning on the page. The same URI at another version (its SHA-256
differs) is compared too, with a warning, since that is often the question ("what did my edit
change?").

Cells are paired by their nbformat id where both notebooks have it, else by their kind and
source, in order (difflib over the two sequences); the cells the runner adds (the error banner
and its anchor) are left out. Outputs are compared by a digest of their normalized form
(`output_digest`): what a reader sees, without execution counts, metadata (timings, sizes) or
transient data; an error by its name and value (a traceback names execution counts).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubemill.runner.notebook import ANCHOR_TAG, BANNER_TAG
from kubemill.runner.parameters import INJECTED_TAG

from . import nbread
from .errors import BadRequest
from .nbread import mapping as _mapping
from .nbread import tags as _tags
from .nbread import text as _text
from .pages import duration, esc

__all__ = [
    "CellPair",
    "Comparison",
    "DifferentNotebooks",
    "NotANotebook",
    "RunSide",
    "compare",
    "compare_html",
    "normalized_output",
    "output_digest",
]

#: A value longer than this (as JSON) is cut in the side-by-side tables.
VALUE_LIMIT = 300
#: A cell's label: the first line of its source, cut to this many characters.
LABEL_LIMIT = 80


class DifferentNotebooks(BadRequest):
    """The two runs executed different notebooks (different input URIs)."""


class NotANotebook(BadRequest):
    """One side is not a readable notebook."""


@dataclass(frozen=True)
class RunSide:
    """One run, as the comparison shows it."""

    path: str
    status: str | None
    notebook: str | None
    sha256: str | None
    start: str | None
    duration: float | None
    parameters: Mapping[str, Any]
    results: Mapping[str, Any]


@dataclass(frozen=True)
class CellPair:
    """One cell of either run, or the same cell in both."""

    a: int | None  # the cell's index in run a (its anchor is #km-cell-<index>), None: not there
    b: int | None
    kind: str
    label: str
    source_same: bool
    #: None when neither has outputs to compare (markdown, a cell only one run has).
    outputs_same: bool | None
    seconds_a: float | None
    seconds_b: float | None


@dataclass(frozen=True)
class Comparison:
    a: RunSide
    b: RunSide
    cells: tuple[CellPair, ...]
    warnings: tuple[str, ...]

    @property
    def differing_outputs(self) -> int:
        return sum(1 for c in self.cells if c.outputs_same is False)


# --- reading --------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _parse(data: bytes, path: str) -> dict[str, Any]:
    try:
        return nbread.load(data)
    except nbread.NotebookUnreadable as exc:
        raise NotANotebook(f"{path} cannot be compared: {exc}") from None


def _side(path: str, raw: Mapping[str, Any]) -> RunSide:
    run = nbread.run_metadata(raw)
    source = _mapping(run.get("input"))
    return RunSide(
        path=path,
        status=nbread.string(run.get("status")),
        notebook=nbread.string(source.get("uri")),
        sha256=nbread.string(source.get("sha256")),
        start=nbread.string(run.get("startTime")),
        duration=_number(run.get("durationSeconds")),
        parameters=_mapping(run.get("parameters")),
        results=_mapping(run.get("results")),
    )


# --- outputs ----------------------------------------------------------------------------------


def normalized_output(output: Any) -> Any:
    """What a reader sees of one output, without what changes from run to run by itself:
    execution counts, metadata (timings, image sizes) and transient data (display ids)."""
    output = _mapping(output)
    kind = output.get("output_type")
    if kind == "stream":
        return {"stream": output.get("name"), "text": _text(output.get("text"))}
    if kind in ("display_data", "execute_result", "update_display_data"):
        data = _mapping(output.get("data"))
        return {
            "data": {
                mime: _text(value) if isinstance(value, str | list) else value
                for mime, value in sorted(data.items())
            }
        }
    if kind == "error":
        return {"error": output.get("ename"), "value": output.get("evalue")}
    return {"other": kind}


def output_digest(outputs: Any) -> str:
    """A digest of a cell's outputs as `normalized_output` sees them; consecutive stream
    outputs of one name are joined (the kernel splits a print's text where it likes)."""
    items: list[Any] = []
    for output in outputs if isinstance(outputs, list) else []:
        normal = normalized_output(output)
        last = items[-1] if items else None
        if (
            isinstance(normal, dict)
            and "stream" in normal
            and isinstance(last, dict)
            and last.get("stream") == normal["stream"]
        ):
            items[-1] = {"stream": normal["stream"], "text": last["text"] + normal["text"]}
        else:
            items.append(normal)
    encoded = json.dumps(items, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


# --- cells ------------------------------------------------------------------------------------


def _cells(raw: Mapping[str, Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """The notebook's own cells with their indexes (the runner's banner cells left out)."""
    return [
        (index, cell)
        for index, cell in enumerate(raw["cells"])
        if isinstance(cell, Mapping) and not ({BANNER_TAG, ANCHOR_TAG} & _tags(cell))
    ]


def _seconds(cell: Mapping[str, Any]) -> float | None:
    return _number(_mapping(_mapping(cell.get("metadata")).get("kubemill")).get("durationSeconds"))


def _key(cell: Mapping[str, Any], shared_ids: set[str]) -> str:
    cell_id = cell.get("id")
    if isinstance(cell_id, str) and cell_id in shared_ids:
        return "id:" + cell_id
    if INJECTED_TAG in _tags(cell):  # its source is the parameters: it differs when they do
        return "injected"
    source = hashlib.sha256(_text(cell.get("source")).encode()).hexdigest()
    return f"{cell.get('cell_type')}:{source}"


def _label(cell: Mapping[str, Any]) -> str:
    if INJECTED_TAG in _tags(cell):
        return "(injected parameters)"
    first = next((line for line in _text(cell.get("source")).splitlines() if line.strip()), "")
    return first if len(first) <= LABEL_LIMIT else first[: LABEL_LIMIT - 1] + "…"


def _pair(
    a: tuple[int, Mapping[str, Any]] | None, b: tuple[int, Mapping[str, Any]] | None
) -> CellPair:
    cell = (a or b or (0, {}))[1]
    kind = str(cell.get("cell_type") or "?")
    both = a is not None and b is not None
    outputs_same: bool | None = None
    if a is not None and b is not None and kind == "code":
        outputs_same = output_digest(a[1].get("outputs")) == output_digest(b[1].get("outputs"))
    return CellPair(
        a=a[0] if a else None,
        b=b[0] if b else None,
        kind=kind,
        label=_label(cell),
        source_same=both
        and a is not None
        and b is not None
        and _text(a[1].get("source")) == _text(b[1].get("source")),
        outputs_same=outputs_same,
        seconds_a=_seconds(a[1]) if a else None,
        seconds_b=_seconds(b[1]) if b else None,
    )


def _pairs(raw_a: Mapping[str, Any], raw_b: Mapping[str, Any]) -> list[CellPair]:
    cells_a, cells_b = _cells(raw_a), _cells(raw_b)
    ids_a = {c.get("id") for _, c in cells_a}
    shared = {i for _, c in cells_b if isinstance(i := c.get("id"), str) and i in ids_a}
    keys_a = [_key(c, shared) for _, c in cells_a]
    keys_b = [_key(c, shared) for _, c in cells_b]
    pairs: list[CellPair] = []
    matcher = difflib.SequenceMatcher(a=keys_a, b=keys_b, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            pairs += [_pair(cells_a[a0 + k], cells_b[b0 + k]) for k in range(a1 - a0)]
            continue
        # A changed stretch: cells in the same place are the same cell, edited.
        common = min(a1 - a0, b1 - b0) if op == "replace" else 0
        pairs += [_pair(cells_a[a0 + k], cells_b[b0 + k]) for k in range(common)]
        pairs += [_pair(cells_a[k], None) for k in range(a0 + common, a1)]
        pairs += [_pair(None, cells_b[k]) for k in range(b0 + common, b1)]
    return pairs


def compare(data_a: bytes, path_a: str, data_b: bytes, path_b: str) -> Comparison:
    """The comparison of two executed notebooks; DifferentNotebooks when their runs executed
    different notebooks, NotANotebook when one cannot be read."""
    raw_a, raw_b = _parse(data_a, path_a), _parse(data_b, path_b)
    a, b = _side(path_a, raw_a), _side(path_b, raw_b)
    warnings = []
    if a.notebook and b.notebook and a.notebook != b.notebook:
        raise DifferentNotebooks(
            f"{path_a} ran {a.notebook} and {path_b} ran {b.notebook}: only runs of the same "
            "notebook are compared, since their cells do not correspond"
        )
    if not (a.notebook and b.notebook):
        missing = " and ".join(s.path for s in (a, b) if not s.notebook)
        warnings.append(
            f"{missing} records no input notebook, so these may be runs of different "
            "notebooks; cells are paired by id and source"
        )
    elif a.sha256 and b.sha256 and a.sha256 != b.sha256:
        warnings.append(
            f"The notebook {a.notebook} changed between the runs (SHA-256 {a.sha256[:12]}… and "
            f"{b.sha256[:12]}…): cells whose source differs are marked"
        )
    return Comparison(a, b, tuple(_pairs(raw_a, raw_b)), tuple(warnings))


# --- HTML ---------------------------------------------------------------------------------------


def _value(values: Mapping[str, Any], name: str) -> str:
    if name not in values:
        return '<span class="km-same">(not set)</span>'
    text = json.dumps(values[name], ensure_ascii=False, default=str)
    if len(text) > VALUE_LIMIT:
        text = text[: VALUE_LIMIT - 1] + "…"
    return esc(text)


def _same(a: Any, b: Any) -> bool:
    """Whether two recorded values are the same value, types included: Python's `==` says
    True == 1, 0 == False and 1 == 1.0, and a run given `true` is not one given `1`."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _values_table(title: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    names = [*a, *(n for n in b if n not in a)]
    if not names:
        return f"<h2>{title}</h2><p class='muted'>None in either run.</p>"
    rows = []
    differ = 0
    for name in names:
        same = name in a and name in b and _same(a[name], b[name])
        differ += not same
        css = "km-same" if same else "km-diff"
        rows.append(
            f'<tr class="{css}"><th>{esc(name)}</th><td class="km-value">{_value(a, name)}</td>'
            f'<td class="km-value">{_value(b, name)}</td></tr>'
        )
    return (
        f"<h2>{title} <span class='muted'>({differ} of {len(names)} differ)</span></h2>"
        f"<table class='km-compare-{title.lower()}'><thead><tr><th>name</th><th>a</th>"
        f"<th>b</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _seconds_text(value: float | None) -> str:
    return esc(duration(value)) if value is not None else ""


def compare_html(comparison: Comparison, notebook: Callable[[str], str]) -> str:
    """The page's main area; `notebook(path)` is a notebook's page URL."""
    a, b = comparison.a, comparison.b
    warnings = "".join(f'<p class="note">{esc(w)}</p>' for w in comparison.warnings)

    def run_row(label: str, get: Callable[[RunSide], str]) -> str:
        left, right = get(a), get(b)
        css = "km-same" if left == right else "km-diff"
        return f'<tr class="{css}"><th>{label}</th><td>{left}</td><td>{right}</td></tr>'

    runs = (
        "<table class='km-compare-runs'><thead><tr><th></th>"
        f'<th>a: <a href="{esc(notebook(a.path))}">{esc(a.path)}</a></th>'
        f'<th>b: <a href="{esc(notebook(b.path))}">{esc(b.path)}</a></th></tr></thead><tbody>'
        + run_row("Notebook", lambda s: esc(s.notebook or "(not recorded)"))
        + run_row("Status", lambda s: esc(s.status or "(not recorded)"))
        + run_row("Started", lambda s: esc(s.start or ""))
        + run_row("Duration", lambda s: _seconds_text(s.duration))
        + "</tbody></table>"
    )
    cells = []
    for pair in comparison.cells:
        differs = pair.outputs_same is False or not pair.source_same
        css = "km-diff" if differs else "km-same"
        if pair.a is None or pair.b is None:
            state = "only in a" if pair.b is None else "only in b"
        elif pair.outputs_same is None:
            state = "same" if pair.source_same else "source differs"
        else:
            state = "outputs same" if pair.outputs_same else "outputs differ"
            if not pair.source_same:
                state += ", source differs"

        def link(path: str, index: int | None) -> str:
            if index is None:
                return ""
            return f'<a href="{esc(notebook(path))}#km-cell-{index}">cell {index}</a>'

        cells.append(
            f'<tr class="km-cell-pair {css}" data-state="{esc(state)}">'
            f"<td>{link(a.path, pair.a)}</td><td>{link(b.path, pair.b)}</td>"
            f"<td>{esc(pair.kind)}</td><td><code>{esc(pair.label)}</code></td>"
            f"<td>{esc(state)}</td><td class='duration'>{_seconds_text(pair.seconds_a)}</td>"
            f"<td class='duration'>{_seconds_text(pair.seconds_b)}</td></tr>"
        )
    code = sum(1 for p in comparison.cells if p.outputs_same is not None)
    return (
        "<h1>Compare two runs</h1>"
        + warnings
        + runs
        + _values_table("Parameters", a.parameters, b.parameters)
        + _values_table("Results", a.results, b.results)
        + f"<h2>Cells <span class='muted' id='km-differing'>({comparison.differing_outputs} "
        f"of {code} code cells' outputs differ)</span></h2>"
        + "<table class='km-compare-cells'><thead><tr><th>a</th><th>b</th><th>kind</th>"
        "<th>cell</th><th>outputs</th><th>time a</th><th>time b</th></tr></thead>"
        f"<tbody>{''.join(cells)}</tbody></table>"
    )


def two_paths(pairs: Sequence[tuple[str, str]]) -> tuple[str, str | None]:
    """`a` and `b` from the query, or the two `run` values the runs view's checkboxes send;
    BadRequest when they are not one or two paths."""
    a = [v for k, v in pairs if k == "a"]
    b = [v for k, v in pairs if k == "b"]
    chosen = [v for k, v in pairs if k == "run"]
    if chosen and not (a or b):
        if len(chosen) != 2:
            raise BadRequest(f"choose two runs to compare, not {len(chosen)}")
        return chosen[0], chosen[1]
    if len(a) != 1 or len(b) > 1:
        raise BadRequest("compare takes ?a=PATH&b=PATH: the two notebooks' paths")
    return a[0], (b[0] if b else None)
