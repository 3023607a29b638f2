"""The runs view: one page of the runs index, as an HTML page and as JSON, and the task that
keeps the index current while the viewer serves.

`fetch` is the blocking part (SQLite reads, called from the viewer's thread pool); `page_html`
and `page_json` are pure. `IndexKeeper.keep` runs as long as the application: it refreshes the
index (a rebuild when there is none) on its own thread, so neither a two-minute rebuild nor a
store that is down holds up a request; a failed pass is logged and tried again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from .pages import duration, esc, time_html, views_nav
from .runindex import Facets, Objects, PassStats, RunIndex
from .runindex_sql import cursor_of, decode_cursor, encode_cursor
from .runrecord import RunRecord
from .runsquery import SORTS, Direction, RunsQuery, reverse

__all__ = ["IndexKeeper", "Links", "RunsPage", "building_html", "fetch", "page_html", "page_json"]

log = logging.getLogger("kubemill.viewer")

#: Characters of parameters or results shown in a row; the notebook's page has them all.
SHORT = 120


class IndexKeeper:
    """The runs index of one store and the passes that keep it current."""

    def __init__(self, index: RunIndex, objects: Objects, every: float) -> None:
        self.index = index
        self.objects = objects
        self.every = every
        #: The last pass's failure, shown while there is no index yet; None after a success.
        self.error: str | None = None
        self.started = time.monotonic()
        # Its own thread: a rebuild takes minutes at 100,000 runs, and must not take one of
        # the threads that answer requests.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kubemill-runindex")
        self._pending: Future[PassStats] | None = None

    async def keep(self) -> None:
        """Refresh now and then every `every` seconds, until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._pass(loop)
                await asyncio.sleep(self.every)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def stop(self, task: asyncio.Task[None], grace: float = 5.0) -> None:
        """Cancel `task` (running `keep`), let a pass in flight finish within `grace` seconds
        (it cannot be interrupted), then close the index's files if nothing uses them."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pending = self._pending
        if pending is not None and not pending.done():
            with contextlib.suppress(TimeoutError, Exception):
                await asyncio.wait_for(asyncio.wrap_future(pending), grace)
        if pending is None or pending.done():
            self.index.close()

    async def _pass(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            first = not await asyncio.wrap_future(self._pool.submit(self.index.built))
            self._pending = self._pool.submit(self.index.refresh, self.objects)
            stats = await asyncio.wrap_future(self._pending)
        except Exception as exc:  # the store or the index folder; the next tick tries again
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "runs index: the pass failed (%s); trying again in %gs", self.error, self.every
            )
            return
        self.error = None
        if first or stats.added or stats.updated or stats.removed or stats.unreadable:
            log.info(
                "runs index %s in %.1fs: %d runs, %d added, %d updated, %d removed, %d unreadable",
                "built" if first else "refreshed",
                stats.seconds,
                stats.runs,
                stats.added,
                stats.updated,
                stats.removed,
                stats.unreadable,
            )


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunRecord]
    #: Runs matching the filters, on every page.
    total: int
    #: `cursor` for the page after this one; None on the last.
    next_cursor: str | None
    #: `before` for the page before this one; None on the first.
    previous_cursor: str | None
    facets: Facets


def fetch(index: RunIndex, query: RunsQuery) -> RunsPage:
    """The page `query` asks for (blocking: SQLite). The page before a run is the page after
    it in the reverse order, read backwards: keyset paging both ways, with no offsets."""
    if query.direction is Direction.AFTER:
        page = index.query(query.filters, query.sort, query.cursor, query.limit)
        runs = page.runs
        following = page.next_cursor
        has_previous = query.cursor is not None
    else:
        assert query.cursor is not None
        value, folder = decode_cursor(query.cursor, query.sort)
        back = reverse(query.sort)
        page = index.query(query.filters, back, encode_cursor(back, value, folder), query.limit)
        runs = page.runs[::-1]
        following = cursor_of(runs[-1], query.sort) if runs else None
        has_previous = page.next_cursor is not None
    previous = cursor_of(runs[0], query.sort) if has_previous and runs else None
    return RunsPage(runs, page.total, following, previous, index.facets(query.filters))


@dataclass(frozen=True)
class Links:
    """The viewer's addresses, as the runs page links to them."""

    #: The runs view with a query string (pairs, already chosen).
    runs: Callable[[Sequence[tuple[str, str]]], str]
    #: The same for its JSON form.
    api_runs: Callable[[Sequence[tuple[str, str]]], str]
    #: A notebook's page, from its path in the store.
    notebook: Callable[[str], str]
    #: A run folder's listing.
    folder: Callable[[str], str]
    #: The store's root listing.
    files: str
    #: The compare page (actions.py), which two ticked runs are sent to; None: no ticks.
    compare: str | None = None


