"""The runs view's query string: what each parameter selects, and a clear 400 for what cannot
be read."""

from __future__ import annotations

import datetime

import pytest

from kubemill.viewer.errors import BadRequest
from kubemill.viewer.runindex_sql import RunFilter, Sort, encode_cursor
from kubemill.viewer.runsquery import (
    DEFAULT_LIMIT,
    Direction,
    parse_runs_query,
    reverse,
)

UTC = datetime.UTC


def test_nothing_given_is_every_run_newest_first() -> None:
    query = parse_runs_query([])
    assert query.filters == RunFilter()
    assert (query.sort, query.cursor, query.limit) == (Sort.NEWEST, None, DEFAULT_LIMIT)


def test_empty_form_fields_mean_any() -> None:
    query = parse_runs_query(
        [("status", ""), ("namespace", " "), ("from", ""), ("to", ""), ("q", ""), ("sort", "")]
    )
    assert query.filters == RunFilter()
    assert query.fields == ()


def test_repeated_values_are_any_of_them() -> None:
    query = parse_runs_query(
        [
            ("status", "Failed"),
            ("status", "Running"),
            ("namespace", "ml"),
            ("schedule", "daily"),
            ("workflow", "etl"),
            ("q", "eu  alpha"),
        ]
    )
    assert query.filters == RunFilter(
        statuses=frozenset({"Failed", "Running"}),
        namespaces=frozenset({"ml"}),
        schedules=frozenset({"daily"}),
        workflows=frozenset({"etl"}),
        text="eu  alpha",
    )
    assert query.selected("status") == {"Failed", "Running"}


@pytest.mark.parametrize(
    ("given", "started_from", "started_before"),
    [
        # a day as `to` includes that day
        (
            [("from", "2026-03-01"), ("to", "2026-03-01")],
            datetime.datetime(2026, 3, 1, tzinfo=UTC),
            datetime.datetime(2026, 3, 2, tzinfo=UTC),
        ),
        # a time with a zone is taken as it is, in UTC
        (
            [("from", "2026-03-01T06:00:00+02:00")],
            datetime.datetime(2026, 3, 1, 4, tzinfo=UTC),
            None,
        ),
        ([("to", "2026-03-01T06:00:00Z")], None, datetime.datetime(2026, 3, 1, 6, tzinfo=UTC)),
    ],
)
def test_dates(
    given: list[tuple[str, str]],
    started_from: datetime.datetime | None,
    started_before: datetime.datetime | None,
) -> None:
    filters = parse_runs_query(given).filters
    assert (filters.started_from, filters.started_before) == (started_from, started_before)


@pytest.mark.parametrize("sort", [Sort.NEWEST, Sort.OLDEST, Sort.NAME, Sort.NAME_DESC])
def test_reverse_reads_backwards(sort: Sort) -> None:
    assert reverse(reverse(sort)) == sort
    assert reverse(sort) != sort


def test_a_cursor_of_the_order_is_taken() -> None:
    cursor = encode_cursor(Sort.NAME, "run-1", "ml/run-1")
    query = parse_runs_query([("sort", "name"), ("before", cursor), ("limit", "7")])
    assert (query.sort, query.cursor, query.direction, query.limit) == (
        Sort.NAME,
        cursor,
        Direction.BEFORE,
        7,
    )


def test_links_keep_the_filters_and_the_order() -> None:
    query = parse_runs_query(
        [("status", "Failed"), ("q", "eu"), ("sort", "name"), ("limit", "10"), ("cursor", "")]
    )
    assert query.pairs(cursor="abc") == [
        ("status", "Failed"),
        ("q", "eu"),
        ("limit", "10"),
        ("sort", "name"),
        ("cursor", "abc"),
    ]
    assert query.pairs(sort="newest") == [("status", "Failed"), ("q", "eu"), ("limit", "10")]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ([("from", "yesterday")], "from 'yesterday' is not a day (YYYY-MM-DD) or a time"),
        ([("to", "2026-13-01")], "to '2026-13-01' is not a day"),
        ([("from", "2026-03-01T06:00:00")], "is not a day (YYYY-MM-DD) or a time with a zone"),
        (
            [("from", "2026-03-02"), ("to", "2026-03-01")],
            "from (2026-03-02) must be before to (2026-03-01)",
        ),
        ([("sort", "size")], "sort must be one of name, name-desc, newest, oldest, not 'size'"),
        ([("limit", "0")], "limit must be a whole number from 1 to 500, not '0'"),
        ([("limit", "501")], "limit must be a whole number from 1 to 500"),
        ([("limit", "ten")], "limit must be a whole number"),
        ([("limit", "²")], "limit must be a whole number"),  # a digit to isdigit, not to int
        ([("to", "9999-12-31")], "to '9999-12-31' is not a day"),  # its end is past datetime's
        (
            [("cursor", encode_cursor(Sort.NEWEST, 10**30, "a"))],
            "cursor: the page cursor is not one this viewer made",
        ),
        ([("cursor", "not-a-cursor")], "cursor: the page cursor is not one this viewer made"),
        (
            [("sort", "name"), ("cursor", encode_cursor(Sort.NEWEST, 5, "a"))],
            "cursor: the page cursor belongs to another order than 'name'",
        ),
        ([("before", "%%%")], "before: the page cursor is not one this viewer made"),
        (
            [("cursor", encode_cursor(Sort.NEWEST, 5, "a")), ("before", "x")],
            "cursor and before ask for two different pages",
        ),
        ([("q", "a"), ("q", "b")], "q is given twice ('a' and 'b')"),
        ([("stat", "Failed")], "unknown parameter 'stat'; the runs view takes before, cursor"),
    ],
)
def test_bad_values_say_what_is_wrong(given: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_runs_query(given)
    assert caught.value.status == 400
    assert message in caught.value.message
