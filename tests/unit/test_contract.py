"""The runner's contract: exit codes, secret parameter lists, the bounded summary."""

from __future__ import annotations

import json

import pytest

from kubemill.runner.contract import SUMMARY_LIMIT, ExitCode, build_summary, parse_secret_params


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