def query_string(pairs: Sequence[tuple[str, str]]) -> str:
    return "?" + urlencode(list(pairs), quote_via=quote) if pairs else ""


# --- JSON --------------------------------------------------------------------------------------


def run_json(record: RunRecord, links: Links) -> dict[str, Any]:
    return {
        "folder": record.folder,
        "name": record.name,
        "namespace": record.namespace,
        "schedule": record.schedule,
        "workflow": record.workflow,
        "step": record.step,
        "status": record.status,
        "reason": record.reason,
        "message": record.message,
        "startTime": record.start.isoformat() if record.start else None,
        "endTime": record.end.isoformat() if record.end else None,
        "durationSeconds": record.duration,
        "parameters": dict(record.parameters),
        "secretParameters": list(record.secret_parameters),
        "results": dict(record.results),
        "output": record.output,
        "url": links.notebook(record.output) if record.output else None,
        "notes": list(record.notes),
    }


def page_json(page: RunsPage, query: RunsQuery, links: Links) -> dict[str, Any]:
    """The page for scripts: the runs, the total, and the cursors (and links) to the pages
    next to it; pass `cursor` (or `before`) back with the same filters."""
    return {
        "runs": [run_json(record, links) for record in page.runs],
        "total": page.total,
        "nextCursor": page.next_cursor,
        "previousCursor": page.previous_cursor,
        "next": (
            links.api_runs(query.pairs(cursor=page.next_cursor)) if page.next_cursor else None
        ),
        "previous": (
            links.api_runs(query.pairs(before=page.previous_cursor))
            if page.previous_cursor
            else None
        ),
        "facets": _facets(page.facets),
    }


def _facets(facets: Facets) -> dict[str, list[dict[str, Any]]]:
    return {
        field: [{"value": value, "count": count} for value, count in values]
        for field, values in _facet_fields(facets).items()
    }


def _facet_fields(facets: Facets) -> dict[str, list[tuple[str, int]]]:
    return {
        "status": facets.statuses,
        "namespace": facets.namespaces,
        "schedule": facets.schedules,
        "workflow": facets.workflows,
    }


# --- HTML --------------------------------------------------------------------------------------


def header(links: Links, *, here: str) -> str:
    """The bar on top of the folder and runs pages: where one is, and the other view."""
    return f"<header>{here}{views_nav(links.files, links.runs(()))}</header>"


def building_html(links: Links, error: str | None, waited: float, retry: int) -> str:
    """The page while the first index is being built (HTTP 503, Retry-After)."""
    failed = (
        f'<p class="error">The last attempt failed: {esc(error)}. It is tried again.</p>'
        if error
        else ""
    )
    return (
        header(links, here="<strong>runs</strong>")
        + '<main><p class="note">The runs index is being built from the store '
        f"({waited:.0f} s so far; about two minutes at 100,000 runs). This page reloads "
        f'every {retry} s; the <a href="{esc(links.files)}">files</a> can be read '
        f"meanwhile.</p>{failed}</main>"
    )


def page_html(page: RunsPage, query: RunsQuery, links: Links) -> str:
    here = "<strong>runs</strong>"
    rows = "".join(_row(record, links) for record in page.runs)
    nav = []
    if query.cursor is not None:
        nav.append(f'<a href="{esc(links.runs(query.pairs()))}">first page</a>')
    if page.previous_cursor:
        href = links.runs(query.pairs(before=page.previous_cursor))
        nav.append(f'<a rel="prev" href="{esc(href)}">previous page</a>')
    if page.next_cursor:
        href = links.runs(query.pairs(cursor=page.next_cursor))
        nav.append(f'<a rel="next" href="{esc(href)}">next page</a>')
    counted = f"{page.total} run{'' if page.total == 1 else 's'}"
    # The ticks belong to a form of their own (the `form` attribute), outside the table:
    # two ticked runs and Compare is the compare page with no script.
    compare = (
        f'<form id="km-compare" method="get" action="{esc(links.compare)}">'
        '<button type="submit">Compare the two ticked runs</button></form>'
        if links.compare and page.runs
        else ""
    )
    tick = "<th></th>" if links.compare else ""
    table = (
        f"<table class='runs'><thead><tr>{tick}<th>Run</th><th>Namespace</th>"
        "<th>Schedule / workflow</th><th>Status</th><th>Started</th>"
        "<th>Duration</th><th>Parameters</th><th>Results</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        if page.runs
        else "<p>No runs match.</p>"
    )
    return (
        header(links, here=here)
        + "<main>"
        + _form(page.facets, query, links)
        + f'<p class="count">{counted}</p>{compare}{table}'
        + f'<p class="nav">{" ".join(nav)}</p></main>'
    )


