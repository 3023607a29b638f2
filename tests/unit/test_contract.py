"""The runner's contract: exit codes, secret parameter lists, the bounded summary."""

from __future__ import annotations

import dataclasses
import json
import random
from typing import Any

import pytest

from kubemill.runner.contract import (
    SUMMARY_LIMIT,
    ExitCode,
    Summary,
    build_summary,
    parse_secret_params,
    parse_summary,
)


def test_every_exit_code_is_distinct_and_has_a_reason() -> None:
    codes = [int(c) for c in ExitCode]
    assert len(codes) == len(set(codes))
    assert len({c.reason for c in ExitCode}) == len(codes)
    assert ExitCode.BAD_INPUT == 2  # argparse's own usage errors exit 2 too


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("a=A", {"a": "A"}),
        (" a = A , b=B_2 ", {"a": "A", "b": "B_2"}),
        ("a=A\nb=B", {"a": "A", "b": "B"}),
    ],
)
def test_secret_param_lists(text: str, expected: dict[str, str]) -> None:
    assert parse_secret_params(text) == expected


@pytest.mark.parametrize("text", ["a", "a=", "=A"])
def test_malformed_secret_params_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ValueError, match="NAME=ENV_VAR"):
        parse_secret_params(text)


def test_small_summary_is_complete() -> None:
    data = build_summary(
        exit_code=ExitCode.OK,
        output_url="s3://b/k/output.ipynb",
        results={"rows": 1204, "accuracy": 0.93},
        failure=None,
        duration_seconds=1.23456,
    )
    summary = json.loads(data)
    assert summary == {
        "status": "Succeeded",
        "reason": "Succeeded",
        "exitCode": 0,
        "outputUrl": "s3://b/k/output.ipynb",
        "results": {"rows": 1204, "accuracy": 0.93},
        "durationSeconds": 1.235,
    }


def test_an_early_exit_is_in_the_summary_and_reads_back() -> None:
    early = {"cell": 3, "cellId": "c1", "executionCount": 2, "code": 0, "skippedCells": 1}
    data = build_summary(
        exit_code=ExitCode.OK,
        output_url=None,
        results={},
        failure=None,
        duration_seconds=1.0,
        early_exit=early,
    )
    assert json.loads(data)["earlyExit"] == early
    summary = parse_summary(data)
    assert summary is not None and summary.early_exit == early
    plain = build_summary(
        exit_code=ExitCode.OK, output_url=None, results={}, failure=None, duration_seconds=1.0
    )
    assert "earlyExit" not in json.loads(plain)


def test_the_viewer_page_is_in_the_summary_only_when_there_is_one() -> None:
    page = "https://nb.example/view/ns/r/output.ipynb"
    common: dict[str, Any] = {
        "exit_code": ExitCode.OK, "output_url": None, "results": {}, "failure": None,
        "duration_seconds": 1.0,
    }  # fmt: skip
    summary = parse_summary(build_summary(**common, viewer_url=page))
    assert summary is not None and summary.viewer_url == page
    assert "viewerUrl" not in json.loads(build_summary(**common))


def test_large_results_are_dropped_largest_first_and_named() -> None:
    results = {"small": 1, "big": "x" * 5000, "medium": "y" * 1000}
    data = build_summary(
        exit_code=ExitCode.OK,
        output_url=None,
        results=results,
        failure=None,
        duration_seconds=None,
    )
    summary = json.loads(data)
    assert len(data) <= SUMMARY_LIMIT
    assert summary["results"] == {"small": 1, "medium": "y" * 1000}
    assert summary["resultsTruncated"] == ["big"]


def test_huge_failure_text_is_cut_to_fit() -> None:
    failure = {"reason": "CellError", "message": "m" * 10000, "traceback": "t" * 10000}
    data = build_summary(
        exit_code=ExitCode.CELL_ERROR,
        output_url=None,
        results={},
        failure=failure,
        duration_seconds=2.0,
    )
    summary = json.loads(data)
    assert len(data) <= SUMMARY_LIMIT
    assert summary["status"] == "Failed"
    assert summary["failure"]["reason"] == "CellError"
    assert summary["failure"]["message"].endswith("[truncated]")


def test_many_result_names_still_fit() -> None:
    results = {f"result_{i:05d}": "v" * 50 for i in range(500)}
    data = build_summary(
        exit_code=ExitCode.OK,
        output_url=None,
        results=results,
        failure=None,
        duration_seconds=None,
    )
    assert len(data) <= SUMMARY_LIMIT
    assert json.loads(data)["resultsTruncated"]


# --- the summary read back: what the runner writes is what the operator reads ------------------

