"""The command line: parsing, the merge order of parameter sources, errors to exit codes."""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubemill.cli import build_parser, main
from kubemill.cli.parameters import merge_parameters
from kubemill.runner.contract import ExitCode
from kubemill.runner.errors import BadInputError


def _sources(argv: list[str]) -> dict[str, object]:
    args = build_parser().parse_args(["run", "in.ipynb", "out.ipynb", *argv])
    return merge_parameters(args.param_sources or [])


def test_sources_merge_in_papermills_order_whatever_the_command_line_order(
    tmp_path: Path,
) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("a: file\nb: file\nc: file\nd: file\ne: file\n")
    b64 = base64.b64encode(b"a: b64\nb: b64\nc: b64\nd: b64\ne: b64\nf: b64\n").decode()
    merged = _sources(
        [
            "-r", "e", "raw",
            "-p", "d", "1",
            "--parameters-json", '{"c": "json", "d": "json", "e": "json"}',
            "-y", "b: yaml\nc: yaml",
            "-f", str(params),
            "-b", b64,
        ]
    )  # fmt: skip
    assert merged == {"a": "file", "b": "yaml", "c": "json", "d": 1, "e": "raw", "f": "b64"}


def test_within_one_kind_the_last_value_wins() -> None:
    assert _sources(["-p", "a", "1", "-p", "a", "2"]) == {"a": 2}


def test_missing_parameters_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot read parameters file"):
        _sources(["-f", str(tmp_path / "nope.yaml")])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "in.ipynb"], "the following arguments are required: output"),
        (["run", "a", "b", "--cell-timeout", "-1"], "must be 0 or more seconds"),
        (["run", "a", "b", "--log-format", "xml"], "invalid choice: 'xml'"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv, environ={})
    assert caught.value.code == ExitCode.BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and err.endswith("-h)")


def test_the_readme_documents_every_exit_code_as_it_is() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (\w+) \|", readme, flags=re.MULTILINE)
    assert {int(code): reason for code, reason in rows} == {
        int(code): code.reason for code in ExitCode
    }


def test_bad_input_before_the_run_still_writes_a_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    code = main(
        ["run", "in.ipynb", "out.ipynb", "--secret-param", "nope"],
        environ={"KUBEMILL_TERMINATION_MESSAGE_PATH": str(summary)},
    )
    assert code == 2
    assert '"reason":"BadInput"' in summary.read_text()


