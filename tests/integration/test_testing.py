"""kubemill.testing on runs `kubemill run` really made (local folders and real S3), and a test
notebook that uses it to pass or fail a test step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubemill.runner.contract import ExitCode, parse_summary
from kubemill.testing import NotebookNotFound, read_notebook, read_run
from tests.conftest import NOTEBOOKS, kubemill
from tests.integration.helpers import serve_folder

pytestmark = pytest.mark.integration

CHECKS = str(NOTEBOOKS / "checks_params.ipynb")


def _run(notebook: str, output: str, *args: str, env: dict[str, str] | None = None) -> Any:
    """Run a notebook; returns the exit code and the summary."""
    summary = Path(output.rstrip("/") + ".summary.json") if "://" not in output else None
    extra = ["--termination-message-path", str(summary)] if summary else []
    result = kubemill(["run", notebook, output, *args, *extra], env=env)
    return result.returncode, parse_summary(summary.read_bytes()) if summary else None, result


def test_reads_back_a_local_run(tmp_path: Path) -> None:
    code, _, result = _run(str(NOTEBOOKS / "params.ipynb"), f"{tmp_path}/extract/", "-p", "n", "5")
    assert code == 0, result.stderr
    for nb in (read_notebook(f"{tmp_path}/extract/"), read_run(f"{tmp_path}/extract")):
        assert nb.results == {"alpha": 0.1, "region": "eu", "n": 5}
        assert nb.parameters == {"n": 5}
        assert (nb.status, nb.failed, nb.failure) == ("Succeeded", False, None)
        assert nb.cell("injected-parameters").source.endswith("n = 5\n")
        assert nb.cell("c2").outputs_text == (
            'recorded alpha = 0.1\nrecorded region = "eu"\nrecorded n = 5\nalpha=0.1 region=eu\n'
        )
        assert "alpha=0.1 region=eu" in nb.text
        nb.assert_succeeded()
    with serve_folder(tmp_path) as url:
        served = read_run(f"{url}/extract/")
        assert served.results == {"alpha": 0.1, "region": "eu", "n": 5}
        assert served.status == "Succeeded"
        with pytest.raises(NotebookNotFound, match=rf"cannot read {url}/none/output.ipynb: .*404"):
            read_notebook(f"{url}/none/")
    # Per-cell timings live in run.json only.
    assert "cells" in read_run(f"{tmp_path}/extract/").lineage
    assert "cells" not in read_notebook(f"{tmp_path}/extract/output.ipynb").lineage


def test_a_failed_runs_failure_points_at_its_cell(tmp_path: Path) -> None:
    code, summary, _ = _run(str(NOTEBOOKS / "fails.ipynb"), f"{tmp_path}/failed/")
    assert code == ExitCode.CELL_ERROR
    nb = read_run(f"{tmp_path}/failed/")
    assert nb.failed and nb.failure is not None
    assert nb.failure["reason"] == "CellError"
    assert nb.failure["message"] == summary.failure["message"]
    # The failure's cell index and id name the same cell of the notebook as written.
    failing = nb.cells[nb.failure["cell"]]
    assert failing.id == nb.failure["cellId"]
    assert failing.error is not None and (failing.error.ename, failing.error.evalue) == (
        "KeyError",
        "'x'",
    )
    assert "before the error" in nb.text and "never runs" not in nb.text
    with pytest.raises(
        AssertionError, match=r"the run failed in cell .*: CellError: cell In \[3\]"
    ):
        nb.assert_succeeded()


def test_a_test_notebook_passes_and_fails_the_test_step(tmp_path: Path) -> None:
    code, _, result = _run(str(NOTEBOOKS / "params.ipynb"), f"{tmp_path}/extract/", "-p", "n", "5")
    assert code == 0, result.stderr
    upstream = ["-p", "upstream", f"{tmp_path}/extract/"]

    code, summary, result = _run(CHECKS, f"{tmp_path}/passes/", *upstream, "-p", "min_n", "3")
    assert code == 0, result.stderr
    assert summary.results == {"checked": f"{tmp_path}/extract/"}

    code, summary, _ = _run(CHECKS, f"{tmp_path}/fails/", *upstream, "-p", "min_n", "100")
    assert code == ExitCode.CELL_ERROR
    assert summary.reason == "CellError"
    assert summary.failure["ename"] == "AssertionError"
    assert summary.failure["evalue"] == "n is 5, expected at least 100"
    # The test step's own output says the same, for whoever reads it rather than the status.
    assert read_run(f"{tmp_path}/fails/").cell("check").error.evalue == (
        "n is 5, expected at least 100"
    )


def test_a_test_notebook_fails_with_the_tested_runs_failure(tmp_path: Path) -> None:
    _run(str(NOTEBOOKS / "fails.ipynb"), f"{tmp_path}/failed/")
    code, summary, _ = _run(CHECKS, f"{tmp_path}/check/", "-p", "upstream", f"{tmp_path}/failed/")
    assert code == ExitCode.CELL_ERROR
    assert summary.failure["ename"] == "AssertionError"
    assert "the run failed in cell" in summary.failure["evalue"]
    assert "CellError: cell In [3] raised KeyError" in summary.failure["evalue"]


def test_a_test_notebook_on_a_missing_run_says_which_url(tmp_path: Path) -> None:
    code, summary, _ = _run(CHECKS, f"{tmp_path}/check/", "-p", "upstream", f"{tmp_path}/none/")
    assert code == ExitCode.CELL_ERROR
    assert summary.failure["ename"] == "NotebookNotFound"
    assert f"cannot read {tmp_path}/none/output.ipynb" in summary.failure["evalue"]


def test_reads_a_run_in_s3(
    s3_admin: Any,
    bucket: str,
    s3_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = f"s3://{bucket}/runs/ns/extract/"
    code, _, result = _run(str(NOTEBOOKS / "params.ipynb"), folder, "-p", "n", "7", env=s3_env)
    assert code == 0, result.stderr
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    # A result too large for the status still reads complete from results.json.
    s3_admin.put_object(
        Bucket=bucket,
        Key="runs/ns/extract/results.json",
        Body=json.dumps({"n": 7, "big": "x" * 5000}).encode(),
    )
    assert read_notebook(folder).results == {"alpha": 0.1, "region": "eu", "n": 7}
    run = read_run(folder)
    assert run.results == {"n": 7, "big": "x" * 5000}
    assert run.parameters == {"n": 7}
    assert run.url == folder
    run.assert_succeeded()
    with pytest.raises(NotebookNotFound, match=rf"cannot read s3://{bucket}/runs/none/output"):
        read_run(f"s3://{bucket}/runs/none/")

    # A test notebook in a pod reads S3 the same way, from the environment it is given.
    check = f"s3://{bucket}/runs/ns/check/"
    code, _, result = _run(CHECKS, check, "-p", "upstream", folder, "-p", "min_n", "7", env=s3_env)
    assert code == 0, result.stderr
    assert read_run(check).results == {"checked": folder}
