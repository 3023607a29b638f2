"""The viewer's web application: folder listings, raw objects, notebook pages, a read-only
Jupyter contents API, all under one base path.

Handlers are thin: clean the path, ask the store (in a thread: boto3 blocks), build a page or a
model with the pure modules, answer. Every response carries the security headers, errors
included; a ViewerError becomes its status (400, 404, 502) as an HTML page, or as JSON under
/api/. Only GET and HEAD are routed, so aiohttp answers every other method with 405 and an Allow
header: there is no write path to reach.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar
from urllib.parse import quote, urlencode

from aiohttp import web

from kubemill.runner import __version__

from . import access, actions, contents, listing, pages, paths, render, render_assets, runsview
from .auth import Identity
from .cache import CachedPage, MemoryCache, RenderCache, shared
from .errors import BadRequest, NotFound, TooLarge, ViewerError
from .folders import FolderCache
from .pages import document as _document
from .pages import document_shell
from .pages import esc as _esc
from .pages import size as _size
from .pages import time_html as _time
from .render_assets import FRAME_SCRIPT_CSP_HASH, VIEWER_JS
from .runindex import IndexNotBuilt, RunIndex
from .runindex_sql import BadCursor
from .runsquery import RunsQuery, parse_runs_query
from .settings import ViewerSettings
from .storage import LocalStore, ObjectInfo, Store, list_folder

__all__ = ["Renderer", "create_app", "serve"]

log = logging.getLogger("kubemill.viewer")

P = ParamSpec("P")
T = TypeVar("T")

#: Scripts only from the viewer itself (a notebook's own inline scripts do not run), styles
#: inline too (notebook markdown keeps its sanitized style attributes), images from the viewer
#: or inline (plots), no framing by other sites, no plugins, forms post nowhere else.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
#: A notebook page: as PAGE_CSP, plus the one script each output frame runs (it reports its
#: height; allowed by hash, see render_assets.FRAME_SCRIPT) and frames from the viewer itself
#: (outputs loaded on demand, each sandboxed without same-origin).
NOTEBOOK_CSP = (
    f"default-src 'self'; script-src 'self' {FRAME_SCRIPT_CSP_HASH}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
    "frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
#: One output of a notebook, loaded into a frame of the notebook's page: it runs in an opaque
#: origin (render.OUTPUT_CSP) and only the viewer's own pages may frame it.
OUTPUT_CSP = f"{render.OUTPUT_CSP}; frame-ancestors 'self'"
#: Raw objects (an .html or .svg in a run folder) open in a sandbox: a unique origin that can
#: run nothing and reach neither the viewer's API nor its cookies.
FILES_CSP = (
    "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}

ALLOWED = "GET, HEAD"


class Rendered(Protocol):
    """What kubemill.viewer.render.render_notebook returns."""

    @property
    def title(self) -> str: ...
    @property
    def head(self) -> str: ...
    @property
    def body(self) -> str: ...


class Renderer(Protocol):
    """render.render_notebook's signature: a notebook's bytes to HTML parts; `link` maps a
    storage URL to a viewer URL within this store (None outside it); `script_url` is where the
    page's script is served. Tests pass their own, wrapping the real one."""

    def __call__(
        self,
        data: bytes,
        *,
        name: str,
        link: Callable[[str], str | None],
        script_url: str | None = None,
    ) -> Rendered: ...


#: Notebook versions (HEADs) kept for notebook_version: about 200 bytes each.
VERSIONS_KEPT = 50_000


