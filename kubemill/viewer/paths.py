"""Paths inside a store, as they appear in URLs and as keys: pure functions, table-tested.

A path is what follows `/tree/`, `/files/`, `/view/` or `/api/contents/` in a URL once the URL is
percent-decoded (once, by aiohttp): segments joined by `/`, no leading or trailing `/`, the
store's root being "". It is the S3 key below the store's prefix, or the file below its folder.
Links are built by percent-encoding every segment, so keys with spaces, `+`, `%`, `#`, `?` and
non-ASCII letters survive the round trip to the browser and back.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from .errors import BadPath

__all__ = [
    "NOTEBOOK_SUFFIX",
    "breadcrumbs",
    "clean_path",
    "content_disposition",
    "is_notebook",
    "join",
    "link_mapper",
    "linkable",
    "media_type",
    "parent",
    "quote_path",
]

NOTEBOOK_SUFFIX = ".ipynb"

#: Types a browser may be given for a raw object. Anything a browser would run as a script from
#: our origin is sent as text/plain instead, so a stored .js cannot become a `<script src>` of a
#: rendered notebook (CSP allows scripts from 'self'); HTML and SVG are sent, but under a
#: sandboxing Content-Security-Policy (see app.files_headers).
_MEDIA_TYPES = {
    ".ipynb": "application/x-ipynb+json",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".py": "text/plain; charset=utf-8",
    ".yaml": "text/plain; charset=utf-8",
    ".yml": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".js": "text/plain; charset=utf-8",
    ".mjs": "text/plain; charset=utf-8",
}
_SCRIPT_TYPES = ("javascript", "ecmascript", "wasm")


def clean_path(raw: str) -> str:
    """The store path a decoded URL path names, or BadPath when it would leave the root.

    One trailing `/` is allowed (folders are linked with one); `..`, `.`, empty segments, a
    leading `/` (absolute) and NUL are refused rather than normalised, so a path has exactly
    one spelling and a cache or a permission check keyed by it cannot be sidestepped.
    """
    path = raw[:-1] if raw.endswith("/") else raw
    if not path:
        return ""
    if path.startswith("/"):
        raise BadPath(f"{raw!r} is absolute; paths are relative to the store's root")
    if "\x00" in path:
        raise BadPath("a path cannot contain NUL")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise BadPath(f"{raw!r} has an empty, '.' or '..' segment")
    return path


def linkable(path: str) -> bool:
    """Whether `path` has a URL of its own: a "." or ".." segment would be resolved away by
    the browser (encoded too: %2E%2E counts), so its link would open another object."""
    try:
        clean_path(path)
    except BadPath:
        return False
    return True


def quote_path(path: str) -> str:
    """`path` with each segment percent-encoded (UTF-8), the `/` between them kept."""
    return "/".join(quote(segment, safe="") for segment in path.split("/"))


def join(base: str, route: str, path: str, *, folder: bool = False) -> str:
    """The URL path of `path` under one of the viewer's routes, honouring the base path."""
    tail = quote_path(path) if path else ""
    if folder and tail:
        tail += "/"
    return f"{base}/{route}/{tail}"


def parent(path: str) -> str:
    return path.rpartition("/")[0]


def breadcrumbs(path: str) -> list[tuple[str, str]]:
    """(name, path) of each folder from the root down to `path`, the root named "/"."""
    crumbs = [("/", "")]
    if path:
        parts = path.split("/")
        crumbs += [(part, "/".join(parts[: i + 1])) for i, part in enumerate(parts)]
    return crumbs


def is_notebook(name: str) -> bool:
    return name.endswith(NOTEBOOK_SUFFIX)


def media_type(name: str) -> str:
    """The Content-Type to serve an object with (never a script type; see _MEDIA_TYPES)."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in _MEDIA_TYPES:
        return _MEDIA_TYPES[suffix]
    guessed = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    if any(word in guessed for word in _SCRIPT_TYPES):
        return "text/plain; charset=utf-8"
    if guessed.startswith("text/"):
        return f"{guessed}; charset=utf-8"
    return guessed


def content_disposition(kind: str, name: str) -> str:
    """`attachment` or `inline` with the file's name: RFC 6266's `filename*` (UTF-8) for
    browsers, and an ASCII `filename` without quotes, backslashes or control characters for
    the rest (a key may hold a newline, which in a header would end it)."""
    plain = "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in name)
    return f"{kind}; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def link_mapper(root: str, base: str) -> Callable[[str], str | None]:
    """A function from a storage URL to the viewer URL showing it, or None outside `root`.

    `root` is the store's own address: `s3://bucket/prefix/` or an absolute folder. Recorded
    lineage names inputs and upstream outputs by such URLs; this is what turns them into links.
    Notebooks link to their page, other objects to their raw bytes, folders (a trailing `/`)
    to their listing.
    """
    if root.startswith("s3://"):
        prefix = root if root.endswith("/") else root + "/"
    else:
        prefix = root.rstrip("/") + "/"

    def link(url: str) -> str | None:
        target = url
        if not root.startswith("s3://"):
            if target.startswith("file://"):
                target = unquote(urlsplit(target).path)
            target = str(PurePosixPath(target)) + ("/" if target.endswith("/") else "")
        if target + ("" if target.endswith("/") else "/") == prefix:
            return join(base, "tree", "")
        if not target.startswith(prefix):
            return None
        try:
            path = clean_path(target[len(prefix) :])
        except BadPath:
            return None
        if target.endswith("/"):
            return join(base, "tree", path, folder=True)
        return join(base, "view" if is_notebook(path) else "files", path)

    return link
