"""The runs view's pages without a server: what a row shows, and that a run's own text never
becomes markup."""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

import pytest

from kubemill.viewer.runindex_sql import Facets
from kubemill.viewer.runrecord import RunRecord
from kubemill.viewer.runsquery import parse_runs_query
from kubemill.viewer.runsview import Links, RunsPage, building_html, page_html, page_json, short


def _query(pairs: Sequence[tuple[str, str]]) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in pairs) if pairs else ""


LINKS = Links(
    runs=lambda pairs: "/b/runs" + _query(pairs),
    api_runs=lambda pairs: "/b/api/runs" + _query(pairs),
    notebook=lambda path: "/b/view/" + path,
    folder=lambda path: "/b/tree/" + path + "/",
    files="/b/tree/",
)
NO_FACETS = Facets([], [], [], [])

HOSTILE = RunRecord(
    folder="ns/<x>",
    name="<img src=x onerror=alert(1)>",
    namespace="ns",
    schedule='"><script>s()</script>',
    status="Failed",
    reason="<b>CellError</b>",
    message='" onmouseover="alert(1)',
    start=datetime.datetime(2026, 3, 1, 6, tzinfo=datetime.UTC),
    duration=125.0,
    parameters={"title": "<script>alert(1)</script>"},
    secret_parameters=("token",),
    results={"html": "</td><script>r()</script>"},
    output="ns/<x>/output.ipynb",
)


@pytest.mark.parametrize(
    ("values", "shown"),
    [
        ({}, ""),
        ({"a": 1, "b": "text", "c": [1, 2], "d": None}, "a=1, b=text, c=[1, 2], d=null"),
        ({"long": "x" * 200}, "long=" + "x" * 114 + "…"),
    ],
)
def test_short(values: dict[str, object], shown: str) -> None:
    assert short(values) == shown
    assert len(short(values)) <= 120


def test_a_runs_text_is_never_markup() -> None:
    page = RunsPage([HOSTILE], 1, "next", None, Facets([("<s>", 1)], [], [], []))
    html = page_html(page, parse_runs_query([("q", "<q>")]), LINKS)
    assert not re.search(r"<(script|img|b>)", html)
    assert 'onmouseover="' not in html
    assert 'href="/b/view/ns/&lt;x&gt;/output.ipynb"' in html
    assert "token=(secret)" in html
    assert "2m 05s" in html
    assert 'value="&lt;q&gt;"' in html  # the search, echoed as text
    assert 'value="&lt;s&gt;"' in html  # a facet value too
    assert '<a rel="next" href="/b/runs?q=&lt;q&gt;&amp;cursor=next">' in html


def test_json_keeps_the_values_and_links_to_its_own_pages() -> None:
    page = RunsPage([HOSTILE], 3, "n", "p", NO_FACETS)
    answer = page_json(page, parse_runs_query([("status", "Failed")]), LINKS)
    (run,) = answer["runs"]
    assert run["parameters"] == {"title": "<script>alert(1)</script>"}
    assert run["secretParameters"] == ["token"]
    assert run["url"] == "/b/view/ns/<x>/output.ipynb"
    assert run["startTime"] == "2026-03-01T06:00:00+00:00"
    assert (answer["next"], answer["previous"]) == (
        "/b/api/runs?status=Failed&cursor=n",
        "/b/api/runs?status=Failed&before=p",
    )


def test_the_building_page_says_why_it_waits() -> None:
    html = building_html(LINKS, "SourceError: <denied>", 12.4, 5)
    assert "12 s so far" in html
    assert "SourceError: &lt;denied&gt;" in html
    assert "reloads every 5 s" in html


def test_a_selected_value_without_a_count_stays_in_the_form() -> None:
    facets = Facets([("Failed", 3)], [], [], [])
    query = parse_runs_query([("status", "Failed"), ("status", "Gone")])
    html = page_html(RunsPage([], 0, None, None, facets), query, LINKS)
    assert 'value="Failed" checked> Failed <span class="muted">(3)</span>' in html
    assert 'value="Gone" checked> Gone</label>' in html
    assert "No runs match." in html