def test_help_and_record_import_nothing_heavy() -> None:
    probe = (
        "import sys, kubemill, kubemill.cli.run, kubemill.cli.notebook;"
        "heavy = {'nbclient', 'boto3', 'botocore', 'nbformat', 'jupyter_client', 'yaml'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- parameters from JSON files, whole or in parts (how the operator passes them) -------------

#: Every printable ASCII character, and what Kubernetes would expand in args or env.
TRICKY = "".join(chr(c) for c in range(32, 127)) + " $(HOME) $$ $ \\ \" ' \n\t é 😀 ∑"


def _write_parts(tmp_path: Path, text: str, cuts: list[int]) -> list[str]:
    data = text.encode()
    bounds = [0, *cuts, len(data)]
    paths = []
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        path = tmp_path / f"parameters-{index}.json"
        path.write_bytes(data[start:end])
        paths.append(str(path))
    return paths


def test_a_json_file_round_trips_every_value_exactly(tmp_path: Path) -> None:
    values = {"s": TRICKY, "n": 2**70, "f": 0.1, "l": [None, True, {"k": TRICKY}]}
    paths = _write_parts(tmp_path, json.dumps(values, ensure_ascii=False), [])
    assert _sources(["--parameters-json-file", *paths]) == values


@pytest.mark.parametrize("cut", [1, 5, 40, 97, 98, 99, 100, 101])
def test_parts_are_joined_in_order_even_inside_a_multibyte_character(
    tmp_path: Path, cut: int
) -> None:
    values = {"s": TRICKY * 2}
    text = json.dumps(values, ensure_ascii=False)
    data = text.encode()
    # Three parts, the second cut anywhere: a cut through a character must still join.
    multibyte = data.index("😀".encode()) + 2
    paths = _write_parts(tmp_path, text, sorted({cut, multibyte}))
    assert len(paths) == 3
    assert _sources(["--parameters-json-file", *paths]) == values


def test_a_missing_part_is_an_error_never_a_partial_parameter_set(tmp_path: Path) -> None:
    # Dropping the middle part of this text leaves valid JSON ({"a": "xx", "b": 2}): only
    # checking that every named part is there keeps a partial set from running.
    paths = _write_parts(tmp_path, '{"a": "xx", "c": "yy", "b": 2}', [9, 20])
    assert json.loads(Path(paths[0]).read_text() + Path(paths[2]).read_text()) == {
        "a": "xx", "b": 2
    }  # fmt: skip
    Path(paths[1]).unlink()
    with pytest.raises(BadInputError, match=r"parameters-1\.json \(part 2 of 3\): No such file"):
        _sources(["--parameters-json-file", *paths])


def test_an_empty_part_is_an_error(tmp_path: Path) -> None:
    paths = _write_parts(tmp_path, '{"a": 1}', [4])
    Path(paths[1]).write_bytes(b"")
    with pytest.raises(BadInputError, match=r"\(part 2 of 2\) is empty"):
        _sources(["--parameters-json-file", *paths])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (b'"b": ]', r"parameters-1\.json \(part 2 of 3\) is not valid JSON"),
        (b'"b": \xff', r"parameters-1\.json \(part 2 of 3\) is not UTF-8"),
    ],
)
def test_a_corrupt_part_is_named(tmp_path: Path, damage: bytes, message: str) -> None:
    paths = _write_parts(tmp_path, '{"a": "xxxx", "b": "yyyy", "c": 3}', [12, 24])
    Path(paths[1]).write_bytes(damage)
    with pytest.raises(BadInputError, match=message):
        _sources(["--parameters-json-file", *paths])


def test_a_json_file_that_is_not_an_object_is_bad_input(tmp_path: Path) -> None:
    paths = _write_parts(tmp_path, "[1, 2]", [])
    with pytest.raises(BadInputError, match="must be a mapping"):
        _sources(["--parameters-json-file", *paths])


def test_a_json_file_merges_next_to_a_yaml_file(tmp_path: Path) -> None:
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("a: yaml\nb: yaml\n")
    paths = _write_parts(tmp_path, '{"b": "json-file", "c": "json-file"}', [])
    merged = _sources(
        ["-y", "c: yaml-text", "--parameters-json-file", *paths, "-f", str(yaml_file)]
    )
    assert merged == {"a": "yaml", "b": "json-file", "c": "yaml-text"}


def test_a_json_file_is_read_as_json_where_a_yaml_file_would_change_it(tmp_path: Path) -> None:
    # -f is papermill's YAML 1.1 file: JSON's exponent floats and escaped astral characters
    # do not survive it; --parameters-json-file reads JSON.
    text = json.dumps({"big": 1e20, "face": "😀"})  # ensure_ascii: "\ud83d\ude00"
    paths = _write_parts(tmp_path, text, [])
    assert _sources(["-f", paths[0]]) != {"big": 1e20, "face": "😀"}
    assert _sources(["--parameters-json-file", paths[0]]) == {"big": 1e20, "face": "😀"}


def test_inspect_lists_what_a_broken_parameters_cell_declares_and_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import nbformat

    cell = nbformat.v4.new_code_cell(
        'alpha: float = 0.1  # learning rate\nbeta = = 2\nregion: str = "eu"'
    )
    cell.metadata["tags"] = ["parameters"]
    path = tmp_path / "broken.ipynb"
    path.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[cell])))

    assert main(["inspect", str(path)], environ={}) == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "alpha", "region"]
    assert err == (
        "kubemill inspect: warning: line 2 of the parameters cell could not be read "
        "(invalid syntax): 'beta = = 2'\n"
    )
    assert main(["inspect", str(path), "--json"], environ={}) == 0
    out, err = capsys.readouterr()
    assert [p["name"] for p in json.loads(out)] == ["alpha", "region"]  # stdout stays JSON
    assert "line 2" in err
