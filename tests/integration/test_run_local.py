"""`kubemill run` with a real ipykernel, local files: success, every failure kind, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KUBEMILL, NOTEBOOKS, kubemill, runner_env
from tests.integration.helpers import code_cells, load, start, stdout_text, stop, wait_for_line

pytestmark = pytest.mark.integration

ROOT = NOTEBOOKS.parents[1]


def test_success_writes_notebook_results_lineage_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        [
            "run",
            str(NOTEBOOKS / "params.ipynb"),
            f"{out}/",
            "-p",
            "alpha",
            "0.5",
            "-r",
            "region",
            "us",
            "--termination-message-path",
            str(summary_file),
        ]
    )
    assert result.returncode == 0, result.stderr
    nb = load(out / "output.ipynb")
    # The injected cell sits right after the parameters cell and carries the values.
    assert nb["cells"][1]["metadata"]["tags"] == ["parameters"]
    assert nb["cells"][2]["metadata"]["tags"] == ["injected-parameters"]
    assert nb["cells"][2]["source"] == "# Parameters\nalpha = 0.5\nregion = 'us'\n"
    assert "alpha=0.5 region=us" in stdout_text(nb)
    assert all(c["execution_count"] for c in code_cells(nb))
    expected = {"alpha": 0.5, "region": "us", "n": 3}
    assert load(out / "results.json") == expected
    assert nb["metadata"]["kubemill"]["results"] == expected
    assert nb["metadata"]["papermill"]["parameters"] == {"alpha": 0.5, "region": "us"}

    lineage = load(out / "run.json")
    source = (NOTEBOOKS / "params.ipynb").read_bytes()
    assert lineage["input"]["sha256"] == hashlib.sha256(source).hexdigest()
    assert lineage["status"] == "Succeeded"
    assert lineage["parameters"] == {"alpha": 0.5, "region": "us"}
    assert lineage["kernel"]["name"] == "python3"
    assert lineage["kernel"]["languageVersion"].count(".") == 2
    assert [c["status"] for c in lineage["cells"]] == ["ok", "ok", "ok"]
    assert all(c["durationSeconds"] >= 0 for c in lineage["cells"])

    summary = load(summary_file)
    assert summary["status"] == "Succeeded"
    assert summary["exitCode"] == 0
    assert summary["results"] == expected
    assert summary["outputUrl"] == f"{out}/output.ipynb"
    # The progress log names each cell as it runs.
    assert "cell 3/3 started: import kubemill" in result.stderr
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"


def test_cell_error_saves_output_with_banner_and_anchor(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        [
            "run",
            str(NOTEBOOKS / "fails.ipynb"),
            str(tmp_path / "out.ipynb"),
            "--termination-message-path",
            str(summary_file),
        ]
    )
    assert result.returncode == 10
    assert "kubemill: error" not in result.stderr  # a run failure is not a usage error
    assert "ERROR   cell In [3] raised KeyError: 'x'" in result.stderr
    nb = load(tmp_path / "out.ipynb")
    banner = nb["cells"][0]
    assert banner["metadata"]["tags"] == ["kubemill-banner"]
    assert "Execution failed: CellError" in banner["source"]
    assert 'href="#kubemill-failed-cell"' in banner["source"]
    summary = load(summary_file)
    failure = summary["failure"]
    failed = nb["cells"][failure["cell"]]
    assert failed["source"] == "raise KeyError('x')"
    assert failed["id"] == failure["cellId"]
    assert 'id="kubemill-failed-cell"' in nb["cells"][failure["cell"] - 1]["source"]
    assert (failure["ename"], failure["evalue"], failure["executionCount"]) == (
        "KeyError",
        "'x'",
        3,
    )
    assert "\x1b[" not in failure["traceback"]
    assert nb["metadata"]["kubemill"]["failure"]["reason"] == "CellError"
    # The cell after the failure did not run and shows no stale output.
    assert nb["cells"][-1]["outputs"] == [] and nb["cells"][-1]["execution_count"] is None


def test_allow_errors_keeps_going(tmp_path: Path) -> None:
    result = kubemill(
        ["run", str(NOTEBOOKS / "fails.ipynb"), str(tmp_path / "o.ipynb"), "--allow-errors"]
    )
    assert result.returncode == 0, result.stderr
    nb = load(tmp_path / "o.ipynb")
    assert "never runs" in stdout_text(nb)
    assert nb["metadata"]["kubemill"]["tolerantCellErrors"] == 1


def summary_to(path: Path) -> list[str]:
    return ["--termination-message-path", str(path)]


@pytest.mark.parametrize(
    ("notebook", "number", "code", "how", "args"),
    [
        ("sysexit0.ipynb", 2, 0, "SystemExit 0", []),
        ("systemexit.ipynb", 1, None, "SystemExit", []),
        # Under --allow-errors the SystemExit is an output, not an exception: it still ends
        # the notebook, and is no tolerated error.
        ("sysexit0.ipynb", 2, 0, "SystemExit 0", ["--allow-errors"]),
    ],
)
def test_system_exit_0_ends_the_run_successfully_as_in_papermill(
    tmp_path: Path, notebook: str, number: int, code: int | None, how: str, args: list[str]
) -> None:
    out = tmp_path / "run"
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        ["run", str(NOTEBOOKS / notebook), f"{out}/", *summary_to(summary_file), *args]
    )
    assert result.returncode == 0, result.stderr
    message = f"the notebook stopped early at cell In [{number}] ({how})"
    assert message in result.stderr
    nb = load(out / "output.ipynb")
    banner = nb["cells"][0]
    assert banner["metadata"]["tags"] == ["kubemill-banner"]
    assert "Succeeded: stopped early" in banner["source"]
    early = {
        "cell": nb["cells"].index(next(c for c in nb["cells"] if c["id"] == "c1")),
        "cellId": "c1",
        "executionCount": number,
        "code": code,
        "skippedCells": 1,
        "message": message,
    }
    exited = nb["cells"][early["cell"]]
    # The kernel's own report stays in the cell, as papermill leaves it.
    error = next(o for o in exited["outputs"] if o["output_type"] == "error")
    assert (error["ename"], error["evalue"]) == ("SystemExit", "" if code is None else str(code))
    assert exited["metadata"]["kubemill"]["status"] == "exited"
    last = nb["cells"][-1]
    assert last["outputs"] == [] and last["execution_count"] is None
    assert last["metadata"]["kubemill"] == {"status": "skipped"}
    assert "Cell should not execute." not in stdout_text(nb)

    summary = load(summary_file)
    assert (summary["status"], summary["reason"], summary["exitCode"]) == (
        "Succeeded",
        "Succeeded",
        0,
    )
    assert summary["earlyExit"] == early and "failure" not in summary
    lineage = load(out / "run.json")
    assert lineage["status"] == "Succeeded" and lineage["earlyExit"] == early
    assert nb["metadata"]["kubemill"]["earlyExit"] == early
    assert "tolerantCellErrors" not in lineage
    statuses = {c["id"]: (c["index"], c["status"]) for c in lineage["cells"]}
    assert statuses["c1"] == (early["cell"], "exited")
    assert statuses["c2"] == (len(nb["cells"]) - 1, "skipped")
    if notebook == "sysexit0.ipynb":  # what ran before the exit is recorded, nothing after
        assert load(out / "results.json") == {"before": 1}


def test_exit_and_quit_end_the_run_successfully(tmp_path: Path) -> None:
    """ipykernel answers `exit()` with a request that the frontend close, not an exception."""
    notebook = json.loads((NOTEBOOKS / "sysexit0.ipynb").read_text())
    notebook["cells"][2]["source"] = "exit()"
    path = _write(tmp_path / "exit.ipynb", json.dumps(notebook))
    result = kubemill(["run", str(path), f"{tmp_path}/run/"])
    assert result.returncode == 0, result.stderr
    lineage = load(tmp_path / "run" / "run.json")
    assert lineage["earlyExit"]["code"] is None
    assert lineage["earlyExit"]["message"].endswith("(exit())")
    assert [c["status"] for c in lineage["cells"]] == ["ok", "exited", "skipped"]


def test_system_exit_with_another_code_is_a_cell_error(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    out = tmp_path / "run"
    result = kubemill(
        ["run", str(NOTEBOOKS / "sysexit3.ipynb"), f"{out}/", *summary_to(summary_file)]
    )
    assert result.returncode == 10
    assert "cell In [2] raised SystemExit: 3" in result.stderr
    summary = load(summary_file)
    assert summary["reason"] == "CellError" and "earlyExit" not in summary
    assert (summary["failure"]["ename"], summary["failure"]["evalue"]) == ("SystemExit", "3")
    nb = load(out / "output.ipynb")
    assert "Execution failed: CellError" in nb["cells"][0]["source"]
    assert nb["cells"][summary["failure"]["cell"]]["source"] == "sys.exit(3)"
    assert "earlyExit" not in load(out / "run.json")


@pytest.mark.parametrize(
    ("args", "code", "reason", "message"),
    [
        (["--cell-timeout", "1.5"], 11, "CellTimeout", "did not finish within the cell timeout"),
        # A timeout is not a cell error to tolerate: the run still stops there.
        (
            ["--cell-timeout", "1.5", "--allow-errors"],
            11,
            "CellTimeout",
            "did not finish within the cell timeout",
        ),
        (["--timeout", "3"], 12, "RunTimeout", "did not finish within its timeout of 3s"),
    ],
)
def test_timeouts_interrupt_and_show_where_the_cell_was(
    tmp_path: Path, args: list[str], code: int, reason: str, message: str
) -> None:
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        [
            "run",
            str(NOTEBOOKS / "sleep.ipynb"),
            str(tmp_path / "o.ipynb"),
            *args,
            "--termination-message-path",
            str(summary_file),
        ]
    )
    assert result.returncode == code, result.stderr
    summary = load(summary_file)
    assert summary["reason"] == reason
    assert message in summary["failure"]["message"]
    nb = load(tmp_path / "o.ipynb")
    stuck = nb["cells"][summary["failure"]["cell"]]
    assert "time.sleep" in stuck["source"]
    # The interrupt's traceback points at the line the cell was stuck on.
    errors = [o for o in stuck["outputs"] if o["output_type"] == "error"]
    assert errors and errors[0]["ename"] == "KeyboardInterrupt"
    assert "started sleeping" in stdout_text(nb)


@pytest.mark.parametrize(
    "death",
    ["import os\nos._exit(3)", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"],
    ids=["os._exit", "SIGKILL as from the OOM killer"],
)
def test_kernel_death_is_its_own_failure(tmp_path: Path, death: str) -> None:
    nb = load(NOTEBOOKS / "dies.ipynb")
    nb["cells"][1]["source"] = death
    notebook = tmp_path / "dies.ipynb"
    notebook.write_text(json.dumps(nb))
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        [
            "run",
            str(notebook),
            str(tmp_path / "o.ipynb"),
            "--termination-message-path",
            str(summary_file),
        ]
    )
    assert result.returncode == 13, result.stderr
    summary = load(summary_file)
    assert summary["reason"] == "KernelDied"
    assert summary["failure"]["executionCount"] == 2
    nb = load(tmp_path / "o.ipynb")
    assert "about to die" in stdout_text(nb)
    assert "Execution failed: KernelDied" in nb["cells"][0]["source"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_cell_saves_output_and_exits_promptly(tmp_path: Path, signum: int) -> None:
    summary_file = tmp_path / "summary.json"
    process = start(
        [
            "run",
            str(NOTEBOOKS / "sleep.ipynb"),
            str(tmp_path / "o.ipynb"),
            "--termination-message-path",
            str(summary_file),
        ]
    )
    assert process.stdout is not None and process.stderr is not None
    wait_for_line(process.stdout, "started sleeping", timeout=60)
    code, seconds, stderr = stop(process, signum)
    assert code == 15, stderr
    assert "interrupting the kernel" in stderr
    # The documented bound (README: 5 s interrupt grace + save) is far inside Kubernetes' 30 s.
    assert seconds < 20
    summary = load(summary_file)
    assert summary["reason"] == "Terminated"
    assert signal.Signals(signum).name in summary["failure"]["message"]
    nb = load(tmp_path / "o.ipynb")
    assert "Execution failed: Terminated" in nb["cells"][0]["source"]
    assert "started sleeping" in stdout_text(nb)


def test_a_sigterm_before_the_run_handles_signals_is_not_lost(tmp_path: Path) -> None:
    """In a container the runner is PID 1, which gets only the signals it has a handler for: a
    SIGTERM while Python still imports nbclient would be dropped and the run would go on. The
    command holds SIGTERM first thing and the run acts on it once its handler is in. Sent here
    between the two, deterministically, by the process itself."""
    summary_file = tmp_path / "summary.json"
    argv = [
        "run", str(NOTEBOOKS / "params.ipynb"), str(tmp_path / "o.ipynb"),
        "--termination-message-path", str(summary_file),
    ]  # fmt: skip
    script = (
        "import os, signal, sys\n"
        "from kubemill.cli import main\n"
        "from kubemill.runner import early\n"
        "early.hold()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        f"sys.exit(main({argv!r}))\n"
    )
    result = subprocess.run(
        [str(Path(KUBEMILL).with_name("python")), "-P", "-c", script],
        capture_output=True, text=True, timeout=120, env=runner_env(),
    )  # fmt: skip
    assert result.returncode == 15, result.stderr
    summary = load(summary_file)
    assert summary["reason"] == "Terminated"
    assert "SIGTERM" in summary["failure"]["message"]
    # It stopped before the notebook was read: nothing ran, so no output notebook.
    assert not (tmp_path / "o.ipynb").exists()


def test_old_nbformat_is_upgraded_with_a_note(tmp_path: Path) -> None:
    result = kubemill(["run", str(NOTEBOOKS / "v3.ipynb"), str(tmp_path / "o.ipynb")])
    assert result.returncode == 0, result.stderr
    assert "upgraded" in result.stderr and "from nbformat 3.0 to 4.5" in result.stderr
    nb = load(tmp_path / "o.ipynb")
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kubemill"]["results"] == {"answer": 42}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda d: _write(d / "x.ipynb", "print('hi')\n"), [], "is not JSON (line 1, column 1"),
        (lambda d: _write(d / "x.ipynb", '{"cells": []}'), [], "not a Jupyter notebook"),
        (lambda d: d / "missing.ipynb", [], "missing.ipynb: no such file"),
        (lambda d: NOTEBOOKS / "params.ipynb", ["-p", "alpah", "0.2"], "did you mean 'alpha'?"),
        (
            lambda d: NOTEBOOKS / "params.ipynb",
            ["-p", "n", "many"],
            "parameter 'n' is declared as int but got \"many\" (str)",
        ),
        (lambda d: NOTEBOOKS / "params.ipynb", ["-k", "cobol"], "no Jupyter kernel named 'cobol'"),
        (
            lambda d: NOTEBOOKS / "params.ipynb",
            ["-f", "PARAMS"],
            "is not valid YAML at line 2",
        ),
        (
            lambda d: NOTEBOOKS / "params.ipynb",
            ["--secret-param", "token"],
            "is not NAME=ENV_VAR",
        ),
        (
            lambda d: NOTEBOOKS / "params.ipynb",
            ["--secret-param", "anything=KM_UNSET_VARIABLE"],
            "'KM_UNSET_VARIABLE', which is not set",
        ),
        (lambda d: NOTEBOOKS / "params.ipynb", ["--timeout", "soon"], "not a number of seconds"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, setup: Any, args: list[str], message: str
) -> None:
    notebook = setup(tmp_path)
    _write(tmp_path / "params.yaml", "a: [1, 2\n")
    args = [str(tmp_path / "params.yaml") if a == "PARAMS" else a for a in args]
    result = kubemill(["run", str(notebook), str(tmp_path / "o.ipynb"), *args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = kubemill(["run", str(tmp_path / "missing.ipynb"), "-", "--debug"])
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_bad_parameters_still_leave_an_output_that_says_why(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        [
            "run",
            str(NOTEBOOKS / "params.ipynb"),
            str(tmp_path / "o.ipynb"),
            "-p",
            "alpah",
            "1",
            "--termination-message-path",
            str(summary_file),
        ]
    )
    assert result.returncode == 2
    nb = load(tmp_path / "o.ipynb")
    assert "Not executed: BadInput" in nb["cells"][0]["source"]
    assert load(summary_file)["failure"]["reason"] == "BadInput"


def test_stdin_to_stdout(tmp_path: Path) -> None:
    result = kubemill(
        ["run", "-", "-", "-p", "region", "stdin"],
        stdin=(NOTEBOOKS / "params.ipynb").read_bytes(),
    )
    assert result.returncode == 0, result.stderr
    nb = json.loads(result.stdout)  # the cells' own output went to stderr, not into the JSON
    assert nb["metadata"]["kubemill"]["results"]["region"] == "stdin"
    assert "alpha=0.1 region=stdin" in result.stderr


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    result = kubemill(
        [
            "run",
            str(NOTEBOOKS / "params.ipynb"),
            str(tmp_path / "o.ipynb"),
            "--log-format",
            "json",
        ]
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    events = [r.get("event") for r in records]
    assert events.count("cell_started") == 2 and events.count("cell_finished") == 2
    outputs = [r for r in records if r.get("event") == "output"]
    assert outputs and outputs[0]["stream"] == "stdout" and "alpha=0.1" in outputs[0]["message"]


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [KUBEMILL, "run", str(NOTEBOOKS / "params.ipynb"), str(tmp_path / "o.ipynb")],
        env=runner_env(),
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    assert "Executing" in text and "2/2" in text
    assert "cell 1/2 started" not in text  # the bar replaces per-cell lines


def test_html_rendering(tmp_path: Path) -> None:
    result = kubemill(["run", str(NOTEBOOKS / "params.ipynb"), f"{tmp_path}/run/", "--html"])
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "run" / "output.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "alpha=0.1" in html


def test_cwd_sets_the_kernels_working_directory(tmp_path: Path) -> None:
    notebook = tmp_path / "cwd.ipynb"
    nb = load(NOTEBOOKS / "values.ipynb")
    nb["cells"][1]["source"] = "import os, kubemill\nkubemill.record('cwd', os.getcwd())"
    notebook.write_text(json.dumps(nb))
    work = tmp_path / "work"
    work.mkdir()
    result = kubemill(["run", str(notebook), str(tmp_path / "o.ipynb"), "--cwd", str(work)])
    assert result.returncode == 0, result.stderr
    assert load(tmp_path / "o.ipynb")["metadata"]["kubemill"]["results"]["cwd"] == str(work)


def test_inspect_lists_declared_parameters() -> None:
    table = kubemill(["inspect", str(NOTEBOOKS / "params.ipynb")])
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "DEFAULT", "HELP"]
    assert lines[1].split()[:3] == ["alpha", "float", "0.1"] and "learning rate" in lines[1]
    as_json = json.loads(kubemill(["inspect", str(NOTEBOOKS / "params.ipynb"), "--json"]).stdout)
    assert as_json[1] == {
        "name": "region",
        "type": "str",
        "default": '"eu"',
        "help": "which region to report on",
    }


def test_a_parameters_cell_python_cannot_read_fails_at_that_cell_as_in_papermill(
    tmp_path: Path,
) -> None:
    notebook = str(NOTEBOOKS / "params_broken.ipynb")
    inspected = kubemill(["inspect", notebook, "--json"])
    assert inspected.returncode == 0, inspected.stderr
    assert [p["name"] for p in json.loads(inspected.stdout)] == ["alpha", "region"]
    assert "line 2 of the parameters cell could not be read" in inspected.stderr

    summary_file = tmp_path / "summary.json"
    out = tmp_path / "o.ipynb"
    result = kubemill(["run", notebook, str(out), "-p", "alpha", "0.5", *summary_to(summary_file)])
    assert result.returncode == 10, result.stderr
    assert "WARNING line 2 of the parameters cell could not be read" in result.stderr
    summary = load(summary_file)
    assert summary["failure"]["ename"] == "SyntaxError"
    nb = load(out)
    assert nb["cells"][summary["failure"]["cell"]]["metadata"]["tags"] == ["parameters"]
    assert "alpha = 0.5" in nb["cells"][summary["failure"]["cell"] + 1]["source"]

    # The names that could be read are still checked before the kernel starts.
    wrong = kubemill(["run", notebook, str(out), "-p", "alpha", "fast"])
    assert wrong.returncode == 2
    assert "parameter 'alpha' is declared as float" in wrong.stderr
    unknown = kubemill(["run", notebook, str(out), "-p", "beta", "3"])
    assert unknown.returncode == 2
    assert "unknown parameter 'beta'" in unknown.stderr
    assert "(line 2 of its parameters cell could not be read)" in unknown.stderr


def test_results_command_reads_kubemill_and_scrapbook_records(tmp_path: Path) -> None:
    result = kubemill(["run", str(NOTEBOOKS / "scrapbook_glue.ipynb"), f"{tmp_path}/run/"])
    assert result.returncode == 0, result.stderr
    printed = kubemill(["results", f"{tmp_path}/run/", "--json"])
    assert json.loads(printed.stdout) == {"rows": 1204, "label": "daily", "accuracy": 0.93}
    table = kubemill(["results", f"{tmp_path}/run/output.ipynb"])
    assert "rows      1204" in table.stdout


def test_papermill_outputs_run_again_cleanly(tmp_path: Path) -> None:
    """A notebook papermill executed (and failed) runs unchanged; its old banner goes away."""
    papermill = shutil.which("papermill", path=str(Path(KUBEMILL).parent))
    assert papermill
    first = subprocess.run(
        [
            papermill,
            str(NOTEBOOKS / "fails.ipynb"),
            str(tmp_path / "pm.ipynb"),
            "--no-progress-bar",
        ],
        capture_output=True,
        env=runner_env(),
        check=False,
    )
    assert first.returncode == 1
    pm_nb = load(tmp_path / "pm.ipynb")
    assert any("papermill-error-cell-tag" in c["metadata"].get("tags", []) for c in pm_nb["cells"])
    result = kubemill(
        ["run", str(tmp_path / "pm.ipynb"), str(tmp_path / "again.ipynb"), "--allow-errors"]
    )
    assert result.returncode == 0, result.stderr
    again = load(tmp_path / "again.ipynb")
    tags = [t for c in again["cells"] for t in c["metadata"].get("tags", [])]
    assert "papermill-error-cell-tag" not in tags and "kubemill-banner" not in tags


def test_checkpoints_are_bounded_by_time_not_by_outputs(tmp_path: Path) -> None:
    nb = load(NOTEBOOKS / "values.ipynb")
    nb["cells"][1]["source"] = (
        "import time\nfor i in range(40):\n    print(i, flush=True)\n    time.sleep(0.1)"
    )
    notebook = tmp_path / "chatty.ipynb"
    notebook.write_text(json.dumps(nb))
    result = kubemill(["run", str(notebook), f"{tmp_path}/run/", "--checkpoint-interval", "1"])
    assert result.returncode == 0, result.stderr
    checkpoints = load(tmp_path / "run" / "run.json")["checkpoints"]
    # 40 outputs over about 4 s: one save per second at most, not one per output.
    assert 1 <= checkpoints <= 6


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not strict JSON")

    return json.loads(text, parse_constant=refuse)


def test_nan_and_dates_as_parameters_give_strict_json(tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("report_date: 2026-11-27\nthreshold: .nan\n")
    result = kubemill(
        [
            "run", str(ROOT / "examples" / "daily_report.ipynb"), f"{tmp_path}/run/",
            "-f", str(params),
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    nb = _strict((tmp_path / "run" / "output.ipynb").read_text())
    lineage = _strict((tmp_path / "run" / "run.json").read_text())
    assert lineage["parameters"] == {"report_date": "2026-11-27", "threshold": "NaN"}  # type: ignore[index]
    assert nb["cells"][2]["source"].endswith(  # type: ignore[index]
        "report_date = '2026-11-27'\nthreshold = float('nan')\n"
    )


def test_prepare_only_and_report_mode(tmp_path: Path) -> None:
    result = kubemill(
        [
            "run", str(NOTEBOOKS / "params.ipynb"), str(tmp_path / "o.ipynb"),
            "-p", "alpha", "0.3", "--prepare-only", "--report-mode",
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    nb = load(tmp_path / "o.ipynb")
    assert "alpha = 0.3" in nb["cells"][2]["source"]
    assert all(c["execution_count"] is None for c in code_cells(nb))
    assert all(c["metadata"]["jupyter"]["source_hidden"] for c in code_cells(nb))
    assert nb["metadata"]["kubemill"]["status"] == "Prepared"
