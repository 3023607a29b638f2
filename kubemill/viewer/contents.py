"""Jupyter contents-API models (Jupyter Server's REST API, `GET /api/contents/<path>`), pure.

The shapes are those of jupyter_server's FileContentsManager, which the tests use as the
reference next to the OpenAPI document it ships: every key present, `null` where a value does
not apply, timestamps in ISO 8601 with `Z`. Everything is `writable: false`: the viewer has no
write path. S3 keeps no creation time, so `created` is the last modification; an S3 folder
has no time at all (it is a key prefix), so its times are the Unix epoch (Jupyter's API has
no way to say unknown).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from .errors import BadRequest
from .listing import Entry
from .paths import is_notebook

__all__ = [
    "Format",
    "Kind",
    "directory_model",
    "entry_model",
    "file_model",
    "isoformat",
    "parse_query",
]

Kind = Literal["directory", "file", "notebook"]
Format = Literal["json", "text", "base64"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def isoformat(moment: datetime | None) -> str:
    """Like jupyter_server._tz.isoformat: UTC with a `Z`."""
    return (moment or _EPOCH).astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_query(
    content: str | None, kind: str | None, fmt: str | None
) -> tuple[bool, Kind | None, Format | None]:
    """`content=0|1`, `type` and `format` as Jupyter Server reads them (content defaults to 1)."""
    if content not in (None, "0", "1"):
        raise BadRequest(f"content {content!r} is invalid; use 0 or 1")
    if kind not in (None, "directory", "file", "notebook"):
        raise BadRequest(f"type {kind!r} is invalid; use directory, file or notebook")
    if fmt not in (None, "text", "base64", "json"):
        raise BadRequest(f"format {fmt!r} is invalid; use text or base64")
    return content != "0", kind, fmt  # type: ignore[return-value]


def _model(path: str, kind: Kind, modified: datetime | None, size: int | None) -> dict[str, Any]:
    stamp = isoformat(modified)
    return {
        "name": path.rpartition("/")[2],
        "path": path,
        "type": kind,
        "writable": False,
        "created": stamp,
        "last_modified": stamp,
        "size": size,
        "mimetype": None,
        "content": None,
        "format": None,
        "hash": None,
        "hash_algorithm": None,
    }


def entry_model(folder: str, entry: Entry) -> dict[str, Any]:
    """A folder listing's row: the model without content, as Jupyter lists a directory."""
    path = f"{folder}/{entry.name}" if folder else entry.name
    if entry.is_dir:
        return _model(path, "directory", entry.modified, None)
    if is_notebook(entry.name):
        return _model(path, "notebook", entry.modified, entry.size)
    model = _model(path, "file", entry.modified, entry.size)
    model["mimetype"] = _mimetype(entry.name)
    return model


def directory_model(
    path: str, modified: datetime | None, entries: Iterable[Entry] | None
) -> dict[str, Any]:
    """A directory; `entries` None for content=0."""
    model = _model(path, "directory", modified, None)
    if entries is not None:
        model["content"] = [entry_model(path, entry) for entry in entries]
        model["format"] = "json"
    return model


def _mimetype(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def file_model(
    path: str,
    modified: datetime,
    size: int,
    data: bytes | None,
    kind: Kind | None,
    fmt: Format | None,
) -> dict[str, Any]:
    """A notebook or file model; `data` None for content=0.

    A `.ipynb` is a notebook unless `type=file` asks for its text; a notebook's content is its
    JSON, a file's is text when it is UTF-8 (or `format=text` demands it) and base64 otherwise,
    as Jupyter Server decides.
    """
    if kind == "directory":
        raise BadRequest(f"{path} is not a directory", "bad type")
    as_notebook = kind == "notebook" or (kind is None and is_notebook(path))
    if as_notebook:
        model = _model(path, "notebook", modified, size)
        if data is not None:
            if fmt not in (None, "json"):
                raise BadRequest(f"{path}: a notebook's format is json", "bad format")
            try:
                model["content"] = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                raise BadRequest(f"{path} is not a notebook (not JSON)", "bad type") from None
            if not isinstance(model["content"], dict):
                raise BadRequest(f"{path} is not a notebook", "bad type")
            model["format"] = "json"
        return model
    model = _model(path, "file", modified, size)
    mimetype = _mimetype(path)
    model["mimetype"] = mimetype
    if data is None:
        return model
    if fmt == "json":
        raise BadRequest(f"{path}: a file's format is text or base64", "bad format")
    if fmt != "base64":
        try:
            model["content"] = data.decode("utf-8")
            model["format"] = "text"
            if mimetype == "application/octet-stream":
                model["mimetype"] = "text/plain"
            return model
        except UnicodeDecodeError:
            if fmt == "text":
                raise BadRequest(f"{path} is not UTF-8 text", "bad format") from None
    model["content"] = base64.b64encode(data).decode("ascii")
    model["format"] = "base64"
    return model
