"""Comparing two runs without a server: normalized output digests, cell pairing, and what is
refused."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from kubemill.viewer.compare import (
    DifferentNotebooks,
    NotANotebook,
    compare,
    compare_html,
    output_digest,
    two_paths,
)
from kubemill.viewer.errors import BadRequest


def code(
    cell_id: str,
    source: str,
    outputs: list[dict[str, Any]],
    *,
    count: int = 1,
    seconds: float = 0.1,
) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "id": cell_id,
        "source": source,
        "execution_count": count,
        "metadata": {"kubemill": {"durationSeconds": seconds}},
        "outputs": outputs,
    }


def stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


def result(value: str, count: int = 1, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "output_type": "execute_result",
        "execution_count": count,
        "data": {"text/plain": value},
        "metadata": meta or {},
    }


def nb(cells: list[dict[str, Any]], *, uri: str | None = "s3://nb/r.ipynb", **run: Any) -> bytes:
    meta = {"input": {"uri": uri, "sha256": run.pop("sha", "a" * 64)}} if uri else {}
    meta.update(run)
    return json.dumps(
        {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kubemill": meta}, "cells": cells}
    ).encode()


# --- digests --------------------------------------------------------------------------------

SAME: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("execution count", [result("1", count=1)], [result("1", count=7)]),
    ("output metadata", [result("1")], [result("1", meta={"image/png": {"width": 3}})]),
    ("a stream split elsewhere", [stream("ab\n"), stream("c\n")], [stream("a"), stream("b\nc\n")]),
    ("text as a list of lines", [stream("a\nb\n")], [{**stream(""), "text": ["a\n", "b\n"]}]),
    (
        "an error's traceback",
        [{"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["In [1]"]}],
        [{"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["In [9]"]}],
    ),
    (
        "transient display ids",
        [{"output_type": "display_data", "data": {"text/plain": "x"}, "metadata": {},
          "transient": {"display_id": "1"}}],
        [{"output_type": "display_data", "data": {"text/plain": "x"}, "metadata": {},
          "transient": {"display_id": "2"}}],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("why", "a", "b"), SAME, ids=[s[0] for s in SAME])
def test_outputs_that_read_the_same_have_the_same_digest(
    why: str, a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> None:
    assert output_digest(a) == output_digest(b)


DIFFERENT: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    ("value", [result("1")], [result("2")]),
    ("stream name", [stream("a")], [{**stream("a"), "name": "stderr"}]),
    ("an extra output", [stream("a")], [stream("a"), result("1")]),
    ("no outputs", [stream("a")], []),
    (
        "error value",
        [{"output_type": "error", "ename": "E", "evalue": "1", "traceback": []}],
        [{"output_type": "error", "ename": "E", "evalue": "2", "traceback": []}],
    ),
    (
        "an image",
        [{"output_type": "display_data", "data": {"image/png": "AAAA"}, "metadata": {}}],
        [{"output_type": "display_data", "data": {"image/png": "AAAB"}, "metadata": {}}],
    ),
]


@pytest.mark.parametrize(("why", "a", "b"), DIFFERENT, ids=[d[0] for d in DIFFERENT])
def test_outputs_that_read_differently_have_different_digests(
    why: str, a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> None:
    assert output_digest(a) != output_digest(b)


# --- comparisons ----------------------------------------------------------------------------


def test_two_runs_side_by_side() -> None:
    params = {
        "cell_type": "code", "id": "p", "source": "n = 1",
        "metadata": {"tags": ["parameters"]}, "outputs": [], "execution_count": 1,
    }  # fmt: skip
    injected_a = {**params, "id": "inj-a", "source": "n = 2",
                  "metadata": {"tags": ["injected-parameters"]}}  # fmt: skip
    injected_b = {**injected_a, "id": "inj-b", "source": "n = 3"}
    banner = {"cell_type": "markdown", "id": "ban", "source": "failed",
              "metadata": {"tags": ["kubemill-banner"]}}  # fmt: skip
    a = nb(
        [params, injected_a, code("c1", "print(n)", [stream("2\n")], seconds=1.0),
         code("c2", "1 + 1", [result("2")], count=3)],
        parameters={"n": 2, "same": "x"}, results={"total": 10}, durationSeconds=12.0,
        status="Succeeded",
    )  # fmt: skip
    b = nb(
        [banner, params, injected_b, code("c1", "print(n)", [stream("3\n")], seconds=2.0),
         code("c2", "1 + 1", [result("2")], count=4)],
        parameters={"n": 3, "same": "x"}, results={"total": 10}, durationSeconds=15.5,
        status="Failed",
    )  # fmt: skip
    comparison = compare(a, "runs/a/output.ipynb", b, "runs/b/output.ipynb")
    assert comparison.warnings == ()
    pairs = [(p.a, p.b, p.source_same, p.outputs_same) for p in comparison.cells]
    assert pairs == [
        (0, 1, True, True),  # the parameters cell
        (1, 2, False, True),  # the injected cell, with other values
        (2, 3, True, False),  # print(n): other output
        (3, 4, True, True),  # 1 + 1: same output, other execution count
    ]
    assert comparison.differing_outputs == 1
    page = compare_html(comparison, lambda p: "/view/" + p)
    assert "/view/runs/a/output.ipynb#km-cell-2" in page
    assert "/view/runs/b/output.ipynb#km-cell-3" in page
    assert (
        "(1 of 4 code cells&#x27; outputs differ)" in page or "(1 of 4 code cells' outputs" in page
    )
    assert "12.00 s" in page and "15.50 s" in page
    assert "(1 of 2 differ)" in page  # parameters: n
    assert "(0 of 1 differ)" in page  # results


VALUES: list[tuple[Any, Any, bool]] = [
    (True, 1, False),
    (0, False, False),
    (1, 1.0, False),
    ("1", 1, False),
    ([True], [1], False),
    ({"a": 1, "b": [False]}, {"b": [0], "a": 1}, False),
    ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
    (None, None, True),
    (0.5, 0.5, True),
]


@pytest.mark.parametrize(("a", "b", "same"), VALUES, ids=repr)
def test_values_of_other_types_differ(a: Any, b: Any, same: bool) -> None:
    comparison = compare(nb([], parameters={"p": a}), "a", nb([], parameters={"p": b}), "b")
    page = compare_html(comparison, lambda p: "/view/" + p)
    row = re.search(r'<tr class="(km-same|km-diff)"><th>p</th>', page)
    assert row is not None
    assert row.group(1) == ("km-same" if same else "km-diff")
    assert f"({0 if same else 1} of 1 differ)" in page


def test_runs_of_different_notebooks_are_refused() -> None:
    a = nb([], uri="s3://nb/one.ipynb")
    b = nb([], uri="s3://nb/two.ipynb")
    with pytest.raises(DifferentNotebooks, match="only runs of the same notebook") as caught:
        compare(a, "a.ipynb", b, "b.ipynb")
    assert caught.value.status == 400
    assert "s3://nb/one.ipynb" in caught.value.message


def test_a_changed_notebook_or_an_unknown_one_is_compared_with_a_warning() -> None:
    edited = compare(nb([], sha="a" * 64), "a", nb([], sha="b" * 64), "b")
    assert "changed between the runs" in edited.warnings[0]
    unknown = compare(nb([], uri=None), "a", nb([]), "b")
    assert "records no input notebook" in unknown.warnings[0]


def test_cells_added_and_removed_are_only_in_one_run() -> None:
    a = nb([code("x", "a = 1", []), code("y", "b = 2", [])])
    b = nb([code("x", "a = 1", []), code("z", "c = 3", [stream("c")]), code("y", "b = 2", [])])
    states = [(p.a, p.b) for p in compare(a, "a", b, "b").cells]
    assert states == [(0, 0), (None, 1), (1, 2)]


def test_cells_without_ids_pair_by_source() -> None:
    a = nb([{**code("", "a = 1", []), "id": None}, {**code("", "print(1)", [stream("1")])}])
    b = nb([{**code("", "a = 1", []), "id": None}, {**code("", "print(1)", [stream("2")])}])
    cells = compare(a, "a", b, "b").cells
    assert [(p.a, p.b, p.outputs_same) for p in cells] == [(0, 0, True), (1, 1, False)]


def test_values_are_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    a = nb([code("x", hostile, [])], parameters={"p": hostile}, results={hostile: 1})
    page = compare_html(compare(a, "a<b>", a, "c"), lambda p: "/view/" + p)
    assert "<script>" not in page and "<b>" not in page


@pytest.mark.parametrize("data", [b"nope", b"{}", b"[1]"])
def test_what_is_not_a_notebook_is_named(data: bytes) -> None:
    with pytest.raises(NotANotebook, match="runs/x"):
        compare(data, "runs/x", nb([]), "b")


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("a", "x"), ("b", "y")], ("x", "y")),
        ([("a", "x")], ("x", None)),
        ([("run", "x"), ("run", "y")], ("x", "y")),
    ],
)
def test_two_paths(pairs: list[tuple[str, str]], expected: tuple[str, str | None]) -> None:
    assert two_paths(pairs) == expected


@pytest.mark.parametrize(
    "pairs",
    [[], [("b", "y")], [("a", "x"), ("a", "y")], [("run", "x")], [("run", "1")] * 3],
)
def test_two_paths_refuses_anything_else(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        two_paths(pairs)


def test_the_runs_view_ticks_name_each_runs_notebook_escaped() -> None:
    from kubemill.viewer.runindex_sql import Facets
    from kubemill.viewer.runrecord import RunRecord
    from kubemill.viewer.runsquery import parse_runs_query
    from kubemill.viewer.runsview import Links, RunsPage, page_html

    def links(compare: str | None) -> Links:
        return Links(
            runs=lambda pairs: "/runs", api_runs=lambda pairs: "/api/runs",
            notebook=lambda path: "/view/" + path, folder=lambda path: "/tree/" + path,
            files="/tree/", compare=compare,
        )  # fmt: skip

    hostile = RunRecord(folder="ns/x", name='"><b>x</b>', output='ns/"><b>/output.ipynb')
    unread = RunRecord(folder="ns/y", name="y")  # no output notebook: nothing to compare
    page = RunsPage(runs=[hostile, unread], total=2, next_cursor=None, previous_cursor=None,
                    facets=Facets([], [], [], []))  # fmt: skip
    query = parse_runs_query([])
    html = page_html(page, query, links("/compare"))
    assert '<form id="km-compare" method="get" action="/compare">' in html
    assert html.count('type="checkbox" name="run"') == 1
    assert 'value="ns/&quot;&gt;&lt;b&gt;/output.ipynb" form="km-compare"' in html
    assert "<b>" not in html
    assert 'name="run"' not in page_html(page, query, links(None))