CELL_FAILURE = {
    "reason": "CellError",
    "message": "cell In [3] raised KeyError: 'x'",
    "cell": 4,
    "cellId": "c2",
    "executionCount": 3,
    "ename": "KeyError",
    "evalue": "'x'",
    "traceback": "Traceback …\nKeyError: 'x'",
}


def roundtrip(**kwargs: Any) -> tuple[bytes, Summary]:
    data = build_summary(**kwargs)
    assert len(data) <= kwargs.get("limit", SUMMARY_LIMIT)
    summary = parse_summary(data.decode())
    assert summary is not None
    assert parse_summary(data) == summary  # bytes read the same as text
    return data, summary


def test_every_field_survives_build_and_parse() -> None:
    _, summary = roundtrip(
        exit_code=ExitCode.CELL_ERROR,
        output_url="s3://b/k/output.ipynb",
        results={"rows": 1204, "none": None, "nested": {"a": [None, 1]}, "größe": "naïve ✓ 🚀"},
        failure=CELL_FAILURE,
        duration_seconds=0.7304,
        viewer_url="https://nb.example/view/k/output.ipynb",
    )
    assert summary == Summary(
        exit_code=10,
        status="Failed",
        reason="CellError",
        output_url="s3://b/k/output.ipynb",
        results={"rows": 1204, "none": None, "nested": {"a": [None, 1]}, "größe": "naïve ✓ 🚀"},
        duration_seconds=0.73,
        failure=CELL_FAILURE,
        viewer_url="https://nb.example/view/k/output.ipynb",
        results_truncated=False,
        failure_truncated=False,
    )
    # The test names every field: a new one must be added to the contract's test too.
    assert {f.name for f in dataclasses.fields(Summary)} == {
        "exit_code", "status", "reason", "output_url", "results", "duration_seconds",
        "failure", "early_exit", "viewer_url", "results_truncated", "failure_truncated",
    }  # fmt: skip


def test_a_success_without_output_or_duration() -> None:
    data, summary = roundtrip(
        exit_code=ExitCode.OK, output_url=None, results={}, failure=None, duration_seconds=None
    )
    assert summary == Summary(exit_code=0, status="Succeeded", reason="Succeeded")
    # Empty optional fields are left out of the message; outputUrl and results are always there.
    assert json.loads(data) == {
        "exitCode": 0, "outputUrl": None, "reason": "Succeeded", "results": {},
        "status": "Succeeded",
    }  # fmt: skip


def test_a_zero_duration_is_a_value() -> None:
    _, summary = roundtrip(
        exit_code=ExitCode.OK, output_url=None, results={}, failure=None, duration_seconds=0.0
    )
    assert summary.duration_seconds == 0.0


def test_non_ascii_is_escaped_so_a_byte_cut_never_splits_a_character() -> None:
    data, summary = roundtrip(
        exit_code=ExitCode.OK,
        output_url="s3://b/Auswertung/Übersicht.ipynb",
        results={"名前": "値 🚀"},
        failure=None,
        duration_seconds=1.0,
    )
    assert data.isascii()
    assert summary.output_url == "s3://b/Auswertung/Übersicht.ipynb"
    assert summary.results == {"名前": "値 🚀"}


def test_dropped_results_go_largest_first_and_are_named() -> None:
    results = {"small": 1, "none": None, "big": "x" * 5000, "medium": "é" * 300}
    _, summary = roundtrip(
        exit_code=ExitCode.OK,
        output_url="s3://b/o.ipynb",
        results=results,
        failure=None,
        duration_seconds=3.0,
    )
    assert summary.results == {"small": 1, "none": None, "medium": "é" * 300}
    assert summary.results_truncated == ["big"]
    assert not summary.failure_truncated


def test_truncation_keeps_every_result_it_can_and_names_the_rest() -> None:
    rng = random.Random(11)
    for _ in range(200):
        results = {
            f"r{i}": rng.choice([None, 1.5, "ü" * rng.randrange(1, 900), [None] * rng.randrange(9)])
            for i in range(rng.randrange(1, 30))
        }
        _, summary = roundtrip(
            exit_code=ExitCode.OK,
            output_url=None,
            results=results,
            failure=None,
            duration_seconds=None,
        )
        dropped = summary.results_truncated or []
        assert isinstance(dropped, list)
        assert sorted(dropped) == dropped
        assert set(summary.results) | set(dropped) == set(results)
        assert not set(summary.results) & set(dropped)
        assert all(summary.results[name] == results[name] for name in summary.results)


