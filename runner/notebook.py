"""Notebook documents: reading any nbformat, the failure banner, serialization and results.

Pure functions over `NotebookNode`s; no kernel and no storage here.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_markdown_cell
from nbformat.v4.rwbase import rejoin_lines, strip_transient

from .contract import RECORD_MIMETYPE, SCRAPBOOK_MIMETYPES
from .errors import BadInputError
from .redact import Redactor

__all__ = [
    "ANCHOR_TAG",
    "BANNER_TAG",
    "collect_results",
    "error_anchor_cell",
    "parse_notebook",
    "remove_banners",
    "serialize",
    "status_banner",
]

BANNER_TAG = "kubemill-banner"
ANCHOR_TAG = "kubemill-error-anchor"
ANCHOR_ID = "kubemill-failed-cell"
# papermill's own banner and anchor cells, removed too so a re-run of a papermill output is clean.
_FOREIGN_TAGS = {"papermill-error-cell-tag"}


def parse_notebook(data: bytes, source: str) -> tuple[NotebookNode, list[str]]:
    """Parse notebook bytes into an nbformat 4 notebook; returns it and notes for the log.

    Validation is structural and cheap: a full JSON-schema validation costs more than executing
    a small notebook, and nbclient fails clearly on anything it cannot run.
    """
    notes: list[str] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInputError(
            f"{source} is not UTF-8 text (byte {exc.start}); expected a Jupyter notebook (.ipynb)"
        ) from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"{source} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "expected a Jupyter notebook (.ipynb), not a script or an HTML page"
        ) from None
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise BadInputError(
            f"{source} is JSON but not a Jupyter notebook (it has no 'nbformat' field)"
        )
    major = raw.get("nbformat")
    if not isinstance(major, int) or major < 1 or major > 4:
        raise BadInputError(f"{source} has nbformat {major!r}; kubemill reads versions 1 to 4")
    cells_key = "cells" if major == 4 else "worksheets"
    if not isinstance(raw.get(cells_key, []), list):
        raise BadInputError(f"{source} is not a valid notebook: '{cells_key}' is not a list")
    for index, cell in enumerate(raw.get("cells", []) if major == 4 else []):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise BadInputError(f"{source}: cell {index} has no valid cell_type")
    nb = nbformat.from_dict(raw)
    minor = raw.get("nbformat_minor", 0)
    try:
        if major < 4:
            nb = nbformat.convert(nb, 4)
            notes.append(f"upgraded {source} from nbformat {major}.{minor} to 4.5")
        else:
            rejoin_lines(nb)
            nb = strip_transient(nb)
            if not isinstance(minor, int) or minor < 5:
                nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=minor)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise BadInputError(f"{source} is not a valid notebook: {exc!r}") from None
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        cell.setdefault("metadata", NotebookNode())
        if not isinstance(cell.get("source", ""), str):
            raise BadInputError(f"{source}: cell {index} has a source that is not text")
        if cell["cell_type"] == "code":
            cell.setdefault("outputs", [])
            cell.setdefault("execution_count", None)
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not cell_id or cell_id in seen:
            cell["id"] = uuid.uuid4().hex[:8]
        seen.add(cell["id"])
    nb.setdefault("metadata", NotebookNode())
    return nb, notes


def _tags(cell: NotebookNode) -> list[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return list(tags) if isinstance(tags, list) else []


def remove_banners(nb: NotebookNode) -> None:
    """Drop banner and anchor cells left by an earlier kubemill or papermill run."""
    ours = {BANNER_TAG, ANCHOR_TAG} | _FOREIGN_TAGS
    nb.cells = [c for c in nb.cells if not ours.intersection(_tags(c))]


def status_banner(title: str, body: str, *, link_to_cell: bool, color: str) -> NotebookNode:
    """A markdown cell for the top of the output, saying how the run ended or how far it got."""
    link = f' <a href="#{ANCHOR_ID}">Go to the cell.</a>' if link_to_cell else ""
    cell: NotebookNode = new_markdown_cell(
        f'<span style="color:{color}; font-size:1.4em; font-weight:bold">{title}</span>\n\n'
        f"{body}{link}"
    )
    cell.metadata["tags"] = [BANNER_TAG]
    return cell


def error_anchor_cell(message: str) -> NotebookNode:
    """The marker placed right above the failing cell, the banner's link target."""
    cell: NotebookNode = new_markdown_cell(
        f'<span id="{ANCHOR_ID}" style="color:red; font-weight:bold">'
        f"The run stopped in the next cell: {message}</span>"
    )
    cell.metadata["tags"] = [ANCHOR_TAG]
    return cell


def serialize(nb: dict[str, Any], redactor: Redactor | None = None) -> bytes:
    """The notebook as .ipynb bytes, formatted like nbformat.writes, with secrets redacted.

    Skips nbformat's schema validation: it costs more than the write itself on large outputs.
    """
    doc = redactor.notebook(nb) if redactor else nb
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def collect_results(nb: NotebookNode) -> dict[str, Any]:
    """Values recorded with kubemill.record or scrapbook.glue, in execution order (last wins)."""
    results: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = output.get("data")
            if not isinstance(data, dict):
                continue
            ours = data.get(RECORD_MIMETYPE)
            if isinstance(ours, dict) and isinstance(ours.get("name"), str):
                results[ours["name"]] = ours.get("value")
            for mimetype in SCRAPBOOK_MIMETYPES:
                scrap = data.get(mimetype)
                if isinstance(scrap, dict) and isinstance(scrap.get("name"), str):
                    results[scrap["name"]] = scrap.get("data")
    return results