class _Viewer:
    """The application's state: settings, store, caches, thread pool. One per application."""

    def __init__(
        self,
        settings: ViewerSettings,
        store: Store,
        renderer: Renderer,
        reviews: access.Reviews | None = None,
    ) -> None:
        self.settings = settings
        self.base = settings.base_path
        self.store = store
        self.renderer = renderer
        self.folders = FolderCache(settings.listing_ttl, settings.listing_max_entries)
        self.pages = RenderCache(settings.cache_dir, settings.cache_max_bytes)
        # Half of the memory for notebooks' bytes (the re-run form, compare), half for their
        # parsed outputs (a page's outputs loaded on demand).
        self.blobs: MemoryCache[tuple[str, str], bytes] = MemoryCache(
            settings.notebook_memory_bytes // 2
        )
        self.outputs_kept: MemoryCache[tuple[str, str], render.Outputs] = MemoryCache(
            settings.notebook_memory_bytes // 2
        )
        # A page depends on the object's version, on the code that rendered it and on the
        # links it holds (the base path, and the root they are relative to): all are in its
        # cache key, which viewers of other roots may share.
        self.variant = f"{__version__}|{_renderer_version()}|{self.base}|{store.root}"
        self.script_url = f"{self.base}/static/viewer.js"
        self.link = paths.link_mapper(store.root, self.base)
        self.executor = ThreadPoolExecutor(settings.threads, thread_name_prefix="kubemill-view")
        self.keeper = runsview.IndexKeeper(
            RunIndex(settings.runs_index_dir), store.objects(), settings.refresh_seconds
        )
        self.links = runsview.Links(
            runs=lambda pairs: f"{self.base}/runs{runsview.query_string(pairs)}",
            api_runs=lambda pairs: f"{self.base}/api/runs{runsview.query_string(pairs)}",
            notebook=lambda path: self.url("view", path),
            folder=lambda path: self.url("tree", path, folder=True),
            files=self.url("tree", "", folder=True),
            compare=f"{self.base}/compare",
        )
        self._rendering: dict[str, asyncio.Future[CachedPage]] = {}
        self._versions: dict[str, tuple[float, ObjectInfo]] = {}
        self.gate = access.Gate(settings, reviews, self.run, self.keeper.index, RETRY_BUILDING)
        self._reading: dict[tuple[str, str], asyncio.Future[tuple[str, render.Outputs]]] = {}
        self._parsing: set[asyncio.Future[tuple[str, render.Outputs]]] = set()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def _lister(self, path: str) -> Callable[[], Awaitable[list[listing.Entry]]]:
        return lambda: self.run(list_folder, self.store, path)

    async def entries(self, path: str) -> tuple[listing.Entry, ...]:
        return await self.folders.entries(path, self._lister(path))

    async def arranged(self, path: str, sort: listing.Sort) -> listing.Arranged:
        async def sorter(
            entries: tuple[listing.Entry, ...], sort: listing.Sort
        ) -> listing.Arranged:
            return await self.run(listing.arrange, entries, sort)

        return await self.folders.arranged(path, sort, self._lister(path), sorter)

    def url(self, route: str, path: str, *, folder: bool = False) -> str:
        return paths.join(self.base, route, path, folder=folder)

    def object_url(self, path: str) -> str:
        return self.url("view" if paths.is_notebook(path) else "files", path)

    async def notebook_version(self, path: str) -> ObjectInfo:
        """A notebook's HEAD, asked again only after listing_ttl seconds (5): a page shown
        again at once costs no request to S3, and a notebook a run is still writing shows its
        new version within those seconds, as a folder listing shows a new run."""
        now = time.monotonic()
        seen = self._versions.get(path)
        if seen is not None and now - seen[0] < self.settings.listing_ttl:
            return seen[1]
        info = await self.run(self.store.head, path)
        if len(self._versions) >= VERSIONS_KEPT:
            self._versions.clear()  # whole, now and then: cheaper than an LRU for this use
        self._versions[path] = (now, info)
        return info

    def page_key(self, info: ObjectInfo) -> str:
        return self.pages.key(info.path, info.etag, self.variant)

    async def page(self, info: ObjectInfo) -> CachedPage:
        """The rendered page of this version of a notebook (`info` from a HEAD): from the
        cache, or rendered once however many requests ask for it meanwhile."""
        key = self.page_key(info)

        async def cached_or_rendered() -> CachedPage:
            cached = await self.run(self.pages.get, key)
            return cached if cached is not None else await self._render(info.path)

        # Joined before the cache is even asked: a request whose cache miss came just before
        # another one's page was stored would otherwise render the page a second time.
        return await shared(self._rendering, key, cached_or_rendered)

    async def _render(self, path: str) -> CachedPage:
        etag, data = await self.notebook(path)
        name = path.rpartition("/")[2]
        rendered = await self.run(
            self.renderer, data, name=name, link=self.link, script_url=self.script_url
        )
        page = CachedPage(rendered.title, rendered.head, await self.run(rendered.body.encode))
        if b"?output=" in page.body:
            self._read_outputs(path, etag, data)
        # Keyed by the version actually rendered (it may be newer than the HEAD's).
        try:
            await self.run(self.pages.put, self.pages.key(path, etag, self.variant), page)
        except OSError as exc:  # a full or read-only cache folder costs speed, not the page
            log.warning("cannot keep the page of %s in %s: %s", path, self.settings.cache_dir, exc)
        return page

    def readable(self, info: ObjectInfo) -> None:
        """TooLarge for an object the viewer will not hold whole in memory."""
        limit = self.settings.max_read_bytes
        if info.size > limit:
            raise TooLarge(
                f"{info.path} is {_size(info.size)}, more than the viewer reads whole "
                f"({_size(limit)}); download it: {self.url('files', info.path)}"
            )

    async def notebook(self, path: str, etag: str | None = None) -> tuple[str, bytes]:
        """A notebook's (etag, bytes), from memory when this version was read lately (the
        re-run form and compare read the notebook a page was just rendered from)."""
        if etag is not None:
            kept = self.blobs.get((path, etag))
            if kept is not None:
                return etag, kept
        stored = await self.run(self.store.get, path)
        self.blobs.put((path, stored.info.etag), stored.data, len(stored.data))
        return stored.info.etag, stored.data

    def _read_outputs(self, path: str, etag: str, data: bytes) -> None:
        """Parse the outputs of a page just rendered, in the background: the browser asks for
        those it left out as soon as the page arrives, and they join this parse (`outputs`)
        instead of reading the notebook from S3 again."""
        if self.outputs_kept.get((path, etag)) is not None or (path, etag) in self._reading:
            return

        async def parse() -> tuple[str, render.Outputs]:
            outputs = await self.run(render.outputs_of, data)
            self.outputs_kept.put((path, etag), outputs, len(data))
            return etag, outputs

        def done(task: asyncio.Future[tuple[str, render.Outputs]]) -> None:
            self._parsing.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.warning("cannot read the outputs of %s: %s", path, task.exception())

        task = asyncio.ensure_future(shared(self._reading, (path, etag), parse))
        self._parsing.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(done)

    async def outputs(self, path: str, etag: str) -> tuple[str, render.Outputs]:
        """The outputs of a notebook's version `etag` (a HEAD's), with the version actually
        read: parsed once and kept in memory, since its page loads each big output on demand
        and a browser asks for many of them at once."""
        kept = self.outputs_kept.get((path, etag))
        if kept is not None:
            return etag, kept

        async def read() -> tuple[str, render.Outputs]:
            stored = await self.run(self.store.get, path)
            outputs = await self.run(render.outputs_of, stored.data)
            self.outputs_kept.put((path, stored.info.etag), outputs, len(stored.data))
            return stored.info.etag, outputs

        return await shared(self._reading, (path, etag), read)


