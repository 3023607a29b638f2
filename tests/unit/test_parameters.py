"""Parameters: inference, translation round trips, declarations, validation, injection."""

from __future__ import annotations

import base64
import math
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kubemill.runner.errors import BadInputError
from kubemill.runner.parameters import (
    INJECTED_TAG,
    PARAMETERS_TAG,
    check_type,
    infer_cli_value,
    inject_parameters,
    json_safe,
    load_json,
    load_yaml,
    load_yaml_base64,
    normalize,
    read_parameters_cell,
    to_python,
    validate_parameters,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("True", True),
        ("False", False),
        ("None", None),
        ("12", 12),
        ("-3", -3),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        ("eu", "eu"),
        ("true", "true"),  # papermill only knows the Python spellings
        ("", ""),
        ("0x10", "0x10"),
    ],
)
def test_cli_values_are_inferred_like_papermill(text: str, expected: Any) -> None:
    value = infer_cli_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_nan_and_inf_are_inferred_as_floats() -> None:
    assert math.isnan(infer_cli_value("nan"))
    assert infer_cli_value("-inf") == -math.inf


ROUND_TRIP = [
    None,
    True,
    False,
    0,
    -(2**70),
    0.1,
    1e-300,
    -0.0,
    "",
    'it\'s "quoted"',
    "line one\nline two\r\n\ttabbed \\ backslash",
    "unicode: äöü ß 日本語 🚀 \u2028",
    [],
    [1, "two", None, [3.5, {"deep": [True]}]],
    {},
    {"a": 1, "b": {"c": [1, 2, {"d": None}]}, "with space": "x", "ключ": "значение"},
]


@pytest.mark.parametrize("value", ROUND_TRIP, ids=repr)
def test_values_round_trip_through_python_source(value: Any) -> None:
    restored = eval(to_python(value))
    assert restored == value
    assert type(restored) is type(value)
    assert repr(restored) == repr(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, [math.nan], {"x": math.inf}])
def test_non_finite_floats_round_trip(value: Any) -> None:
    assert repr(eval(to_python(value))) == repr(value)


def test_unsupported_value_type_is_rejected() -> None:
    with pytest.raises(BadInputError, match="cannot be passed"):
        to_python(object())


def test_yaml_dates_and_tuples_are_normalized_once() -> None:
    values = normalize(load_yaml("day: 2026-11-27\nat: 2026-11-27 06:00:00\n", "test"))
    assert values == {"day": "2026-11-27", "at": "2026-11-27T06:00:00"}
    assert normalize({"t": (1, (2,))}) == {"t": [1, [2]]}
    with pytest.raises(BadInputError, match="'s' has a value of type set"):
        normalize({"s": {1, 2}})


def test_json_safe_spells_non_finite_floats() -> None:
    assert json_safe({"a": [math.nan, math.inf, -math.inf, 1.5]}) == {
        "a": ["NaN", "Infinity", "-Infinity", 1.5]
    }


def test_tuple_and_nested_assignments_are_declared() -> None:
    source = "start, end = 1, 2\nif True:\n    limit = 10\ndef f():\n    hidden = 1\n"
    assert [d.name for d in read_parameters_cell(source).declared] == ["start", "end", "limit"]


def test_a_number_for_a_string_suggests_r() -> None:
    declared = read_parameters_cell("code: str = 'a'\n").declared
    with pytest.raises(BadInputError, match="pass -r code VALUE to give it as a string"):
        validate_parameters({"code": 7}, [], declared, allow_unknown=False)


