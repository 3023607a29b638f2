"""The re-run form without a server: how a typed value is read, what the form is prefilled
with, and that the manifest it builds is a NotebookRun the CRD's schema accepts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kubemill.runner.parameters import check_type
from kubemill.viewer.rerun import (
    RerunSource,
    ValueProblem,
    build_form,
    build_manifest,
    form_html,
    form_json,
    form_text,
    manifest_yaml,
    parse_value,
    read_source,
)

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "kubemill.dev_notebookruns.yaml"

PARAMETERS_CELL = """\
alpha: float = 0.1  # learning rate
region: str = "eu"  # which region
n: int = 3
flags: list[str] = []
config: dict = {}
ok: bool = True
maybe: Optional[int] = None
mode: Literal["fast", "full"] = "fast"
when: pd.Timestamp = None
anything = None  # untyped
"""


def notebook(run: dict[str, Any] | None = None, cell: str | None = PARAMETERS_CELL) -> bytes:
    cells: list[dict[str, Any]] = [
        {"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# a report"}
    ]
    if cell is not None:
        cells.append(
            {
                "cell_type": "code",
                "id": "p",
                "metadata": {"tags": ["parameters"]},
                "source": cell,
                "outputs": [],
                "execution_count": 1,
            }
        )
    return json.dumps(
        {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {"kubemill": run or {}},
            "cells": cells,
        }
    ).encode()


RUN = {
    "status": "Succeeded",
    "input": {"uri": "s3://notebooks/reports/daily.ipynb", "sha256": "ab" * 32},
    "output": "s3://results/runs/team-a/daily-2026-11-27/output.ipynb",
    "identity": {"run": "daily-2026-11-27", "namespace": "team-a"},
    "parameters": {"alpha": 0.5, "region": "3", "flags": ["a", "b"], "anything": "x"},
    "secretParameters": {"token": {"fromEnv": "TOKEN"}},
}


# --- values ---------------------------------------------------------------------------------

VALUES: list[tuple[str, str | None, Any]] = [
    ("3", "int", 3),
    ("3", "float", 3),
    ("0.25", "float", 0.25),
    ("1e3", "float", 1000.0),
    ("3", "str", "3"),
    ("eu", "str", "eu"),
    ('"quoted"', "str", "quoted"),
    ("true", "bool", True),
    ("True", "bool", True),
    ("False", "bool", False),
    ("True", "str", "True"),
    ('["a", "b"]', "list[str]", ["a", "b"]),
    ("[1, 2]", "list", [1, 2]),
    ('{"a": 1}', "dict", {"a": 1}),
    ('{"a": 1}', "dict[str, int]", {"a": 1}),
    ("7", "Optional[int]", 7),
    ("7", "int | None", 7),
    ("full", 'Literal["fast", "full"]', "full"),
    ("2026-11-27", "pd.Timestamp", "2026-11-27"),  # not checkable: taken as written
    # Untyped: JSON, then papermill's -p inference, then the text.
    ("3", None, 3),
    ("0.5", None, 0.5),
    ("True", None, True),
    ("eu", None, "eu"),
    ('"3"', None, "3"),
    ("[1, 2]", None, [1, 2]),
    ("<script>alert(1)</script>", None, "<script>alert(1)</script>"),
]


@pytest.mark.parametrize(("text", "annotation", "expected"), VALUES)
def test_a_typed_value_is_read_as_its_type(
    text: str, annotation: str | None, expected: Any
) -> None:
    value = parse_value(text, annotation)
    assert value == expected
    assert type(value) is type(expected)
    if annotation is not None and annotation != "pd.Timestamp":
        assert check_type(annotation, value) is True  # what the runner will check


BAD: list[tuple[str, str, str]] = [
    ("abc", "int", "'abc' is not of the declared type int"),
    ("2.5", "int", "is not of the declared type int"),
    ("yes", "bool", "is not of the declared type bool"),
    ("a, b", "list[str]", 'write it as JSON, such as ["a", "b"]'),
    ("[1, 2]", "list[str]", "is not of the declared type list[str]"),
    ("slow", 'Literal["fast", "full"]', "is not of the declared type"),
    ("NaN", "float", "is not of the declared type float"),
    ("Infinity", "float", "is not of the declared type float"),
    ("1e400", "float", "is not of the declared type float"),
    # The API server drops nulls that are a mapping's values: the run would not get them.
    ("null", "Optional[int]", "null cannot be set in a NotebookRun"),
    ("None", None, "null cannot be set in a NotebookRun"),
    ('{"a": null}', "dict", 'the null at ["a"] would be dropped'),
    ('[1, {"b": {"c": null}}]', "list", 'the null at [1]["b"]["c"] would be dropped'),
]


@pytest.mark.parametrize(("text", "annotation", "message"), BAD)
def test_a_value_that_does_not_fit_its_type_is_named(
    text: str, annotation: str, message: str
) -> None:
    with pytest.raises(ValueProblem, match=re.escape(message)):
        parse_value(text, annotation)


@pytest.mark.parametrize(
    ("value", "annotation"),
    [
        ("3", "str"),
        ("3", None),
        ("eu", "str"),
        ("", "str"),
        ("True", None),
        ("null", None),
        (3, "int"),
        (0.5, "float"),
        (True, "bool"),
        (["a"], "list[str]"),
        ({"k": [1, None, {"x": 0}]}, "dict"),
        ("line one\nline two", "str"),
    ],
)
def test_a_runs_value_shown_in_its_field_reads_back_as_the_same_value(
    value: Any, annotation: str | None
) -> None:
    text = form_text(value, annotation)
    back = parse_value(text, annotation)
    assert back == value and type(back) is type(value)


# --- the source -------------------------------------------------------------------------------


def test_the_source_is_what_the_run_recorded_and_the_cell_declares() -> None:
    source = read_source(notebook(RUN))
    assert source.notebook == "s3://notebooks/reports/daily.ipynb"
    assert (source.namespace, source.run) == ("team-a", "daily-2026-11-27")
    assert source.output_prefix == "s3://results/runs/"
    assert source.secret_names == ("token",)
    assert [d.name for d in source.declared][:3] == ["alpha", "region", "n"]
    assert source.declared[0].type == "float" and source.declared[0].help == "learning rate"


def test_values_from_upstream_runs_are_named_in_a_note() -> None:
    upstream = [{"name": "extract", "namespace": "team-a", "parameters": ["region"]}]
    source = read_source(notebook({**RUN, "upstream": upstream}))
    assert source.from_runs == (("region", "extract"),)
    form = build_form(source, None, notebook_name="x", suffix="abcde")
    assert any("region (from run extract)" in n and "notebookRunRef" in n for n in form.notes)


def test_an_output_outside_the_operators_layout_gives_no_output_prefix() -> None:
    source = read_source(notebook({**RUN, "output": "s3://results/elsewhere/out.ipynb"}))
    assert source.output_prefix is None


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"nbformat": 4}', b"\xff\xfe"])
def test_what_is_not_a_notebook_is_a_value_problem(data: bytes) -> None:
    with pytest.raises(ValueProblem):
        read_source(data)


# --- the form and its manifest ----------------------------------------------------------------


def crd_schema() -> dict[str, Any]:
    document = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in document["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def assert_valid(manifest: dict[str, Any]) -> None:
    """Valid against the CRD's structural schema, and against the rules it writes in CEL that
    the manifest's fields meet (checked with the same patterns)."""
    # Through YAML, as kubectl reads it.
    read = yaml.safe_load(manifest_yaml(manifest))
    assert read == manifest
    jsonschema.validate(read, crd_schema())
    spec = crd_schema()["properties"]["spec"]["properties"]
    for field in ("notebook", "output"):
        if field in read["spec"]:
            (rule,) = spec[field]["x-kubernetes-validations"]
            pattern = re.search(r"self\.matches\('(.*)'\)", rule["rule"])
            assert pattern is not None
            assert re.match(pattern.group(1).replace("\\\\", "\\"), read["spec"][field])


