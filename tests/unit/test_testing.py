"""kubemill.testing over notebooks built here and the golden ones: no kernel, no S3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kubemill.runner.contract import RECORD_MIMETYPE, SCRAPBOOK_MIMETYPES
from kubemill.testing import (
    NotebookNotFound,
    NotebookUnreadable,
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
    with pytest.raises(AssertionError) as raised:
        nb.assert_succeeded()
    assert str(raised.value) == (
        f"{tmp_path / 'out.ipynb'}: the run failed in cell boom: CellError: "
        "cell In [2] raised KeyError: 'x'"
    )


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
    # In a fresh interpreter, outside the repository (whose operator/ would shadow the stdlib).
    code = (
        "import sys, kubemill.testing; "
        "print(sorted(m for m in ('nbformat', 'boto3', 'nbclient') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