def _renderer_version() -> str:
    """The render modules' own digest: a page rendered by other code is not served from the
    cache, even when kubemill's version number did not change (a development checkout)."""
    digest = hashlib.sha256()
    for module in (render, render_assets, pages):
        digest.update(Path(str(module.__file__)).read_bytes())
    return digest.hexdigest()[:16]


VIEWER: web.AppKey[_Viewer] = web.AppKey("viewer", _Viewer)


# --- pages ---------------------------------------------------------------------------------


def _crumbs(viewer: _Viewer, path: str) -> str:
    crumbs = paths.breadcrumbs(path)
    links = [
        f'<a href="{_esc(viewer.url("tree", p, folder=True))}">{_esc(n)}</a>'
        for n, p in crumbs[:-1]
    ]
    links.append(f"<strong>{_esc(crumbs[-1][0])}</strong>")
    return f'<nav class="crumbs">{" / ".join(links)}</nav>'


def _error_page(viewer: _Viewer | None, status: int, message: str) -> web.Response:
    home = f'<a href="{_esc(viewer.url("tree", ""))}">kubemill view</a>' if viewer else ""
    body = f'<header>{home}</header><main><h1>{status}</h1><p class="error">{_esc(message)}</p>'
    return web.Response(
        status=status, text=_document(f"{status}", body + "</main>"), content_type="text/html"
    )


