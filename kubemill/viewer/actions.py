"""Acting on an executed notebook: download it as HTML, build a manifest that runs it again,
compare it with another run. The routes, registered by `register` from `app.create_app`.

Thin handlers: clean the path, read the notebook(s) through the viewer's store and memory cache,
decide with the pure modules (`rerun`, `compare`), answer. Every route is a GET, so the viewer
stays read-only: the re-run page builds a manifest for a person to apply with their own
credentials; the viewer never creates anything in a cluster.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from aiohttp import web

from . import compare, paths, render, rerun
from .errors import BadRequest, NotFound
from .pages import document, esc

if TYPE_CHECKING:
    from .app import _Viewer

__all__ = ["ACTIONS_JS", "bar_links", "register"]

#: Characters of the suffix that makes a re-run's name fresh: 36**5, 60 million names, the
#: same length as the API server's generateName suffix.
SUFFIX_LENGTH = 5
_SUFFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
#: At most this many sibling runs are offered to compare with (the runs view finds the rest).
PICKER_LIMIT = 200
#: At most this many sibling folders are looked into for an output.ipynb (one HEAD each), so a
#: folder of many folders that are not runs costs a bounded wait.
PICKER_CHECKS = 5 * PICKER_LIMIT

#: The re-run page's script, served at `{base}/static/actions.js`. The page works without it
#: (the form is a GET that the server answers with the manifest); with it, the manifest and the
#: fields' problems follow each keystroke (from `{base}/api/rerun/<path>`), and the Copy button
#: copies the manifest.
ACTIONS_JS = """\
"use strict";
(function () {
  var pre = document.getElementById("km-manifest");
  var copy = document.getElementById("km-copy");
  if (copy && pre) {
    copy.hidden = false;
    var label = copy.textContent;
    var done = function (ok) {
      copy.textContent = ok ? "Copied" : "Press Ctrl+C to copy";
      setTimeout(function () { copy.textContent = label; }, 2000);
    };
    var select = function () {
      var range = document.createRange();
      range.selectNodeContents(pre);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    };
    copy.addEventListener("click", function () {
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(pre.textContent).then(function () { done(true); }, select);
      } else {
        select();
      }
    });
  }
  var form = document.querySelector("form.km-rerun");
  if (!form || !pre) {
    return;
  }
  var api = form.getAttribute("data-api");
  var timer = null;
  var sent = 0;
  var update = function () {
    var query = new URLSearchParams(new FormData(form)).toString();
    var mine = ++sent;
    fetch(api + "?" + query, {headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (mine !== sent || !data.errors) {
          return;
        }
        pre.textContent = data.yaml || "";
        document.getElementById("km-command").textContent = data.command || "";
        var state = document.getElementById("km-manifest-state");
        state.hidden = data.valid;
        var boxes = form.querySelectorAll("[data-error-for]");
        for (var i = 0; i < boxes.length; i++) {
          var message = data.errors[boxes[i].getAttribute("data-error-for")];
          boxes[i].textContent = message || "";
          boxes[i].hidden = !message;
        }
        form.setAttribute("data-shown", query);
        history.replaceState(null, "", "?" + query);
      });
  };
  form.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(update, 150);
  });
})();
"""


def _viewer(request: web.Request) -> _Viewer:
    from .app import VIEWER

    return request.app[VIEWER]


async def _may_read(request: web.Request, path: str) -> None:
    """Forbidden unless the request's identity may read `path`. The app's middleware decides
    this for a route's own `<path>`; /compare names its two notebooks in the query, which it
    does not see."""
    from .app import IDENTITY

    await _viewer(request).gate.check_path(request[IDENTITY], path)


def _notebook_path(raw: str) -> str:
    """A notebook's store path from a query value: a run folder means its output.ipynb."""
    path = paths.clean_path(raw)
    if not path:
        raise BadRequest("a notebook's path is needed, not the root")
    return path if paths.is_notebook(path) else f"{path.rstrip('/')}/output.ipynb"


async def _exists(viewer: _Viewer, path: str) -> bool:
    try:
        await viewer.run(viewer.store.head, path)
    except NotFound:
        return False
    return True


async def _read(viewer: _Viewer, path: str) -> bytes:
    info = await viewer.run(viewer.store.head, path)
    viewer.readable(info)
    _, data = await viewer.notebook(path, info.etag)
    return data