@pytest.mark.parametrize(
    ("loader", "text", "message"),
    [
        (load_yaml, "a: [1, 2", "not valid YAML at line"),
        (load_yaml, "- 1\n- 2\n", "must be a mapping"),
        (load_json, "{'a': 1}", "not valid JSON at line 1"),
        (load_json, "[1]", "must be a mapping"),
        (load_yaml_base64, "@@@", "not base64"),
    ],
)
def test_unreadable_sources_say_what_is_wrong(loader: Any, text: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        loader(text, "the source")


def test_base64_yaml() -> None:
    encoded = base64.b64encode(b"alpha: 0.2\nname: x\n").decode()
    assert load_yaml_base64(encoded, "b") == {"alpha": 0.2, "name": "x"}


PARAMS_SOURCE = """\
alpha: float = 0.1  # learning rate
region: str = "eu"  # which region
n = 3
%matplotlib inline
tags: list[str] = []
mode: Literal["fast", "slow"] = "fast"
maybe: Optional[int] = None
either: int | str = 1
when: pd.Timestamp = None
"""


def test_declared_parameters_have_type_default_and_help() -> None:
    declared = {d.name: d for d in read_parameters_cell(PARAMS_SOURCE).declared}
    assert list(declared) == ["alpha", "region", "n", "tags", "mode", "maybe", "either", "when"]
    assert declared["alpha"].as_dict() == {
        "name": "alpha",
        "type": "float",
        "default": "0.1",
        "help": "learning rate",
    }
    assert declared["region"].default == '"eu"'
    assert declared["n"].type is None
    assert declared["n"].help == ""


@pytest.mark.parametrize(
    ("source", "names", "lines"),
    [
        # papermill's own example of a line it skips: two '=' on one line.
        ('a = 1\nb = 2 = 3 oops\nc = "x"', ["a", "c"], [2]),
        ("alpha = = 1", [], [1]),
        ("a = [1,\nb = 2", ["b"], [1]),  # an unclosed bracket costs its own line only
        ("x = {\n 'a': 1 2,\n}\ny = 2", ["x", "y"], [2]),  # inside brackets
        ("if True:\n    a = = 1\nb = 2", ["b"], [2]),  # inside a block, which keeps a body
        ("  a = 1\nb = 2", ["b"], [1]),
        ("files = !ls\nn = 1", ["n"], [1]),  # IPython syntax that Python cannot read
        ("a = 1\nb = = 2\nc = 3 3\nd = 4", ["a", "d"], [2, 3]),
        ("(((", [], [1]),
        ("a = 1\n%matplotlib inline\nb = 2", ["a", "b"], []),  # magics are not errors
        ("", [], []),
    ],
)
def test_unreadable_lines_are_named_and_the_rest_is_read(
    source: str, names: list[str], lines: list[int]
) -> None:
    cell = read_parameters_cell(source)
    assert [d.name for d in cell.declared] == names
    assert [u.line for u in cell.unreadable] == lines


def test_an_unreadable_line_keeps_the_help_of_its_neighbours() -> None:
    cell = read_parameters_cell('a: int = 1  # help\nb = = 2\nc: str = "x"  # the c')
    assert [d.as_dict() for d in cell.declared] == [
        {"name": "a", "type": "int", "default": "1", "help": "help"},
        {"name": "c", "type": "str", "default": '"x"', "help": "the c"},
    ]
    (line,) = cell.unreadable
    assert line.describe() == (
        "line 2 of the parameters cell could not be read (invalid syntax): 'b = = 2'"
    )


def test_names_read_around_an_unreadable_line_are_still_checked() -> None:
    cell = read_parameters_cell("alpha: float = 0.1\nbeta = = 2\nregion = 'eu'")
    validate_parameters({"alpha": 0.5, "region": "us"}, [], cell.declared, allow_unknown=False)
    with pytest.raises(BadInputError, match="'alpha' is declared as float"):
        validate_parameters({"alpha": "x"}, [], cell.declared, allow_unknown=False)
    # A name the cell may declare on the unreadable line: unknown, and the message says why.
    with pytest.raises(BadInputError, match=r"'beta'.*\(line 2 of its parameters cell could"):
        validate_parameters(
            {"beta": 1}, [], cell.declared, allow_unknown=False, unreadable=cell.unreadable
        )


@pytest.mark.parametrize(
    ("annotation", "value", "expected"),
    [
        ("int", 1, True),
        ("int", True, False),
        ("int", 1.5, False),
        ("float", 1, True),
        ("float", 0.5, True),
        ("float", "0.5", False),
        ("str", "x", True),
        ("str", 1, False),
        ("bool", False, True),
        ("bool", 0, False),
        ("list", [1], True),
        ("list[int]", [1, 2], True),
        ("list[int]", [1, "2"], False),
        ("List[str]", ["a"], True),
        ("dict", {"a": 1}, True),
        ("dict[str, float]", {"a": "x"}, False),
        ("Optional[int]", None, True),
        ("Optional[int]", "x", False),
        ("typing.Optional[int]", 3, True),
        ("int | None", None, True),
        ("int | str", "x", True),
        ("int | str", 1.5, False),
        ("Union[int, str]", [], False),
        ('Literal["fast", "slow"]', "fast", True),
        ('Literal["fast", "slow"]', "medium", False),
        ("Any", object, True),
        ("pd.Timestamp", "2026-01-01", None),
        ("'int'", 1, True),
        ("not valid(", 1, None),
    ],
)
def test_type_checks(annotation: str, value: Any, expected: bool | None) -> None:
    assert check_type(annotation, value) is expected


def test_validation_accepts_good_values() -> None:
    declared = read_parameters_cell(PARAMS_SOURCE).declared
    validate_parameters(
        {"alpha": 1, "region": "us", "mode": "slow", "when": "2026"},
        [],
        declared,
        allow_unknown=False,
    )


def test_validation_reports_every_problem_in_one_message() -> None:
    declared = read_parameters_cell(PARAMS_SOURCE).declared
    with pytest.raises(BadInputError) as caught:
        validate_parameters({"alpah": 0.2, "region": 5, "2x": 1}, [], declared, allow_unknown=False)
    message = caught.value.message
    assert "unknown parameter 'alpah' (did you mean 'alpha'?)" in message
    assert "--allow-unknown-parameters" in message
    assert "parameter 'region' is declared as str but got 5 (int)" in message
    assert "'2x' is not a Python identifier" in message
    assert "\n" not in message


def test_unknown_names_are_allowed_on_request_or_without_a_parameters_cell() -> None:
    declared = read_parameters_cell(PARAMS_SOURCE).declared
    validate_parameters({"extra": 1}, [], declared, allow_unknown=True)
    validate_parameters({"extra": 1}, [], None, allow_unknown=False)


def test_keywords_are_not_parameter_names() -> None:
    with pytest.raises(BadInputError, match="'class' is a Python keyword; rename it"):
        validate_parameters({"class": 1}, [], None, allow_unknown=True)


def test_secret_declared_with_a_non_string_type_is_rejected() -> None:
    declared = read_parameters_cell("token: int = 0\n").declared
    with pytest.raises(BadInputError, match="secrets are strings"):
        validate_parameters({}, ["token"], declared, allow_unknown=False)


def _notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return new_notebook(cells=list(cells))


def _tagged(source: str, tag: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["tags"] = [tag]
    return cell


def test_injected_cell_goes_right_after_the_parameters_cell() -> None:
    nb = _notebook(new_markdown_cell("title"), _tagged("a = 1", PARAMETERS_TAG), new_code_cell("b"))
    assert inject_parameters(nb, {"a": 2}, {})
    assert [c.source for c in nb.cells][:2] == ["title", "a = 1"]
    assert nb.cells[2].metadata.tags == [INJECTED_TAG]
    assert nb.cells[2].source == "# Parameters\na = 2\n"
    assert nb.cells[3].source == "b"


def test_an_earlier_injected_cell_is_replaced_in_place() -> None:
    nb = _notebook(
        _tagged("a = 1", PARAMETERS_TAG), _tagged("a = 5", INJECTED_TAG), new_code_cell("b")
    )
    inject_parameters(nb, {"a": 2}, {})
    assert len(nb.cells) == 3
    assert nb.cells[1].source == "# Parameters\na = 2\n"


def test_without_a_parameters_cell_the_injected_cell_goes_first() -> None:
    nb = _notebook(new_code_cell("print(a)"))
    assert not inject_parameters(nb, {"a": 2}, {})
    assert nb.cells[0].metadata.tags == [INJECTED_TAG]


def test_secrets_are_injected_as_environment_lookups_not_values() -> None:
    nb = _notebook(_tagged("token = ''", PARAMETERS_TAG))
    inject_parameters(nb, {}, {"token": "DB_TOKEN"})
    source = nb.cells[1].source
    assert "token = __import__('os').environ['DB_TOKEN']" in source


def test_a_large_list_or_mapping_is_injected_as_json_the_kernel_reads_fast() -> None:
    from kubemill.runner.parameters import LARGE_LITERAL, injected_source

    rows = [{"id": i, "name": f"row-{i}", "score": i / 7, "tags": ["a", None]} for i in range(5000)]
    odd = [float("nan"), *range(LARGE_LITERAL)]  # NaN has no JSON form: stays a literal
    source = injected_source({"rows": rows, "small": [1, 2], "odd": odd, "text": "x" * 200_000}, {})
    lines = source.splitlines()
    assert lines[1].startswith("rows = __import__('json').loads(")
    assert lines[2] == "small = [1, 2]"
    assert lines[3].startswith("odd = [float('nan'), 0, 1")
    assert lines[4].startswith("text = 'xxx")  # a string is read as fast either way
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    assert namespace["rows"] == rows and namespace["text"] == "x" * 200_000
    assert [type(v) for v in namespace["rows"][3].values()] == [int, str, float, list]
