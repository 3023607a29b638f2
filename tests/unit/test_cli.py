"""The command line: parsing, the merge order of parameter sources, errors to exit codes."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubemill.runner import cli
from kubemill.runner.contract import ExitCode
from kubemill.runner.errors import BadInputError


def _sources(argv: list[str]) -> dict[str, object]:
    args = cli.build_parser().parse_args(["run", "in.ipynb", "out.ipynb", *argv])
    return cli._parameters(args.param_sources or [])


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
        cli.main(argv, environ={})
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
    code = cli.main(
        ["run", "in.ipynb", "out.ipynb", "--secret-param", "nope"],
        environ={"KUBEMILL_TERMINATION_MESSAGE_PATH": str(summary)},
    )
    assert code == 2
    assert '"reason":"BadInput"' in summary.read_text()


def test_help_and_record_import_nothing_heavy() -> None:
    probe = (
        "import sys, kubemill, kubemill.runner.cli;"
        "heavy = {'nbclient', 'boto3', 'botocore', 'nbformat', 'jupyter_client', 'yaml'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