def test_failure_text_is_cut_and_results_named_when_both_are_large() -> None:
    failure = {
        **CELL_FAILURE,
        "message": "m" * 10000,
        "traceback": "t" * 10000,
        "evalue": "v" * 9000,
    }
    _, summary = roundtrip(
        exit_code=ExitCode.CELL_ERROR,
        output_url="s3://b/o.ipynb",
        results={"table": "x" * 3000},
        failure=failure,
        duration_seconds=2.0,
    )
    assert summary.results == {} and summary.results_truncated == ["table"]
    assert summary.failure is not None and not summary.failure_truncated
    for key in ("message", "traceback", "evalue"):
        assert summary.failure[key] == failure[key][:512] + "…[truncated]"
    # The traceback is cut to its last 1500 characters before anything else.
    assert summary.failure["traceback"] == "t" * 512 + "…[truncated]"
    assert summary.failure["cell"] == 4


def test_result_names_that_do_not_fit_become_true() -> None:
    results = {f"result_{i:05d}_{'n' * 40}": 1 for i in range(200)}
    _, summary = roundtrip(
        exit_code=ExitCode.OK, output_url=None, results=results, failure=None,
        duration_seconds=None,
    )  # fmt: skip
    assert summary.results == {} and summary.results_truncated is True


def test_no_results_are_called_truncated_when_none_were_dropped() -> None:
    failure = {"reason": "CellError", "message": "m", "ename": "E" * 5000}
    _, summary = roundtrip(
        exit_code=ExitCode.CELL_ERROR, output_url=None, results={}, failure=failure,
        duration_seconds=None,
    )  # fmt: skip
    assert summary.results_truncated is False


def test_failure_details_that_cannot_be_cut_are_left_out_and_flagged() -> None:
    # Only message, evalue and traceback are cut; an exception name this long cannot be.
    failure = {"reason": "CellError", "message": "m", "ename": "E" * 5000}
    _, summary = roundtrip(
        exit_code=ExitCode.CELL_ERROR,
        output_url="s3://b/o.ipynb",
        results={"kept": None, "big": "x" * 200},
        failure=failure,
        duration_seconds=1.0,
    )
    assert summary.failure is None and summary.failure_truncated
    assert (summary.status, summary.reason, summary.exit_code) == ("Failed", "CellError", 10)
    assert summary.results == {} and summary.results_truncated == ["big", "kept"]


def test_a_summary_at_the_limit_survives_the_kubelets_cut() -> None:
    data, summary = roundtrip(
        exit_code=ExitCode.OK,
        output_url=None,
        results={f"k{i}": "v" * 100 for i in range(60)},
        failure=None,
        duration_seconds=None,
    )
    assert len(data) > SUMMARY_LIMIT - 200  # filled close to the limit
    assert parse_summary(data[:4096]) == summary


def test_a_message_the_kubelet_cut_at_4096_bytes_is_no_summary() -> None:
    # An older runner, or one given a larger limit, writes more than the kubelet keeps.
    data = build_summary(
        exit_code=ExitCode.OK,
        output_url=None,
        results={"text": "ü" * 3000},
        failure=None,
        duration_seconds=None,
        limit=100_000,
    )
    assert len(data) > 4096
    assert parse_summary(data[:4096]) is None
    raw = json.dumps({"exitCode": 0, "results": {"t": "ü" * 3000}}, ensure_ascii=False).encode()
    assert parse_summary(raw[:4095]) is None  # cut inside a two-byte character


@pytest.mark.parametrize(
    "message",
    [
        None,
        "",
        b"",
        "not json",
        "Traceback (most recent call last):\n  File …",  # FallbackToLogsOnError
        "[1, 2]",
        '"a string"',
        "null",
        "{}",
        '{"status": "Failed"}',  # no exit code: not a summary
        '{"exitCode": "10"}',
        '{"exitCode": true}',
        "[" * 100_000,  # deeper than the JSON parser recurses
        '{"exitCode": 1' + "1" * 5000 + "}",  # more digits than int() reads
        b"\xff\xfe{",
    ],
)
def test_no_summary_where_the_message_holds_none(message: str | bytes | None) -> None:
    assert parse_summary(message) is None


def test_a_field_of_the_wrong_type_reads_as_missing() -> None:
    message = json.dumps(
        {
            "exitCode": 13,
            "status": 1,
            "reason": "KernelDied",
            "outputUrl": ["s3://x"],
            "results": [1, 2],
            "durationSeconds": "1s",
            "failure": "the kernel died",
            "resultsTruncated": [1],
            "failureTruncated": "yes",
            "fromANewerRunner": {"x": 1},
        }
    )
    assert parse_summary(message) == Summary(exit_code=13, reason="KernelDied")


def test_a_partial_summary_reads_with_defaults() -> None:
    summary = parse_summary('{"exitCode": 12, "failure": {"reason": "RunTimeout"}}')
    assert summary == Summary(exit_code=12, failure={"reason": "RunTimeout"})
    assert summary.results == {} and summary.output_url is None