def _page(viewer: _Viewer, title: str, crumbs: str, body: str, status: int = 200) -> web.Response:
    script = f'<script src="{esc(viewer.base)}/static/actions.js" defer></script>'
    head = f"<style>{rerun.ACTIONS_CSS}</style>{script}"
    return web.Response(
        status=status,
        text=document(title, f"<header>{crumbs}</header><main>{body}</main>", head),
        content_type="text/html",
    )


def _crumbs(viewer: _Viewer, path: str) -> str:
    runs = f'<a href="{esc(viewer.base)}/runs">runs</a>'
    return f'{runs} · <a href="{esc(viewer.url("view", path))}">{esc(path)}</a>'


def bar_links(viewer: _Viewer, path: str) -> str:
    """The notebook page's links to these actions (after its .ipynb download)."""
    compare_url = f"{viewer.base}/compare?" + paths_query(a=path)
    return (
        f' · <a href="{esc(viewer.url("html", path))}" download>download HTML</a>'
        f' · <a href="{esc(viewer.url("rerun", path))}">run again</a>'
        f' · <a href="{esc(compare_url)}">compare with another run</a>'
    )


def paths_query(**values: str) -> str:
    return urlencode(values, quote_via=quote)


# --- run again ------------------------------------------------------------------------------


async def _form(request: web.Request) -> tuple[_Viewer, str, rerun.Form]:
    viewer = _viewer(request)
    path = paths.clean_path(request.match_info.get("path", ""))
    if not paths.is_notebook(path):
        raise NotFound(f"{path or '/'} is not a notebook (.ipynb)")
    data = await _read(viewer, path)
    try:
        source = await viewer.run(rerun.read_source, data)
    except rerun.ValueProblem as exc:
        raise BadRequest(f"{path}: {exc}") from None
    query = dict(request.query) if request.query else None
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))
    name = path.rpartition("/")[2]
    if name == "output.ipynb" and "/" in path:  # a run folder: name the re-run after it
        name = path.rsplit("/", 2)[-2]
    form = rerun.build_form(source, query, notebook_name=name, suffix=suffix)
    return viewer, path, form


async def rerun_page(request: web.Request) -> web.Response:
    """`GET /rerun/<notebook>`: the form prefilled from the run; with a query (the form's own
    submission), the manifest of those values, or 400 with each wrong value named beside its
    field."""
    viewer, path, form = await _form(request)
    body = rerun.form_html(
        form,
        action=viewer.url("rerun", path),
        api=viewer.url("api/rerun", path),
        notebook_link=viewer.url("view", path),
        notebook_path=path,
    )
    # The prefilled form is what was asked for, even when a value needs fixing (a run of a
    # local notebook has no URL a cluster can read); a submitted value that is wrong is a 400.
    status = 400 if request.query and not form.valid else 200
    return _page(viewer, f"run again: {path}", _crumbs(viewer, path), body, status)


async def rerun_api(request: web.Request) -> web.Response:
    """`GET /api/rerun/<notebook>`: the same as JSON (rerun.form_json), always 200 when the
    notebook was read: a wrong value is the answer's content, not a failed request."""
    _, _, form = await _form(request)
    return web.json_response(rerun.form_json(form))


# --- compare --------------------------------------------------------------------------------


async def compare_page(request: web.Request) -> web.Response:
    """`GET /compare?a=PATH&b=PATH` (or two `run=PATH` from the runs view): the two runs side
    by side; with `a` alone, a page to choose `b`."""
    viewer = _viewer(request)
    first, second = compare.two_paths(list(request.query.items()))
    path_a = _notebook_path(first)
    await _may_read(request, path_a)
    if second is None:
        return await _picker(request, viewer, path_a)
    path_b = _notebook_path(second)
    await _may_read(request, path_b)
    if path_a == path_b:
        raise BadRequest(f"{path_a} would be compared with itself: choose another run for b")
    data_a = await _read(viewer, path_a)
    data_b = await _read(viewer, path_b)
    comparison = await viewer.run(compare.compare, data_a, path_a, data_b, path_b)
    body = compare.compare_html(comparison, lambda p: viewer.url("view", p))
    return _page(viewer, f"compare {path_a} and {path_b}", _crumbs(viewer, path_a), body)


