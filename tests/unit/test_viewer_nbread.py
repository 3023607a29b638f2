"""The one reader of a notebook's JSON that the renderer, the re-run form and the comparison
share: what it accepts, what it names as unreadable, and its lenient field readers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubemill.viewer.nbread import (
    NotebookUnreadable,
    load,
    mapping,
    run_metadata,
    string,
    tags,
    text,
)

BAD = [
    (b"\xff\xfe", "it is not UTF-8 text (byte 0)"),
    (b"import os\n", "it is not JSON (Expecting value"),
    (b"[" * 100_000, "it is not JSON"),
    (b"[1, 2]", "it has no 'nbformat' field"),
    (b'{"cells": []}', "it has no 'nbformat' field"),
    (b'{"nbformat": 5, "cells": []}', "it has nbformat 5; the viewer reads versions 1 to 4"),
    (b'{"nbformat": 4, "cells": {}}', "its 'cells' is not a list"),
    (b'{"nbformat": 4}', "its 'cells' is not a list"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m for _, m in BAD])
def test_what_is_not_a_notebook_is_named(data: bytes, message: str) -> None:
    with pytest.raises(NotebookUnreadable) as caught:
        load(data)
    assert message in str(caught.value)


def test_a_notebook_with_a_byte_order_mark_and_an_old_one_are_read() -> None:
    raw = load(b"\xef\xbb\xbf" + json.dumps({"nbformat": 4, "cells": [], "metadata": {}}).encode())
    assert raw["cells"] == []
    old = {
        "nbformat": 3, "nbformat_minor": 0, "metadata": {},
        "worksheets": [{"cells": [{"cell_type": "code", "input": "1 + 1", "outputs": [],
                                   "language": "python"}]}],
    }  # fmt: skip
    (cell,) = load(json.dumps(old).encode())["cells"]
    assert cell["source"] == "1 + 1"


FIELDS: list[tuple[Any, Any, str | None, str]] = [
    # value, mapping(value), string(value), text(value)
    ({"a": 1}, {"a": 1}, None, ""),
    ("x", {}, "x", "x"),
    ("", {}, None, ""),
    (["a\n", "b", 3], {}, None, "a\nb"),
    (None, {}, None, ""),
    (7, {}, None, ""),
]


@pytest.mark.parametrize(("value", "as_mapping", "as_string", "as_text"), FIELDS)
def test_fields_of_any_type_read_as_empty(
    value: Any, as_mapping: Any, as_string: str | None, as_text: str
) -> None:
    assert mapping(value) == as_mapping
    assert string(value) == as_string
    assert text(value) == as_text


def test_tags_and_run_metadata() -> None:
    assert tags({"metadata": {"tags": ["parameters", 3, None, "x"]}}) == {"parameters", "x"}
    assert tags({"metadata": {"tags": "parameters"}}) == frozenset()
    assert tags({"metadata": []}) == frozenset()
    assert run_metadata({"metadata": {"kubemill": {"status": "Failed"}}}) == {"status": "Failed"}
    assert run_metadata({"metadata": {"kubemill": []}}) == {}
    assert run_metadata({}) == {}