def _form(facets: Facets, query: RunsQuery, links: Links) -> str:
    groups = []
    for field, values in _facet_fields(facets).items():
        chosen = query.selected(field)
        # A selected value beyond the facet's top values (or matching nothing) stays in the
        # form, without a count: the index was not asked for it.
        counted = {value for value, _ in values}
        shown: list[tuple[str, int | None]] = [*values]
        shown += [(value, None) for value in sorted(chosen - counted)]
        if not shown:
            continue
        boxes = "".join(
            f'<label><input type="checkbox" name="{field}" value="{esc(value)}"'
            f"{' checked' if value in chosen else ''}> {esc(value)}"
            + (f' <span class="muted">({count})</span>' if count is not None else "")
            + "</label>"
            for value, count in shown
        )
        groups.append(f"<fieldset><legend>{field}</legend>{boxes}</fieldset>")
    sorts = "".join(
        f'<option value="{name}"{" selected" if sort is query.sort else ""}>{label}</option>'
        for name, sort, label in (
            (name, SORTS[name], label)
            for name, label in (
                ("newest", "newest first"),
                ("oldest", "oldest first"),
                ("name", "name A-Z"),
                ("name-desc", "name Z-A"),
            )
        )
    )

    def day(name: str, label: str) -> str:
        value = query.value(name)
        kind = "date" if not value or len(value) == 10 else "text"
        return (
            f'<label>{label} <input type="{kind}" name="{name}" value="{esc(value)}" '
            'placeholder="YYYY-MM-DD"></label>'
        )

    limit = (
        f'<input type="hidden" name="limit" value="{query.limit}">'
        if dict(query.pairs()).get("limit")
        else ""
    )
    return (
        f'<form class="filters" method="get" action="{esc(links.runs(()))}">'
        + "".join(groups)
        + "<div>"
        + f'<label>Search <input type="search" name="q" value="{esc(query.value("q"))}" '
        'placeholder="names, parameters, results"></label>'
        + day("from", "Started from")
        + day("to", "to")
        + f'<label>Sort <select name="sort">{sorts}</select></label>{limit}'
        + f'<button type="submit">Show</button> <a href="{esc(links.runs(()))}">clear</a>'
        + "</div></form>"
    )


def _row(record: RunRecord, links: Links) -> str:
    name = esc(record.name)
    if record.output:
        name = f'<a href="{esc(links.notebook(record.output))}">{name}</a>'
    folder = f'<a class="muted" href="{esc(links.folder(record.folder))}">{esc(record.folder)}/</a>'
    made_by = []
    if record.schedule:
        made_by.append(f"schedule {esc(record.schedule)}")
    if record.workflow:
        step = f" / {esc(record.step)}" if record.step else ""
        made_by.append(f"workflow {esc(record.workflow)}{step}")
    reason = f'<div class="muted">{esc(record.reason)}</div>' if record.reason else ""
    title = f' title="{esc(record.message)}"' if record.message else ""
    shown_duration = duration(record.duration) if record.duration is not None else ""
    parameters = dict(record.parameters)
    for secret in record.secret_parameters:
        parameters.setdefault(secret, "(secret)")
    tick = ""
    if links.compare:
        box = (
            f'<input type="checkbox" name="run" value="{esc(record.output)}" form="km-compare" '
            f'aria-label="compare {esc(record.name)}">'
            if record.output
            else ""
        )
        tick = f"<td>{box}</td>"
    return (
        f'<tr class="run">{tick}<td>{name}<div>{folder}</div></td>'
        f"<td>{esc(record.namespace or '')}</td><td>{'<br>'.join(made_by)}</td>"
        f'<td class="status status-{esc(record.status)}"{title}>{esc(record.status)}{reason}</td>'
        f"<td>{time_html(record.start)}</td>"
        f'<td class="duration">{esc(shown_duration)}</td>'
        f'<td class="values">{esc(short(parameters))}</td>'
        f'<td class="values">{esc(short(record.results))}</td></tr>'
    )


def short(values: Mapping[str, Any], limit: int = SHORT) -> str:
    """`name=value, …` in at most `limit` characters, for one table cell."""
    text = ", ".join(
        f"{name}={value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)}"
        for name, value in values.items()
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"