def test_the_prefilled_form_re_runs_the_same_notebook_with_the_same_parameters() -> None:
    source = read_source(notebook(RUN))
    form = build_form(source, None, notebook_name="output.ipynb", suffix="x7k2p")
    assert form.valid, form
    assert form.manifest == {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {
            "name": "daily-2026-11-27-x7k2p",
            "namespace": "team-a",
            "annotations": {
                "kubemill.dev/rerun-of": "s3://results/runs/team-a/daily-2026-11-27/output.ipynb"
            },
        },
        "spec": {
            "notebook": "s3://notebooks/reports/daily.ipynb",
            "output": "s3://results/runs/",
            "parameters": {"alpha": 0.5, "region": "3", "flags": ["a", "b"], "anything": "x"},
        },
    }
    assert_valid(form.manifest)
    shown = {f.name: f.text for f in form.fields}
    assert shown["region"] == "3" and shown["anything"] == "x" and shown["n"] == ""
    assert any("token" in note and "secretKeyRef" in note for note in form.notes)


def submitted(**values: str) -> dict[str, str]:
    base = {
        "name": "again-1",
        "namespace": "team-a",
        "notebook": "s3://notebooks/reports/daily.ipynb",
        "output": "",
        "image": "",
    }
    base.update({k.replace("__", "."): v for k, v in values.items()})
    return base