def _json_error(status: int, message: str, reason: str | None = None) -> web.Response:
    """Jupyter Server's error shape: {"message": ...}, with "reason" ('bad type', 'bad
    format') when there is one, as its OpenAPI document's 400 response has it."""
    body = {"message": message} if reason is None else {"message": message, "reason": reason}
    return web.json_response(body, status=status)


# --- handlers ------------------------------------------------------------------------------


def _path(request: web.Request) -> str:
    return paths.clean_path(request.match_info.get("path", ""))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.app[VIEWER].url("tree", ""))


async def tree(request: web.Request) -> web.Response:
    """A folder's listing, one page of it, sorted as the query asks (see listing)."""
    viewer = request.app[VIEWER]
    path = _path(request)
    sort, order = listing.parse_sort(request.query.get("sort"), request.query.get("order"))
    try:
        arranged = await viewer.arranged(path, sort)
    except NotFound:
        # A file's address typed under /tree/: send the reader to the file.
        await viewer.run(viewer.store.head, path)
        raise web.HTTPFound(viewer.object_url(path)) from None
    visible = await viewer.gate.visible(request[IDENTITY], path)
    if visible is not None:
        arranged = access.filter_arranged(arranged, visible)
    after = request.query.get("after")
    chosen = listing.page_of(arranged, order, after, viewer.settings.page_size)
    total = sum(len(group) for group in arranged.groups)
    here = viewer.url("tree", path, folder=True)
    where = viewer.store.root.rstrip("/") + "/" + (path + "/" if path else "")

    def query(**values: str) -> str:
        return "?" + urlencode(values, quote_via=quote)

    def heading(label: str, key: listing.Sort) -> str:
        # A column's first click sorts as one reads it (names A to Z, newest first).
        if sort == key:
            flip = "desc" if order == "asc" else "asc"
        else:
            flip = "desc" if key == "time" else "asc"
        mark = (" ▲" if order == "asc" else " ▼") if sort == key else ""
        return f'<a href="{_esc(here + query(sort=key, order=flip))}">{label}{mark}</a>'

    rows = []
    for entry in chosen.entries:
        child = f"{path}/{entry.name}" if path else entry.name
        if entry.is_dir:
            href, label, kind = viewer.url("tree", child, folder=True), entry.name + "/", "folder"
        else:
            href, label = viewer.object_url(child), entry.name
            kind = "notebook" if paths.is_notebook(entry.name) else "file"
        # A key with a "." or ".." segment has no URL of its own: a browser would resolve
        # the link to another object. It is listed, not linked.
        name = f'<a href="{_esc(href)}">{_esc(label)}</a>' if paths.linkable(child) else _esc(label)
        rows.append(
            f'<tr class="{kind}"><td>{name}</td>'
            f'<td class="size">{_size(entry.size)}</td><td>{_time(entry.modified)}</td></tr>'
        )
    nav = []
    if request.query.get("after"):
        nav.append(f'<a href="{_esc(here + query(sort=sort, order=order))}">first page</a>')
    if chosen.next_token:
        next_query = query(sort=sort, order=order, after=chosen.next_token)
        nav.append(f'<a rel="next" href="{_esc(here + next_query)}">next page</a>')
    views = pages.views_nav(viewer.links.files, viewer.links.runs(()))
    body = (
        f"<header>{_crumbs(viewer, path)}{views}</header><main>"
        f"<p>{total} entries in {_esc(where)}</p>"
        f'<table><thead><tr><th>{heading("Name", "name")}</th><th class="size">Size</th>'
        f"<th>{heading('Modified', 'time')}</th></tr></thead><tbody>{''.join(rows)}</tbody>"
        f'</table><p class="nav">{" ".join(nav)}</p></main>'
    )
    return web.Response(
        text=_document(f"{path or '/'} - kubemill view", body), content_type="text/html"
    )


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match against our strong ETag (weak comparison, as RFC 9110 asks for GET)."""
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or f'"{etag}"' in tags


#: Bytes read from the store per write to the client: large enough that a 50 MB notebook is
#: 50 thread hand-offs, small enough that many downloads at once stay within memory.
CHUNK = 1024 * 1024


async def files(request: web.Request) -> web.StreamResponse:
    """The object's bytes: its own type (never a script type), notebooks as a download,
    revalidated by ETag on every use (Cache-Control: no-cache) so a re-run's output shows."""
    viewer = request.app[VIEWER]
    path = _path(request)
    info = await viewer.run(viewer.store.head, path)
    name = path.rpartition("/")[2]
    headers = {
        "ETag": f'"{info.etag}"',
        "Last-Modified": format_datetime(info.modified.astimezone(UTC), usegmt=True),
        "Cache-Control": "no-cache",
        "Content-Security-Policy": FILES_CSP,
        "Content-Disposition": paths.content_disposition(
            "attachment" if paths.is_notebook(name) else "inline", name
        ),
    }
    if _etag_matches(request.headers.get("If-None-Match"), info.etag):
        return web.Response(status=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Type"] = paths.media_type(name)
        return web.Response(headers=headers)
    opened = await viewer.run(viewer.store.open, path)
    try:
        headers["ETag"] = f'"{opened.info.etag}"'
        headers["Content-Type"] = paths.media_type(name)
        response = web.StreamResponse(headers=headers)
        response.content_length = opened.info.size
        await response.prepare(request)
        try:
            while chunk := await viewer.run(opened.reader.read, CHUNK):
                await response.write(chunk)
        except Exception:
            # Too late for an error page: the status is sent. Cut the connection, so the
            # client sees a short download (Content-Length), not a complete wrong one.
            log.exception("GET %s: reading the object failed midway", request.path)
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
    finally:
        await viewer.run(opened.reader.close)


async def view(request: web.Request) -> web.Response:
    """A notebook's page: the rendered notebook under a bar with where it is and a download;
    with `?output=CELL.OUTPUT`, one output the page left out to stay small (render.py)."""
    viewer = request.app[VIEWER]
    path = _path(request)
    if not paths.is_notebook(path):
        await viewer.run(viewer.store.head, path)
        raise web.HTTPFound(viewer.url("files", path))
    if "output" in request.query:
        return await _output(request, viewer, path, request.query["output"])
    info = await viewer.notebook_version(path)
    viewer.readable(info)
    # The page is a function of the notebook's version and of the viewer (its cache key), so
    # a browser revalidating it costs one HEAD, not a page.
    headers = {
        "ETag": f'"{viewer.page_key(info)[:40]}"',
        "Cache-Control": "no-cache",
        "Content-Security-Policy": NOTEBOOK_CSP,
    }
    if _etag_matches(request.headers.get("If-None-Match"), headers["ETag"].strip('"')):
        return web.Response(status=304, headers=headers)
    page = await viewer.page(info)
    download = viewer.url("files", path)
    bar = (
        f"<header>{_crumbs(viewer, path)} · "
        f'<a href="{_esc(download)}" download>download .ipynb</a>'
        f"{actions.bar_links(viewer, path)}</header>"
    )
    start, end = document_shell(page.title or path, page.head)
    return web.Response(
        body=b"".join((f"{start}{bar}<main>".encode(), page.body, f"</main>{end}".encode())),
        content_type="text/html",
        charset="utf-8",
        headers=headers,
    )


async def _output(request: web.Request, viewer: _Viewer, path: str, which: str) -> web.Response:
    """One output on its own, sandboxed; revalidated by the notebook version's ETag."""
    cell, dot, number = which.partition(".")
    if not (dot and (cell + number).isascii() and cell.isdigit() and number.isdigit()):
        raise BadRequest(f"output {which!r} is not CELL.OUTPUT")
    info = await viewer.notebook_version(path)
    viewer.readable(info)
    headers = {
        "ETag": f'"{info.etag}-{int(cell)}.{int(number)}"',
        "Cache-Control": "no-cache",
        "Content-Security-Policy": OUTPUT_CSP,
        "X-Frame-Options": "SAMEORIGIN",
    }
    if _etag_matches(request.headers.get("If-None-Match"), headers["ETag"].strip('"')):
        return web.Response(status=304, headers=headers)
    etag, outputs = await viewer.outputs(path, info.etag)
    headers["ETag"] = f'"{etag}-{int(cell)}.{int(number)}"'
    try:
        media, body = await viewer.run(render.output_of, outputs, int(cell), int(number))
    except render.OutputNotFound as exc:
        raise NotFound(str(exc)) from None
    headers["Content-Type"] = media
    return web.Response(body=body, headers=headers)


async def viewer_js(request: web.Request) -> web.Response:
    return web.Response(
        text=VIEWER_JS,
        content_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600"},
    )


#: Seconds a client waits before asking again while the first runs index is being built.
RETRY_BUILDING = 5


async def _runs_page(
    request: web.Request,
) -> tuple[_Viewer, RunsQuery, runsview.RunsPage | None]:
    """The runs page the query asks for; None while there is no index yet."""
    viewer = request.app[VIEWER]
    query = parse_runs_query(request.query.items())
    try:
        allowed = await viewer.gate.readable_namespaces(request[IDENTITY])
        if allowed is not None:
            query = dataclasses.replace(
                query, filters=dataclasses.replace(query.filters, allowed_namespaces=allowed)
            )
        page = await viewer.run(runsview.fetch, viewer.keeper.index, query)
    except IndexNotBuilt:
        return viewer, query, None
    except BadCursor as exc:  # checked when parsed; here for a cursor of another index file
        raise BadRequest(f"{exc}; start again from the first page") from None
    return viewer, query, page


async def runs(request: web.Request) -> web.Response:
    """`GET /runs`: the runs of the store, filtered, searched, sorted and paged (runsquery).
    Until the first index exists: 503 with Retry-After, a page that says so and reloads, so a
    person reads why and a script (or a proxy's health check) sees "not yet", not an empty list.
    """
    viewer, query, page = await _runs_page(request)
    if page is None:
        keeper = viewer.keeper
        waited = time.monotonic() - keeper.started
        body = runsview.building_html(viewer.links, keeper.error, waited, RETRY_BUILDING)
        return web.Response(
            status=503,
            text=_document(
                "runs - kubemill view",
                body,
                f'<meta http-equiv="refresh" content="{RETRY_BUILDING}">',
            ),
            content_type="text/html",
            headers={"Retry-After": str(RETRY_BUILDING)},
        )
    return web.Response(
        text=_document("runs - kubemill view", runsview.page_html(page, query, viewer.links)),
        content_type="text/html",
    )


async def api_runs(request: web.Request) -> web.Response:
    """`GET /api/runs`: the same page as JSON (runsview.page_json); 503 with Retry-After and
    {"message": ...} until the first index exists."""
    viewer, query, page = await _runs_page(request)
    if page is None:
        message = "the runs index is being built; ask again after Retry-After seconds"
        if viewer.keeper.error:
            message += f" (the last attempt failed: {viewer.keeper.error})"
        response = _json_error(503, message)
        response.headers["Retry-After"] = str(RETRY_BUILDING)
        return response
    return web.json_response(
        runsview.page_json(page, query, viewer.links),
        dumps=functools.partial(json.dumps, ensure_ascii=False),
    )


async def api_contents(request: web.Request) -> web.Response:
    """`GET /api/contents/<path>`: Jupyter Server's model of a file, notebook or directory."""
    viewer = request.app[VIEWER]
    path = _path(request)
    with_content, kind, fmt = contents.parse_query(
        request.query.get("content"), request.query.get("type"), request.query.get("format")
    )
    model: dict[str, Any]
    try:
        if not path:
            raise NotFound("the root is a folder")
        info = await viewer.run(viewer.store.head, path)
    except NotFound:
        if not await viewer.run(viewer.store.is_folder, path):
            raise NotFound(f"No such file or directory: {path}") from None
        if kind in ("file", "notebook"):
            raise BadRequest(f"{path or '/'} is a directory, not a {kind}", "bad type") from None
        entries = sorted(await viewer.entries(path), key=lambda e: e.name) if with_content else None
        visible = await viewer.gate.visible(request[IDENTITY], path)
        if entries is not None and visible is not None:
            entries = [e for e in entries if visible(e.name)]
        modified = await viewer.run(viewer.store.folder_modified, path)
        model = contents.directory_model(path, modified, entries)
    else:
        if with_content:
            viewer.readable(info)
        data = (await viewer.run(viewer.store.get, path)).data if with_content else None
        model = contents.file_model(path, info.modified, info.size, data, kind, fmt)
    response = web.json_response(model, dumps=functools.partial(json.dumps, ensure_ascii=False))
    # An HTTP date, as Jupyter Server sends it (tornado formats the model's datetime).
    moment = datetime.fromisoformat(model["last_modified"])
    response.headers["Last-Modified"] = format_datetime(moment, usegmt=True)
    return response


# --- application ---------------------------------------------------------------------------


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Failures as their status: JSON under /api/, an HTML page elsewhere. A bug is a 500 of
    the same shape (with the security headers), logged with its traceback."""
    viewer = request.app[VIEWER]
    api = request.path.startswith(f"{viewer.base}/api/")
    try:
        return await handler(request)
    except ViewerError as exc:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        reason = getattr(exc, "reason", None)
        if api:
            response = _json_error(exc.status, exc.message, reason)
        else:
            response = _error_page(viewer, exc.status, exc.message)
        response.headers.update(exc.headers)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 405:
            exc.headers["Allow"] = ALLOWED
        if api:
            response = _json_error(exc.status, exc.reason)
        else:
            response = _error_page(viewer, exc.status, exc.reason)
        response.headers.update({k: v for k, v in exc.headers.items() if k == "Allow"})
        return response
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        message = "the viewer failed on this request; its log has the details"
        return _json_error(500, message) if api else _error_page(viewer, 500, message)


def addressed_here(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a request's Host (name or address, with or without a port) names this machine
    or one of the `allowed` names. Browsers send the name a page was loaded from, so a page of
    another site whose name now resolves to 127.0.0.1 fails here."""
    if host.startswith("["):  # [::1]:8866
        name = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:  # name:port
        name = host.split(":")[0]
    else:  # a name without a port, or a bare IPv6 address
        name = host
    name = name.lower().rstrip(".")
    if name == "localhost" or name in (a.lower() for a in allowed):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@web.middleware
async def trusted_host(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Without authentication, only requests addressed to this machine. With it, any name
    (the cluster's Service, an ingress): a rebound name reaches nothing without a login."""
    settings = request.app[VIEWER].settings
    if not settings.auth_modes and not addressed_here(request.host, settings.allowed_hosts):
        raise web.HTTPForbidden(
            reason=f"the viewer answers requests addressed to this machine only, not to "
            f"{request.host!r}; start it with --allow-host NAME for a name a proxy passes on"
        )
    return await handler(request)


#: Where a request's identity is kept for its handler.
IDENTITY: web.RequestKey[Identity] = web.RequestKey("identity", Identity)
#: Routes anyone may ask: the probes' health check, and the page script (no data in it).
OPEN_ROUTES = ("healthz", "static/viewer.js")


@web.middleware
async def authenticated(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every request's identity (kubemill.viewer.access), before any route answers; and, for
    a route that names a store path, the decision whether it may read it, made before the
    store is asked, so no answer tells whether a path it may not read exists."""
    viewer = request.app[VIEWER]
    if viewer.gate.enabled and request.path in {f"{viewer.base}/{r}" for r in OPEN_ROUTES}:
        return await handler(request)
    identity = await viewer.gate.authenticate(request.headers, request.remote)
    request[IDENTITY] = identity
    if "path" in request.match_info:
        await viewer.gate.check_path(identity, _path(request))
    return await handler(request)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def create_app(
    settings: ViewerSettings,
    *,
    store: Store | None = None,
    renderer: Renderer | None = None,
    reviews: access.Reviews | None = None,
) -> web.Application:
    """The viewer over `store` (made from `settings.root` when not given: a folder, or an S3
    prefix read through the runner's S3 client), rendering with `renderer` (the render module's
    when not given), asking the API server's `reviews` who people are and what they may read
    (needed when settings.auth_modes names any)."""
    if settings.auth_modes and reviews is None:
        raise ViewerError("authentication needs the Kubernetes API for its reviews")
    app = web.Application(middlewares=[errors, trusted_host, authenticated])
    app.on_response_prepare.append(_security_headers)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        chosen = store if store is not None else make_store(settings)
        viewer = _Viewer(settings, chosen, renderer or render.render_notebook, reviews)
        app[VIEWER] = viewer
        keeping = asyncio.create_task(viewer.keeper.keep(), name="kubemill-runindex")
        yield
        viewer.executor.shutdown(wait=False, cancel_futures=True)
        await viewer.keeper.stop(keeping)

    app.cleanup_ctx.append(lifetime)
    base = settings.base_path
    app.router.add_get(f"{base}/healthz", healthz)
    app.router.add_get(f"{base}/static/viewer.js", viewer_js)
    app.router.add_get(f"{base}/", home)
    if base:
        app.router.add_get(base, home)
    # Any path, newlines included (a key may hold one; `.` would not match it).
    anything = r"{path:[\s\S]*}"
    for route, handler in (("tree", tree), ("files", files), ("view", view)):
        app.router.add_get(f"{base}/{route}", home if route == "tree" else _missing)
        app.router.add_get(f"{base}/{route}/" + anything, handler)
    app.router.add_get(f"{base}/runs", runs)
    app.router.add_get(f"{base}/api/runs", api_runs)
    app.router.add_get(f"{base}/api/contents", api_contents)
    app.router.add_get(f"{base}/api/contents/" + anything, api_contents)
    actions.register(app, base, anything)
    return app


async def _missing(request: web.Request) -> web.Response:
    raise NotFound("no path given")


def make_store(settings: ViewerSettings) -> Store:
    """The store `settings.root` names, S3 through the runner's client (same endpoint, region
    and credential chain as `kubemill run`)."""
    if settings.root.startswith("s3://"):
        from kubemill.runner.storage import make_s3_client

        from .runindex import WORKERS
        from .s3lean import LeanS3
        from .storage import S3Store

        # One pool for the request threads and the runs index's readers together: a smaller
        # one (botocore's 10) threw away the connection of every read beyond it, so a rebuild
        # opened a new connection for most of its 100,000 GETs.
        connections = settings.threads + WORKERS
        client = make_s3_client(
            settings.s3_endpoint_url, settings.s3_region, connections=connections
        )
        return S3Store(client, settings.root, LeanS3.of(client, connections))
    return LocalStore(settings.root)


def url_of(settings: ViewerSettings, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{settings.base_path}/"


async def serve(
    settings: ViewerSettings,
    ready: Callable[[str], None],
    *,
    store: Store | None = None,
    reviews: access.Reviews | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then close connections and stop; `ready(url)` is called
    once the socket is bound (with the real port when settings.port is 0)."""
    import signal

    app = create_app(settings, store=store, reviews=reviews)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        ready(url_of(settings, settings.host, int(port)))
        await stop.wait()
    finally:
        await runner.cleanup()
