"""kubemill.testing on runs `kubemill run` really made (local folders and real S3), a test
notebook that uses it to pass or fail a test step, and `execute` and the pytest plugin running
notebooks with a real kernel."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from kubemill.runner.contract import ExitCode, parse_summary
from kubemill.testing import (
    ExecutedNotebook,
    NotebookFailed,
    NotebookNotFound,
    NotebookNotRun,
    execute,
    read_notebook,
    read_run,
)
from tests.conftest import NOTEBOOKS, kubemill
from tests.integration.helpers import serve_folder

pytestmark = pytest.mark.integration
#: pytest's own fixture for testing plugins: runs a pytest session on a test file written here.
pytest_plugins = ["pytester"]

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
    # assert_succeeded's AssertionError names itself, so a report tells the tested run's failure
    # apart from the test's own assertions.
    assert summary.failure["ename"] == "NotebookFailed"
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


# --- execute ---------------------------------------------------------------------------------

MODES = pytest.mark.parametrize("subprocess", [False, True], ids=["in-process", "subprocess"])


@MODES
def test_execute_runs_with_parameters_and_reads_the_run_back(
    tmp_path: Path, subprocess: bool
) -> None:
    nb = execute(
        NOTEBOOKS / "params.ipynb",
        {"n": 5, "region": "us"},
        output=tmp_path / "run",
        subprocess=subprocess,
    )
    assert isinstance(nb, ExecutedNotebook)
    assert (nb.status, nb.exit_code, nb.summary.status) == ("Succeeded", ExitCode.OK, "Succeeded")
    assert nb.output == nb.url == f"{tmp_path}/run/"
    assert nb.results == nb.summary.results == {"alpha": 0.1, "region": "us", "n": 5}
    assert nb.parameters == {"n": 5, "region": "us"}
    assert nb.cell("injected-parameters").source == "# Parameters\nn = 5\nregion = 'us'\n"
    assert "alpha=0.1 region=us" in nb.text
    # The whole run folder, as `kubemill run` writes it: the same reader sees the same run.
    assert read_run(nb.output).results == nb.results
    assert "cells" in nb.lineage


def _environment_notebook(path: Path) -> str:
    cell = new_code_cell(
        "import os, kubemill\nkubemill.record('greeting', os.environ.get('KUBEMILL_TEST_GREETING'))"
    )
    nbformat.write(new_notebook(cells=[cell]), path)
    return str(path)


def test_execute_as_a_subprocess_sets_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = _environment_notebook(tmp_path / "env.ipynb")
    monkeypatch.setenv("KUBEMILL_TEST_GREETING", "from the test process")
    given = execute(
        notebook, output=tmp_path / "a", subprocess=True, env={"KUBEMILL_TEST_GREETING": "hi"}
    )
    assert given.result("greeting") == "hi"
    inherited = execute(notebook, output=tmp_path / "b")
    assert inherited.result("greeting") == "from the test process"


@MODES
def test_a_failed_notebook_names_the_cell_and_the_exception(
    tmp_path: Path, subprocess: bool
) -> None:
    with pytest.raises(NotebookFailed) as raised:
        execute(NOTEBOOKS / "fails.ipynb", output=tmp_path / "run", subprocess=subprocess)
    lines = str(raised.value).splitlines()
    assert lines[0] == (
        f"{tmp_path}/run/: the run failed in cell 4 (id c2): CellError: "
        "cell In [3] raised KeyError: 'x'"
    )
    assert lines[1] == "the traceback ends:"
    assert "    ----> 1 raise KeyError('x')" in lines
    assert lines[-1] == "    KeyError: 'x'"
    # The failed notebook stays on the exception, saved as the runner saves it.
    failed = raised.value.notebook
    assert isinstance(failed, ExecutedNotebook) and failed.exit_code == ExitCode.CELL_ERROR
    error = failed.cells[4].error
    assert error is not None and (error.ename, error.evalue) == ("KeyError", "'x'")
    assert "before the error" in failed.text and "never runs" not in failed.text


def test_a_failed_notebook_is_returned_when_the_test_decides(tmp_path: Path) -> None:
    nb = execute(NOTEBOOKS / "fails.ipynb", output=tmp_path / "run", raise_on_failure=False)
    assert (nb.failed, nb.exit_code, nb.summary.reason) == (True, ExitCode.CELL_ERROR, "CellError")
    assert nb.failure is not None and nb.failure["ename"] == "KeyError"
    with pytest.raises(NotebookFailed, match=r"in cell 4 \(id c2\): CellError"):
        nb.assert_succeeded()
    tolerant = execute(NOTEBOOKS / "fails.ipynb", output=tmp_path / "tolerant", allow_errors=True)
    assert tolerant.status == "Succeeded" and "never runs" in tolerant.text


def test_a_cell_timeout_fails_with_the_runners_reason(tmp_path: Path) -> None:
    began = time.monotonic()
    with pytest.raises(NotebookFailed) as raised:
        execute(NOTEBOOKS / "sleep.ipynb", {"seconds": 60}, output=tmp_path / "run", cell_timeout=1)
    assert time.monotonic() - began < 30
    failed = raised.value.notebook
    assert failed.failure is not None and failed.failure["reason"] == "CellTimeout"
    assert failed.cells[failed.failure["cell"]].id == "c1"
    assert str(raised.value).splitlines()[0] == (
        f"{tmp_path}/run/: the run failed in cell {failed.failure['cell']} (id c1): CellTimeout: "
        "cell In [3] did not finish within the cell timeout of 1s (raise --cell-timeout, or 0 "
        "for none)"
    )


def test_a_run_timeout_stops_a_subprocess_run(tmp_path: Path) -> None:
    nb = execute(
        NOTEBOOKS / "sleep.ipynb",
        {"seconds": 60},
        output=tmp_path / "run",
        timeout=8,
        subprocess=True,
        raise_on_failure=False,
    )
    assert (nb.exit_code, nb.summary.reason) == (ExitCode.RUN_TIMEOUT, "RunTimeout")
    assert nb.failure is not None and nb.failure["message"].startswith(
        "the run did not finish within its timeout of 8s while cell In [3] was running"
    )
    assert "started sleeping" in nb.text


@MODES
def test_an_early_exit_succeeds(tmp_path: Path, subprocess: bool) -> None:
    nb = execute(NOTEBOOKS / "sysexit0.ipynb", output=tmp_path / "run", subprocess=subprocess)
    assert (nb.status, nb.exit_code, nb.results) == ("Succeeded", ExitCode.OK, {"before": 1})
    assert nb.lineage["earlyExit"]["skippedCells"] == 1
    assert "Cell should not execute." not in nb.text


@MODES
def test_input_the_runner_refuses_is_not_run(tmp_path: Path, subprocess: bool) -> None:
    params = NOTEBOOKS / "params.ipynb"
    with pytest.raises(NotebookNotRun) as raised:
        execute(params, {"nn": 1}, output=tmp_path / "a", subprocess=subprocess)
    assert (raised.value.reason, raised.value.exit_code) == ("BadInput", ExitCode.BAD_INPUT)
    assert str(raised.value) == (
        f"{params} was not run: BadInput: unknown parameter 'nn' (did you mean 'n'?); the "
        "notebook declares: alpha, anything, config, flags, n, region; pass "
        "--allow-unknown-parameters to inject it anyway (execute() takes `kubemill run`'s "
        "options as keyword arguments: --allow-unknown-parameters is "
        "allow_unknown_parameters=True)"
    )
    missing = tmp_path / "missing.ipynb"
    with pytest.raises(NotebookNotRun) as raised:
        execute(missing, output=tmp_path / "b", subprocess=subprocess)
    assert str(raised.value) == f"{missing} was not run: BadInput: {missing}: no such file"
    with pytest.raises(NotebookNotRun) as raised:
        execute(params, {"n": "five"}, output=tmp_path / "c", subprocess=subprocess)
    assert str(raised.value) == (
        f"{params} was not run: BadInput: parameter 'n' is declared as int but got \"five\" (str)"
    )
    accepted = execute(
        params,
        {"nn": 1},
        output=tmp_path / "d",
        allow_unknown_parameters=True,
        subprocess=subprocess,
    )
    assert accepted.parameters == {"nn": 1}


def test_execute_reads_a_served_notebook(tmp_path: Path) -> None:
    with serve_folder(NOTEBOOKS) as url:
        nb = execute(f"{url}/params.ipynb", {"n": 2}, output=tmp_path / "run")
    assert nb.result("n") == 2
    assert nb.lineage["input"]["uri"] == f"{url}/params.ipynb"


def test_execute_reads_and_writes_s3(
    s3_admin: Any, bucket: str, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s3_admin.put_object(
        Bucket=bucket, Key="nb/params.ipynb", Body=(NOTEBOOKS / "params.ipynb").read_bytes()
    )
    notebook = f"s3://{bucket}/nb/params.ipynb"
    # Credentials given in env reach the runner only: the run folder is read back with this
    # process's (here the endpoint and no key), as read_run reads it, and the message says so.
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nothing")
    with pytest.raises(NotebookNotRun) as raised:
        execute(notebook, output=f"s3://{bucket}/runs/a", subprocess=True, env=s3_env)
    assert str(raised.value).startswith(
        f"{notebook} ran, but its output cannot be read back: cannot read "
        f"s3://{bucket}/runs/a/output.ipynb: "
    )
    assert raised.value.exit_code == ExitCode.OK
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    nb = execute(notebook, {"n": 3}, output=f"s3://{bucket}/runs/b", subprocess=True)
    assert (nb.output, nb.result("n")) == (f"s3://{bucket}/runs/b/", 3)
    nb = execute(notebook, {"n": 4}, output=f"s3://{bucket}/runs/c/")
    assert read_run(nb.output).results == {"alpha": 0.1, "region": "eu", "n": 4}


def test_execute_writes_to_a_new_temporary_folder_by_default() -> None:
    nb = execute(NOTEBOOKS / "sysexit0.ipynb")
    folder = Path(nb.output)
    try:
        assert folder.name.startswith("kubemill-sysexit0-")
        assert sorted(p.name for p in folder.iterdir()) == [
            "output.ipynb",
            "results.json",
            "run.json",
        ]
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


# --- the pytest plugin -----------------------------------------------------------------------

PLUGIN_TESTS = """
from pathlib import Path

