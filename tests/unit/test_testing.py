"""kubemill.testing over notebooks built here and the golden ones: no kernel, no S3."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kubemill import testing
from kubemill.cli import build_parser
from kubemill.cli.run import run_options
from kubemill.runner.contract import RECORD_MIMETYPE, SCRAPBOOK_MIMETYPES
from kubemill.testing import (
    NotebookFailed,
    NotebookNotFound,
    NotebookUnreadable,
    execute,
    failure_message,
    notebook_stem,
    read_notebook,
    read_run,
)
from tests.conftest import NOTEBOOKS


def _record(name: str, value: Any) -> Any:
    return new_output(
        "display_data",
        data={RECORD_MIMETYPE: {"name": name, "value": value}, "text/plain": f"recorded {name}"},
    )


def _glue(name: str, value: Any) -> Any:
    scrap = {"name": name, "data": value, "encoder": "json", "version": 1}
    return new_output("display_data", data={SCRAPBOOK_MIMETYPES[0]: scrap})


FAILURE = {
    "reason": "CellError",
    "message": "cell In [2] raised KeyError: 'x'",
    "cell": 3,
    "cellId": "boom",
    "executionCount": 2,
    "ename": "KeyError",
    "evalue": "'x'",
    "traceback": "KeyError: 'x'",
}


def _executed(*, failed: bool = False) -> Any:
    params = new_code_cell("alpha = 0.1", id="params", metadata={"tags": ["parameters"]})
    injected = new_code_cell(
        "alpha = 0.5", id="injected", metadata={"tags": ["injected-parameters"]}
    )
    work = new_code_cell(
        "...",
        id="work",
        execution_count=1,
        outputs=[
            new_output("stream", name="stdout", text="loading "),
            new_output("stream", name="stdout", text="done\n"),
            _record("nothing", None),
            _record("nested", {"a": None, "b": [None, 1, {"c": True}]}),
            _glue("rows", 1204),
            _record("rows", 1205),
            new_output("stream", name="stderr", text="a warning"),
            new_output("execute_result", data={"text/plain": "42"}, execution_count=1),
        ],
        metadata={"tags": ["report"]},
    )
    cells = [new_markdown_cell("# Title", id="title"), params, injected, work]
    if failed:
        cells.append(
            new_code_cell(
                "raise KeyError('x')",
                id="boom",
                execution_count=2,
                outputs=[
                    new_output(
                        "error", ename="KeyError", evalue="'x'", traceback=["Trace", "KeyError"]
                    )
                ],
                metadata={"tags": ["report"]},
            )
        )
    nb = new_notebook(cells=cells)
    nb.metadata["papermill"] = {"parameters": {"alpha": 0.5, "tags": [None, "x"]}}
    nb.metadata["kubemill"] = {
        "status": "Failed" if failed else "Succeeded",
        "parameters": {"alpha": 0.5},
        "results": {},
        **({"failure": FAILURE} if failed else {}),
    }
    return nb


def _write(path: Path, nb: Any) -> str:
    path.write_text(nbformat.writes(nb))
    return str(path)


def test_results_keep_none_and_nested_values_and_read_scrapbook_glue(tmp_path: Path) -> None:
    nb = read_notebook(_write(tmp_path / "out.ipynb", _executed()))
    assert nb.results == {
        "nothing": None,
        "nested": {"a": None, "b": [None, 1, {"c": True}]},
        "rows": 1205,  # recorded after the glue: the last one wins, as in results.json
    }
    assert nb.result("nothing") is None
    assert nb.result("nested")["b"][2] == {"c": True}


def test_a_missing_result_names_the_recorded_ones(tmp_path: Path) -> None:
    nb = read_notebook(_write(tmp_path / "out.ipynb", _executed()))
    with pytest.raises(KeyError, match=r"no result 'row'; it recorded: nested, nothing, rows"):
        nb.result("row")


def test_parameters_status_and_a_succeeded_run(tmp_path: Path) -> None:
    nb = read_notebook(_write(tmp_path / "out.ipynb", _executed()))
    assert nb.parameters == {"alpha": 0.5, "tags": [None, "x"]}
    assert (nb.status, nb.failed, nb.failure) == ("Succeeded", False, None)
    assert nb.lineage["parameters"] == {"alpha": 0.5}
    nb.assert_succeeded()


def test_parameters_fall_back_to_kubemill_lineage(tmp_path: Path) -> None:
    executed = _executed()
    del executed.metadata["papermill"]
    assert read_notebook(_write(tmp_path / "out.ipynb", executed)).parameters == {"alpha": 0.5}


def test_a_failed_run_says_where_and_why(tmp_path: Path) -> None:
    nb = read_notebook(_write(tmp_path / "out.ipynb", _executed(failed=True)))
    assert nb.failed and nb.status == "Failed"
    assert nb.failure == FAILURE
    error = nb.cell("boom").error
    assert error is not None
    assert (error.ename, error.evalue, error.traceback) == ("KeyError", "'x'", "Trace\nKeyError")
    with pytest.raises(NotebookFailed) as raised:
        nb.assert_succeeded()
    # The cell by index (as written) and id, the exception, and where the traceback ends.
    assert str(raised.value) == (
        f"{tmp_path / 'out.ipynb'}: the run failed in cell 3 (id boom): CellError: "
        "cell In [2] raised KeyError: 'x'\nthe traceback ends:\n    KeyError: 'x'"
    )
    assert isinstance(raised.value, AssertionError) and raised.value.notebook is nb


def test_a_notebook_kubemill_did_not_run_has_no_status(tmp_path: Path) -> None:
    nb = read_notebook(str(NOTEBOOKS / "fails.ipynb"))
    assert (nb.status, nb.failed, nb.failure, nb.lineage, nb.results) == (None, False, None, {}, {})
    with pytest.raises(AssertionError, match=r"status is None, not Succeeded"):
        nb.assert_succeeded()


def test_cells_by_id_and_tag(tmp_path: Path) -> None:
    nb = read_notebook(_write(tmp_path / "out.ipynb", _executed()))
    assert [c.id for c in nb.cells] == ["title", "params", "injected", "work"]
    assert nb.cell("injected-parameters").source == "alpha = 0.5"
    assert nb.cell("params").tags == ("parameters",)
    work = nb.cell("work")
    assert (work.index, work.cell_type, work.execution_count, work.error) == (3, "code", 1, None)
    assert nb.cell("title").cell_type == "markdown"


def test_a_tag_on_several_cells_or_no_cell_is_an_error(tmp_path: Path) -> None:
    nb = read_notebook(_write(tmp_path / "out.ipynb", _executed(failed=True)))
    with pytest.raises(ValueError, match=r"'report' is on several cells \(work, boom\)"):
        nb.cell("report")
    with pytest.raises(
        KeyError, match=r"no cell with id or tag 'nope'; ids: title, .*tags: .*report"
    ):
        nb.cell("nope")


def test_outputs_text_joins_streams_as_printed_and_shows_values_and_errors(
    tmp_path: Path,
) -> None:
    nb = read_notebook(_write(tmp_path / "out.ipynb", _executed(failed=True)))
    assert nb.cell("work").outputs_text == (
        "loading done\nrecorded nothing\nrecorded nested\nrecorded rows\na warning\n42\n"
    )
    assert nb.cell("boom").outputs_text == "KeyError: 'x'\n"
    assert nb.text == nb.cell("work").outputs_text + "KeyError: 'x'\n"


def test_read_run_takes_results_json_and_run_json(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    _write(folder / "output.ipynb", _executed())
    complete = {"rows": 1205, "big": ["x" * 10] * 3}
    (folder / "results.json").write_text(json.dumps(complete))
    lineage = {"status": "Succeeded", "cells": [{"index": 1}], "parameters": {"alpha": 0.5}}
    (folder / "run.json").write_text(json.dumps(lineage))
    for url in (str(folder), f"{folder}/"):
        run = read_run(url)
        assert run.results == complete
        assert run.lineage == lineage
        assert run.url == f"{folder}/"
    assert read_notebook(f"{folder}/").url == f"{folder}/output.ipynb"


def test_missing_notebook_names_the_url(tmp_path: Path) -> None:
    with pytest.raises(NotebookNotFound, match=r"cannot read .*/nope/output.ipynb: .*no such file"):
        read_notebook(f"{tmp_path}/nope/")
    _write(tmp_path / "output.ipynb", _executed())
    with pytest.raises(NotebookNotFound, match=r"results.json"):
        read_run(str(tmp_path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("output.ipynb", "print('hi')\n", "is not JSON"),
        ("output.ipynb", "[]", "is JSON but not a Jupyter notebook"),
        ("results.json", "{", "not JSON"),
        ("results.json", "[1]", "not a JSON object"),
    ],
)
def test_unreadable_artifacts_name_the_url_and_the_cause(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    _write(tmp_path / "output.ipynb", _executed())
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / name).write_text(content)
    with pytest.raises(NotebookUnreadable, match=rf"cannot read {tmp_path}/{name}: .*{message}"):
        read_run(str(tmp_path))


@pytest.mark.parametrize("url", ["ftp://host/out.ipynb", "s3:///key", "-"])
def test_urls_that_name_no_run(url: str) -> None:
    with pytest.raises(NotebookUnreadable, match=rf"cannot read {url}: "):
        read_notebook(url)


def test_importing_it_loads_neither_nbformat_nor_boto3(tmp_path: Path) -> None:
    """Nor a kernel client: the pytest plugin imports nothing of kubemill.testing at first, but
    pytest loads it in every session, and test notebooks import kubemill.testing."""
    # In a fresh interpreter, outside the repository (whose operator/ would shadow the stdlib).
    heavy = ("nbformat", "boto3", "nbclient", "jupyter_client", "kubemill.runner.run")
    code = (
        "import sys, kubemill.testing, kubemill.pytest_plugin; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- failure messages --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (None, "out/: the run's status is 'Running', not Succeeded"),
        (
            {"reason": "CellTimeout", "message": "cell In [2] did not finish", "cell": 3},
            "out/: the run failed in cell 3: CellTimeout: cell In [2] did not finish",
        ),
        (
            {"reason": "KernelDied", "message": "the kernel died", "cellId": "c1"},
            "out/: the run failed in cell c1: KernelDied: the kernel died",
        ),
        (
            {"reason": "RunTimeout", "message": "no time left", "traceback": "\n  \n"},
            "out/: the run failed: RunTimeout: no time left",
        ),
        (
            {
                "reason": "CellError",
                "message": "cell In [1] raised ValueError: bad",
                "cell": 2,
                "cellId": "c0",
                "traceback": "\n".join(f"line {n}" for n in range(1, 21)) + "\n\nValueError: bad",
            },
            "out/: the run failed in cell 2 (id c0): CellError: cell In [1] raised ValueError: "
            "bad\nthe traceback ends:\n"
            + "".join(f"    line {n}\n" for n in range(14, 21))
            + "    ValueError: bad",
        ),
    ],
)
def test_failure_messages_name_the_cell_the_reason_and_the_tracebacks_end(
    failure: dict[str, Any] | None, expected: str
) -> None:
    assert failure_message("out/", "Running" if failure is None else "Failed", failure) == expected


# --- execute's arguments, checked before anything runs -----------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"notebook": "-"}, ValueError, "notebook='-': give a path or an s3:// or http"),
        ({"output": "out.ipynb"}, ValueError, "output='out.ipynb': execute writes a run folder"),
        ({"output": "-"}, ValueError, "output='-': execute writes a run folder"),
        ({"cell_timeout": -1}, ValueError, "cell_timeout=-1: give 0 or more seconds, or None"),
        ({"timeout": float("nan")}, ValueError, "timeout=nan: give 0 or more seconds, or None"),
        ({"start_timeout": None}, ValueError, r"start_timeout=None: give 0 or more seconds$"),
        ({"timeout": "10"}, ValueError, "timeout='10': give 0 or more seconds"),
        ({"cell_timeout": True}, ValueError, "cell_timeout=True: give 0 or more seconds"),
        ({"parameters": [("n", 1)]}, TypeError, "parameters must be a mapping .* not list"),
        (
            {"parameters": {"tags": {"a", "b"}}},
            TypeError,
            "parameter 'tags' has a value of type set, which cannot be passed to a notebook; "
            "use null, booleans, numbers, strings, lists or mappings",
        ),
        (
            {"env": {"X": "1"}},
            ValueError,
            r"env= sets the runner's and the kernel's environment.*pass subprocess=True",
        ),
    ],
)
def test_wrong_arguments_fail_before_anything_runs(
    tmp_path: Path, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments = {"notebook": str(NOTEBOOKS / "params.ipynb"), **arguments}
    arguments.setdefault("output", tmp_path / "out")
    with pytest.raises(error, match=message):
        execute(**arguments)
    assert list(tmp_path.iterdir()) == [], "nothing may be written for wrong arguments"


def test_execute_in_a_running_event_loop_says_how_to_call_it(tmp_path: Path) -> None:
    async def from_async_code() -> None:
        execute(NOTEBOOKS / "params.ipynb", output=tmp_path / "out")

    with pytest.raises(RuntimeError, match=r"await asyncio\.to_thread\(execute, \.\.\.\)"):
        asyncio.run(from_async_code())


def _request(
    tmp_path: Path, parameters: Any = None, notebook: str = "in.ipynb", **options: Any
) -> Any:
    """What execute asks of the runner, with execute's own defaults for what is not given."""
    checked = inspect.signature(testing._make_request).parameters
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(execute).parameters.items()
        if name in checked and checked[name].kind is inspect.Parameter.KEYWORD_ONLY
    }
    return testing._make_request(
        notebook, parameters, **{**defaults, "output": tmp_path / "out", **options}
    )