def test_edited_values_reach_the_manifest_with_their_types() -> None:
    source = read_source(notebook(RUN))
    query = submitted(p__alpha="0.9", p__n="12", p__flags='["x"]', p__ok="false",
                      p__region="", image="registry.example/runner:1")  # fmt: skip
    form = build_form(source, query, notebook_name="output.ipynb", suffix="abcde")
    assert form.manifest is not None, form
    spec = form.manifest["spec"]
    assert spec["parameters"] == {"alpha": 0.9, "n": 12, "flags": ["x"], "ok": False}
    assert spec["image"] == "registry.example/runner:1"
    assert "output" not in spec
    assert form.manifest["metadata"]["name"] == "again-1"
    assert_valid(form.manifest)


def test_each_wrong_value_is_named_and_there_is_no_manifest() -> None:
    source = read_source(notebook(RUN))
    query = submitted(p__n="many", p__flags="a, b", name="Bad_Name", notebook="/tmp/x.ipynb")
    form = build_form(source, query, notebook_name="output.ipynb", suffix="abcde")
    assert form.manifest is None
    answer = form_json(form)
    assert answer["yaml"] is None and not answer["valid"]
    assert set(answer["errors"]) == {"p.n", "p.flags", "name", "notebook"}
    assert "int" in answer["errors"]["p.n"]
    assert "s3://BUCKET/KEY" in answer["errors"]["notebook"]


def test_a_name_ending_in_a_dash_is_a_generate_name_for_kubectl_create() -> None:
    source = read_source(notebook(RUN))
    form = build_form(source, submitted(name="daily-"), notebook_name="x", suffix="abcde")
    assert form.manifest is not None
    assert form.manifest["metadata"]["generateName"] == "daily-"
    assert "name" not in form.manifest["metadata"]
    assert form_json(form)["command"] == "kubectl create -f run.yaml"
    assert_valid(form.manifest)


def test_a_local_notebook_must_be_given_a_url_the_cluster_reads() -> None:
    source = read_source(notebook({**RUN, "input": {"uri": "tests/notebooks/params.ipynb"}}))
    form = build_form(source, None, notebook_name="output.ipynb", suffix="abcde")
    assert form.manifest is None
    assert "this run read a notebook the cluster cannot" in form.errors["notebook"]


def test_a_typed_notebook_url_that_is_wrong_is_not_blamed_on_the_run() -> None:
    source = read_source(notebook(RUN))
    query = {**submitted(), "notebook": "ftp://elsewhere/x.ipynb"}
    form = build_form(source, query, notebook_name="output.ipynb", suffix="abcde")
    message = form.errors["notebook"]
    assert message.startswith("spec.notebook must be s3://BUCKET/KEY or an http(s):// URL")
    assert "this run" not in message


NULLS: list[tuple[str, Any, str]] = [
    ("maybe", None, "this run's value was null, which a NotebookRun cannot carry (the API "
     "server drops nulls), so this run cannot be reproduced exactly: leave the field empty for "
     "the notebook's default (None), or give another value"),
    ("config", {"a": None}, "this run's value cannot be reproduced exactly (the API server "
     'drops nulls from a NotebookRun): the null at ["a"] would be dropped'),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "message"), NULLS, ids=[n[0] for n in NULLS])
def test_a_run_whose_value_held_a_null_cannot_be_reproduced_exactly(
    name: str, value: Any, message: str
) -> None:
    source = read_source(notebook({**RUN, "parameters": {**RUN["parameters"], name: value}}))
    form = build_form(source, None, notebook_name="output.ipynb", suffix="abcde")
    (field,) = [f for f in form.fields if f.name == name]
    assert field.error is not None and field.error.startswith(message)
    assert form.manifest is None
    # A null typed by a person (another text than the run's) is theirs: the plain rule.
    typed = {**submitted(), f"p.{name}": "None" if value is None else '{"b": null}'}
    again = build_form(source, typed, notebook_name="output.ipynb", suffix="abcde")
    (field,) = [f for f in again.fields if f.name == name]
    assert field.error is not None and "this run" not in field.error


def test_a_notebook_without_a_parameters_cell_still_re_runs_with_its_values() -> None:
    source = read_source(notebook(RUN, cell=None))
    form = build_form(source, None, notebook_name="output.ipynb", suffix="abcde")
    assert form.manifest is not None
    assert form.manifest["spec"]["parameters"]["region"] == "3"
    assert "allowUnknownParameters" not in form.manifest["spec"]
    assert any("no cell tagged 'parameters'" in n for n in form.notes)