import pytest

NOTEBOOKS = Path({notebooks!r})


def test_an_empty_folder_of_its_own(kubemill_output, tmp_path):
    assert kubemill_output.parent == tmp_path
    assert kubemill_output.is_dir() and list(kubemill_output.iterdir()) == []


def test_each_run_keeps_a_folder(kubemill_execute, kubemill_output):
    first = kubemill_execute(NOTEBOOKS / "params.ipynb", {{"n": 7}})
    again = kubemill_execute(str(NOTEBOOKS / "params.ipynb"), {{"n": 8}}, subprocess=True)
    assert (first.result("n"), again.result("n")) == (7, 8)
    assert first.output == f"{{kubemill_output}}/params/"
    assert again.output == f"{{kubemill_output}}/params-2/"


def test_a_failing_notebook_fails_the_test(kubemill_execute):
    kubemill_execute(NOTEBOOKS / "fails.ipynb")


def test_the_output_is_the_fixtures(kubemill_execute, tmp_path):
    with pytest.raises(TypeError, match="kubemill_execute writes into the kubemill_output folder"):
        kubemill_execute(NOTEBOOKS / "params.ipynb", output=tmp_path)
"""


def test_the_plugins_fixtures_load_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_notebooks=PLUGIN_TESTS.format(notebooks=str(NOTEBOOKS)))
    # Keep only the failed tests' folders, as a project that inspects them would.
    pytester.makeini("[pytest]\ntmp_path_retention_policy = failed\n")
    # A process of its own: the plugin is found through kubemill's installed entry point, as in
    # any project (nothing here imports or names it).
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=240)
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["plugins: *kubemill-*"])
    output = result.stdout.str()
    # The test's own line, then the message: execute's frames are hidden from the report.
    result.stdout.re_match_lines(
        [
            re.escape('>       kubemill_execute(NOTEBOOKS / "fails.ipynb")'),
            r"E       kubemill\.testing\.NotebookFailed: \S+/kubemill/fails/: "
            + re.escape(
                "the run failed in cell 4 (id c2): CellError: cell In [3] raised KeyError: 'x'"
            ),
            "E       the traceback ends:",
            re.escape("E           ----> 1 raise KeyError('x')"),
            re.escape("E           KeyError: 'x'"),
        ],
        consecutive=False,
    )
    assert "kubemill/testing.py" not in output
    # The failed test's run stays for inspection; the passed tests' folders are gone.
    folder = re.search(r"NotebookFailed: (\S+)/: the run failed", output)
    assert folder is not None
    assert Path(folder.group(1), "output.ipynb").is_file()
    basetemp = Path(folder.group(1)).parents[2]
    assert not list(basetemp.glob("test_each_run_keeps_a_folder*"))
