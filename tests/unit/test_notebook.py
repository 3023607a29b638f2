"""Notebook documents: parsing any nbformat, banners, results, redacted serialization."""

from __future__ import annotations

import json
import re

import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kubemill.runner.errors import BadInputError
from kubemill.runner.notebook import (
    BANNER_TAG,
    collect_results,
    parse_notebook,
    remove_banners,
    serialize,
    status_banner,
)
from kubemill.runner.redact import Redactor


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "is not UTF-8 text"),
        (b"import os\n", "is not JSON (line 1, column 1"),
        (b"[1, 2]", "not a Jupyter notebook"),
        (b'{"nbformat": 9, "cells": []}', "has nbformat 9"),
        (b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": {}}', "is not a list"),
        (
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"source": "x"}]}',
            "cell 0 has no valid cell_type",
        ),
    ],
)
def test_what_is_not_a_notebook_is_named(data: bytes, message: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(message)):
        parse_notebook(data, "in.ipynb")


def test_v4_without_ids_gets_ids_and_joined_sources() -> None:
    raw = {
        "nbformat": 4,
        "nbformat_minor": 2,
        "metadata": {},
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": ["a = 1\n", "b = 2"], "outputs": []},
            {"cell_type": "code", "metadata": {}, "source": "c", "outputs": []},
        ],
    }
    nb, notes = parse_notebook(json.dumps(raw).encode(), "in.ipynb")
    assert notes == []
    assert nb.nbformat_minor == 5
    assert nb.cells[0].source == "a = 1\nb = 2"
    ids = [c.id for c in nb.cells]
    assert all(ids) and len(set(ids)) == 2


def test_duplicate_ids_are_repaired() -> None:
    nb = new_notebook(cells=[new_code_cell("a"), new_code_cell("b")])
    nb.cells[1].id = nb.cells[0].id
    parsed, _ = parse_notebook(json.dumps(nb).encode(), "x")
    assert parsed.cells[0].id != parsed.cells[1].id


def test_results_from_kubemill_and_scrapbook_last_wins() -> None:
    def display(mimetype: str, payload: dict[str, object]) -> object:
        return new_output("display_data", data={mimetype: payload})

    cell = new_code_cell("x")
    cell.outputs = [
        display("application/vnd.kubemill.record+json", {"name": "a", "value": 1}),
        display(
            "application/scrapbook.scrap.json+json",
            {"name": "b", "data": [1, 2], "encoder": "json", "version": 1},
        ),
        new_output("stream", name="stdout", text="noise"),
        display("application/vnd.kubemill.record+json", {"name": "a", "value": {"v": 2}}),
    ]
    nb = new_notebook(cells=[new_markdown_cell("m"), cell])
    assert collect_results(nb) == {"a": {"v": 2}, "b": [1, 2]}


def test_banners_from_earlier_runs_are_removed() -> None:
    old_papermill = new_markdown_cell("<span>error</span>")
    old_papermill.metadata["tags"] = ["papermill-error-cell-tag"]
    banner = status_banner("t", "b", link_to_cell=True, color="red")
    assert banner.metadata.tags == [BANNER_TAG]
    nb = new_notebook(cells=[banner, old_papermill, new_code_cell("keep")])
    remove_banners(nb)
    assert [c.source for c in nb.cells] == ["keep"]


def test_serialize_redacts_content_but_never_structure() -> None:
    nb = new_notebook(cells=[new_code_cell("print(token)")])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    nb.metadata["kubemill"] = {"results": {"hunter2o": 1}}
    nb.cells[0].outputs = [
        new_output("stream", name="stdout", text="token=hunt"),
        new_output("stream", name="stdout", text="er2o\n"),
        new_output("error", ename="ValueError", evalue="'hunter2o'", traceback=["hunter2o"]),
    ]
    doc = json.loads(serialize(nb, Redactor(["hunter2o", "o"])))
    assert doc["cells"][0]["cell_type"] == "code"  # the one-letter secret left structure alone
    assert doc["metadata"]["kernelspec"]["name"] == "python3"
    # pieces joined, then masked; the one-letter secret masks content too, as asked
    assert doc["cells"][0]["outputs"][0]["text"] == "t***ken=***\n"
    assert doc["cells"][0]["outputs"][1]["traceback"] == ["***"]
    assert doc["metadata"]["kubemill"]["results"] == {"***": 1}
    assert "hunter2o" not in json.dumps(doc)


def test_escaped_spellings_of_a_secret_are_masked() -> None:
    secret = 'quo"te\\back\u00df'
    redactor = Redactor([secret])
    assert redactor.text(repr(secret)) == "'***'"
    assert redactor.text(json.dumps(secret)) == '"***"'
    assert redactor.text(json.dumps(secret, ensure_ascii=False)) == '"***"'


def test_redactor_masks_the_longest_secret_first() -> None:
    assert Redactor(["abc", "abcdef", ""]).text("x abcdef abc") == "x *** ***"
    assert not Redactor([""])