async def _picker(request: web.Request, viewer: _Viewer, path: str) -> web.Response:
    """Choose the run to compare with: the sibling run folders of `path`'s run folder (the
    runs of one NotebookRun namespace, one schedule's folder, one day's folder...) that hold an
    output.ipynb; a folder without one (a run that never wrote it, an unrelated folder) would
    only lead to a 404; and, with authentication, only those the person may read (as the
    folder's listing shows them)."""
    from .app import IDENTITY

    await viewer.run(viewer.store.head, path)  # 404 before anything else
    folder = path.rpartition("/")[0]
    parent = folder.rpartition("/")[0] if path.endswith("/output.ipynb") else folder
    try:
        entries = await viewer.entries(parent)
    except NotFound:
        entries = ()
    visible = await viewer.gate.visible(request[IDENTITY], parent)
    if visible is not None:
        entries = tuple(e for e in entries if visible(e.name))
    candidates = [
        f"{parent}/{entry.name}/output.ipynb" if parent else f"{entry.name}/output.ipynb"
        for entry in sorted(entries, key=lambda e: e.name, reverse=True)
        if entry.is_dir
    ]
    candidates = [c for c in candidates if c != path and paths.linkable(c)][:PICKER_CHECKS]
    found: list[str] = []
    # In batches, newest names first, until the picker is full: one HEAD per folder, at once.
    for start in range(0, len(candidates), PICKER_LIMIT):
        batch = candidates[start : start + PICKER_LIMIT]
        exists = await asyncio.gather(*(_exists(viewer, c) for c in batch))
        found += [c for c, ok in zip(batch, exists, strict=True) if ok]
        if len(found) >= PICKER_LIMIT:
            break
    options = [
        f'<option value="{esc(candidate)}">{esc(candidate)}</option>'
        for candidate in found[:PICKER_LIMIT]
    ]
    choose = (
        f'<label>Compare with <select name="b">{"".join(options)}</select></label> '
        '<button type="submit">Compare</button>'
        if options
        else "<p>No other run folder with an output.ipynb next to this one.</p>"
    )
    body = (
        f"<h1>Compare {esc(path)} with another run</h1>"
        f'<form method="get" action="{esc(viewer.base)}/compare">'
        f'<input type="hidden" name="a" value="{esc(path)}">{choose}</form>'
        f'<p>Or tick two runs in the <a href="{esc(viewer.base)}/runs">runs view</a> and press '
        "Compare.</p>"
    )
    return _page(viewer, f"compare {path}", _crumbs(viewer, path), body)


# --- HTML download --------------------------------------------------------------------------


async def html_download(request: web.Request) -> web.Response:
    """`GET /html/<notebook>`: the page as the viewer renders it, as a file to keep (run
    header, cells, sandboxed outputs) that needs nothing from the viewer: every output inline,
    scripted ones in `srcdoc` frames (render's `standalone`). Not frames of this viewer's
    output URLs: the viewer lets only its own pages frame them, so a file opened from disk
    would show them blank, and they would be gone with the viewer. Storage URLs in the header
    are shown as text, not as links: a link into the viewer from a file is one to a viewer
    that may not be there (and behind a proxy, its address is not the request's)."""
    viewer = _viewer(request)
    path = paths.clean_path(request.match_info.get("path", ""))
    if not paths.is_notebook(path):
        raise NotFound(f"{path or '/'} is not a notebook (.ipynb)")
    data = await _read(viewer, path)
    rendered = await viewer.run(
        render.render_notebook,
        data,
        name=path.rpartition("/")[2],
        link=lambda url: None,
        standalone=True,
    )
    stem = path.rpartition("/")[2].removesuffix(".ipynb")
    if stem == "output" and "/" in path:
        stem = path.rsplit("/", 2)[-2]
    return web.Response(
        text=document(rendered.title or path, f"<main>{rendered.body}</main>", rendered.head),
        content_type="text/html",
        headers={
            "Content-Disposition": paths.content_disposition("attachment", f"{stem}.html"),
            "Cache-Control": "no-cache",
        },
    )


async def actions_js(request: web.Request) -> web.Response:
    return web.Response(
        text=ACTIONS_JS,
        content_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600"},
    )


def register(app: web.Application, base: str, anything: str) -> None:
    """Add this module's routes under `base`; `anything` is the app's any-path pattern."""
    app.router.add_get(f"{base}/static/actions.js", actions_js)
    app.router.add_get(f"{base}/compare", compare_page)
    app.router.add_get(f"{base}/rerun/" + anything, rerun_page)
    app.router.add_get(f"{base}/api/rerun/" + anything, rerun_api)
    app.router.add_get(f"{base}/html/" + anything, html_download)