def test_a_value_for_a_name_the_notebook_no_longer_declares_allows_unknown_names() -> None:
    run = {**RUN, "parameters": {"old_name": 1}}
    form = build_form(read_source(notebook(run)), None, notebook_name="x", suffix="abcde")
    assert form.manifest is not None
    assert form.manifest["spec"]["allowUnknownParameters"] is True
    assert_valid(form.manifest)


def test_the_default_name_fits_63_characters() -> None:
    run = {**RUN, "identity": {"run": "r" * 80, "namespace": "n"}}
    form = build_form(read_source(notebook(run)), None, notebook_name="x", suffix="abcde")
    assert form.manifest is not None
    name = form.manifest["metadata"]["name"]
    assert len(name) <= 63 and name.endswith("-abcde")


#: Strings some YAML reader takes for another type: go-yaml (kubectl's, YAML 1.1) reads the
#: numbers and y/n that PyYAML leaves plain; NEL, LS and PS are line breaks to a YAML 1.1 reader.
TRICKY_STRINGS = [
    "3", "true", "null", "~", "", "2026-11-27", "n", "N", "y", "Y", "yes", "off", "on",
    "08540", "1e3", "1.5e3", "0o17", "0X1F", "0B1", "-.5", "+.5e3", ".inf", "-.Inf", ".NaN",
    "0x1F", "1_000", "190:20:30", "\x85", "a\x85b", "\u2028", "\u2029", "\ufeff", "\t", "é😀",
    "line\nnext", " padded ", "#not a comment", "- item", "key: value", "'", '"', "\\",
    "<<", "=", "!tag", "&anchor", "*alias", "%directive", "@", "`", "|", ">", "?", "[", "{",
]  # fmt: skip


def _scalars(node: yaml.Node) -> list[yaml.ScalarNode]:
    if isinstance(node, yaml.ScalarNode):
        return [node]
    if isinstance(node, yaml.MappingNode):
        return [s for key, value in node.value for s in (*_scalars(key), *_scalars(value))]
    return [s for item in node.value for s in _scalars(item)]


@pytest.mark.parametrize("text", TRICKY_STRINGS, ids=ascii)
def test_every_string_key_and_value_is_double_quoted(text: str) -> None:
    manifest = build_manifest(
        name="r",
        namespace="",
        notebook="s3://b/k.ipynb",
        parameters={"value": text, "in_list": [text], "in_dict": {text: text}},
    )
    out = manifest_yaml(manifest)
    # Unquoted (style None) is what let go-yaml read 08540 as a number: no reader's rules are
    # consulted here, every string is a double-quoted scalar.
    strings = [s for s in _scalars(yaml.compose(out)) if s.tag == "tag:yaml.org,2002:str"]
    assert len(strings) >= 12
    assert {s.style for s in strings} == {'"'}
    assert yaml.safe_load(out) == manifest
    assert "\x85" not in out and "\u2028" not in out  # escaped: \N, \L


def test_numbers_and_booleans_stay_plain_and_strings_one_line() -> None:
    manifest = build_manifest(
        name="r", namespace="", notebook="s3://b/k.ipynb",
        parameters={"n": 3, "on": True, "x": 0.5, "long": "word " * 100},
    )  # fmt: skip
    lines = [line.strip() for line in manifest_yaml(manifest).splitlines()]
    for line in ('"n": 3', '"on": true', '"x": 0.5', '"notebook": "s3://b/k.ipynb"'):
        assert line in lines
    assert f'"long": "{"word " * 100}"' in lines  # one line, not folded


def test_nulls_inside_lists_are_carried() -> None:
    assert parse_value("[1, null]", "list") == [1, None]


def test_parameter_values_are_escaped_in_the_page() -> None:
    run = {**RUN, "parameters": {"anything": "<script>alert(1)</script>"}}
    form = build_form(read_source(notebook(run)), None, notebook_name="x", suffix="abcde")
    page = form_html(form, action="/rerun/x", api="/api/rerun/x", notebook_link="/view/x",
                     notebook_path="x")  # fmt: skip
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_source_with_nothing_recorded_has_no_values() -> None:
    source = RerunSource(None, None, None, None, None, {}, (), (), False)
    form = build_form(source, None, notebook_name="my_report.ipynb", suffix="abcde")
    assert form.values["name"] == "my-report-abcde"
    assert form.fields == ()
