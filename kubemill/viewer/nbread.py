"""Reading an executed notebook's JSON, the one way the viewer's pages do: the renderer, the
re-run form and the comparison of two runs read the same bytes and the same metadata.

Leniently, as a reader must: not the runner's `parse_notebook`, which makes a notebook fit to
execute and rejects what it cannot run. Anything inside the notebook can be of any type (it is
the notebook's own JSON), so the readers below answer with an empty value instead of failing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "NotebookUnreadable",
    "load",
    "mapping",
    "run_metadata",
    "string",
    "tags",
    "text",
]


class NotebookUnreadable(ValueError):
    """The bytes are not a notebook the viewer reads; the message says why ("it is not JSON
    (...)"), for the caller to prefix with the notebook's name."""


def load(data: bytes) -> dict[str, Any]:
    """The notebook's JSON object, with `cells` a list; an nbformat 1-3 notebook is upgraded
    to version 4, which keeps its cells' positions (so cell numbers mean the same everywhere).
    NotebookUnreadable when it is none of these."""
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise NotebookUnreadable(f"it is not UTF-8 text (byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise NotebookUnreadable(f"it is not JSON ({exc})") from None
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise NotebookUnreadable("it is not a Jupyter notebook (it has no 'nbformat' field)")
    major = raw.get("nbformat")
    if major in (1, 2, 3):
        import nbformat  # only for old notebooks: its import costs a few hundred ms

        try:
            raw = dict(nbformat.convert(nbformat.from_dict(raw), 4))
        except Exception as exc:
            raise NotebookUnreadable(f"its nbformat {major} could not be read ({exc!r})") from None
    elif major != 4:
        raise NotebookUnreadable(f"it has nbformat {major!r}; the viewer reads versions 1 to 4")
    if not isinstance(raw.get("cells"), list):
        raise NotebookUnreadable("its 'cells' is not a list")
    return raw


def mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def string(value: Any) -> str | None:
    """`value` when it is a string that is not empty, else None."""
    return value if isinstance(value, str) and value else None


def text(value: Any) -> str:
    """A multiline field as nbformat allows it (a string, or a list of strings), else ""."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(v for v in value if isinstance(v, str))
    return ""


def tags(cell: Mapping[str, Any]) -> frozenset[str]:
    """A cell's tags (`metadata.tags`), the strings among them."""
    found = mapping(cell.get("metadata")).get("tags")
    return (
        frozenset(t for t in found if isinstance(t, str))
        if isinstance(found, list)
        else frozenset()
    )


def run_metadata(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """What kubemill recorded of the run (`metadata.kubemill`), empty when nothing was."""
    return mapping(mapping(raw.get("metadata")).get("kubemill"))