def _cli_options(tmp_path: Path, request: Any) -> tuple[Any, Any]:
    """What `kubemill run` makes of the command line a subprocess run would get."""
    parameters_file = None
    if request.parameters:
        parameters_file = tmp_path / "parameters.json"
        parameters_file.write_text(testing._parameters_json(request), encoding="utf-8")
    argv = testing._command(
        request, str(parameters_file) if parameters_file else None, str(tmp_path / "s.json")
    )
    args = build_parser(argv).parse_args(argv)
    return run_options(args, {}), args


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"cell_timeout": 0, "timeout": 0},
        {
            "kernel": "python3",
            "cwd": "/data",
            "start_timeout": 5,
            "cell_timeout": 1.5,
            "timeout": 1 / 3,
            "allow_errors": True,
            "allow_unknown_parameters": True,
            "s3_endpoint_url": "http://127.0.0.1:9000",
        },
    ],
)
def test_in_process_and_subprocess_runs_get_the_same_options(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    parameters = {
        "n": 5,
        "when": datetime.date(2027, 3, 1),
        "items": (1, "é", None),
        "nested": {"a": [True, 2.5]},
        "text": "-p x",
    }
    request = _request(tmp_path, parameters, **options)
    from_cli, args = _cli_options(tmp_path, request)
    # Only the signal handlers differ: an in-process run leaves the test process's alone.
    assert dataclasses.replace(from_cli, handle_signals=False) == testing._run_options(request)
    assert args.s3_endpoint_url == options.get("s3_endpoint_url")
    assert testing._run_options(request).parameters == {
        "n": 5,
        "when": "2027-03-01",
        "items": [1, "é", None],
        "nested": {"a": [True, 2.5]},
        "text": "-p x",
    }


def test_executes_defaults_are_kubemill_runs(tmp_path: Path) -> None:
    """Without options the two agree, so execute's defaults are the command's: a drift in
    either (a new start timeout, a cell timeout by default) fails here."""
    request = _request(tmp_path)
    argv = ["run", "in.ipynb", f"{tmp_path}/out/"]
    plain = run_options(build_parser(argv).parse_args(argv), {})
    assert dataclasses.replace(plain, handle_signals=False) == testing._run_options(request)


def test_a_notebook_named_like_an_option_stays_the_notebook(tmp_path: Path) -> None:
    request = _request(tmp_path, notebook="--help.ipynb", output=tmp_path / "-out")
    from_cli, _ = _cli_options(tmp_path, request)
    assert (from_cli.input, from_cli.output) == ("--help.ipynb", f"{tmp_path}/-out/")


@pytest.mark.parametrize(
    ("notebook", "stem"),
    [
        ("reports/daily.ipynb", "daily"),
        ("s3://bucket/nb/check run.ipynb", "check_run"),
        ("https://host/nb/étl.ipynb?version=3", "_tl"),
        ("https://host/", "host"),
        ("..ipynb", "notebook"),
    ],
)
def test_run_folders_are_named_after_the_notebook(notebook: str, stem: str) -> None:
    assert notebook_stem(notebook) == stem
