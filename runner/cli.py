"""`kubemill`: the command line (run, inspect, results).

Imports stay inside the commands, so `kubemill --help` does not pay for nbclient and boto3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from kubemill.runner import __version__
from kubemill.runner.contract import (
    ENV_RUN_IDENTITY,
    ENV_SECRET_PARAMS,
    ENV_TERMINATION_MESSAGE_PATH,
    ExitCode,
    build_summary,
    parse_secret_params,
)
from kubemill.runner.errors import BadInputError, RunnerError

__all__ = ["build_parser", "main"]

DEFAULT_TERMINATION_LOG = "/dev/termination-log"

EXIT_CODES_HELP = (
    "\n".join(f"  {int(code):>3}  {code.reason}" for code in ExitCode)
    + "\n\nSee the README for what each exit code means."
)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


class _OrderedParams(argparse.Action):
    """Collects -p, -r, -f, -y, -b and --parameters-json in one list, tagged by kind."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest) or [])
        items.append((self.const, values))
        setattr(namespace, self.dest, items)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line that says where to look, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(int(ExitCode.BAD_INPUT), f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kubemill",
        description="Run Jupyter notebooks as batch work (papermill-compatible).",
        epilog="NotebookSchedule commands: kubemill schedule preview, kubemill trigger, "
        "kubemill backfill (see kubemill schedule -h).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubemill {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run",
        help="execute a notebook with parameters and save the output",
        description="Execute NOTEBOOK with parameters and save the executed notebook to OUTPUT.",
        epilog="Parameter sources merge in papermill's order: -b, then -f, -y, --parameters-json, "
        "-p, -r (a later source replaces an earlier one's value for the same name; within one "
        "kind, command-line order). --secret-param values come from the environment."
        "\n\nExit codes:\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("notebook", help="input: a path, -, s3://BUCKET/KEY or http(s)://URL")
    run.add_argument(
        "output",
        help="output: a path, -, or s3://…; ending in / it is a folder receiving output.ipynb, "
        "results.json and run.json",
    )
    params = run.add_argument_group("parameters")
    params.add_argument(
        "-p",
        "--parameters",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_OrderedParams,
        const="p",
        dest="param_sources",
        help="a value typed like papermill: True/False/None, int, float, else string",
    )
    params.add_argument(
        "-r",
        "--parameters-raw",
        "--parameters_raw",
        nargs=2,
        metavar=("NAME", "VALUE"),
        action=_OrderedParams,
        const="r",
        dest="param_sources",
        help="a string, taken as is",
    )
    params.add_argument(
        "-f",
        "--parameters-file",
        "--parameters_file",
        metavar="FILE",
        action=_OrderedParams,
        const="f",
        dest="param_sources",
        help="a YAML (or JSON) file of name: value",
    )
    params.add_argument(
        "--parameters-json-file",
        nargs="+",
        metavar="FILE",
        action=_OrderedParams,
        const="J",
        dest="param_sources",
        help="a JSON object read from FILE; several FILEs are the parts of one JSON text, "
        "joined in the order given (how the operator passes parameters larger than one "
        "ConfigMap)",
    )
    params.add_argument(
        "-y",
        "--parameters-yaml",
        "--parameters_yaml",
        metavar="YAML",
        action=_OrderedParams,
        const="y",
        dest="param_sources",
        help="YAML text of name: value",
    )
    params.add_argument(
        "-b",
        "--parameters-base64",
        "--parameters_base64",
        metavar="B64",
        action=_OrderedParams,
        const="b",
        dest="param_sources",
        help="base64-encoded YAML of name: value",
    )
    params.add_argument(
        "--parameters-json",
        metavar="JSON",
        action=_OrderedParams,
        const="j",
        dest="param_sources",
        help="a JSON object of name: value",
    )
    params.add_argument(
        "--secret-param",
        metavar="NAME=ENV_VAR",
        action="append",
        default=[],
        help="give parameter NAME the value of environment variable ENV_VAR without writing it "
        f"anywhere (also read from ${ENV_SECRET_PARAMS})",
    )
    params.add_argument(
        "--allow-unknown-parameters",
        action="store_true",
        help="inject names the notebook's parameters cell does not declare",
    )
    execution = run.add_argument_group("execution")
    execution.add_argument("-k", "--kernel", help="kernel name (default: the notebook's)")
    execution.add_argument("--cwd", help="the kernel's working directory")
    execution.add_argument(
        "--start-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="time for the kernel to start (default 60)",
    )
    execution.add_argument(
        "--cell-timeout",
        "--execution-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        dest="cell_timeout",
        help="time limit per cell (default none)",
    )
    execution.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="time limit for the whole run, kernel start included (default none)",
    )
    execution.add_argument(
        "--allow-errors", action="store_true", help="keep executing after a cell raises"
    )
    output = run.add_argument_group("output")
    output.add_argument(
        "--checkpoint-interval",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="save the running notebook at most this often, 0 to save only at the end (default 10)",
    )
    output.add_argument("--html", action="store_true", help="also write a rendered HTML page")
    output.add_argument(
        "--s3-endpoint-url",
        metavar="URL",
        help="S3-compatible endpoint (default $AWS_ENDPOINT_URL, else AWS)",
    )
    output.add_argument(
        "--termination-message-path",
        metavar="PATH",
        help=f"where to write the JSON summary (default ${ENV_TERMINATION_MESSAGE_PATH}, "
        f"else {DEFAULT_TERMINATION_LOG} when it exists)",
    )
    logs = run.add_argument_group("logs and progress")
    logs.add_argument("--log-format", choices=("text", "json"), default="text")
    logs.add_argument(
        "--progress-bar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on a terminal)",
    )
    logs.add_argument(
        "--log-output",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stream the cells' stdout and stderr (default on)",
    )
    logs.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    logs.add_argument("--debug", action="store_true", help="show tracebacks of kubemill errors")
    compat = run.add_argument_group(
        "papermill compatibility",
        "accepted so papermill command lines keep working",
    )
    compat.add_argument(
        "--report-mode", action="store_true", help="hide the code cells' source in the output"
    )
    compat.add_argument(
        "--prepare-only",
        action="store_true",
        help="inject the parameters and save the notebook without executing it",
    )
    compat.add_argument("-l", "--language", help="must be python (the only language injected)")
    compat.add_argument("--engine", help="must be nbclient (the only engine)")
    compat.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="WARNING or above is the same as --quiet",
    )
    compat.add_argument(
        "--request-save-on-cell-execute",
        "--no-request-save-on-cell-execute",
        action="store_true",
        dest="ignored_save_flag",
        help="ignored: the output is saved by time, see --checkpoint-interval",
    )
    compat.add_argument(
        "--autosave-cell-every",
        type=int,
        metavar="SECONDS",
        dest="ignored_autosave",
        help="ignored: see --checkpoint-interval",
    )

    inspect = commands.add_parser(
        "inspect",
        help="list the parameters a notebook declares",
        description="List the parameters declared in NOTEBOOK's cell tagged 'parameters'.",
    )
    inspect.add_argument("notebook", help="a path, -, s3://… or http(s)://…")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.add_argument("--s3-endpoint-url", metavar="URL")
    inspect.add_argument("--debug", action="store_true")

    results = commands.add_parser(
        "results",
        help="print the results recorded by an executed notebook",
        description="Print what an executed notebook recorded with kubemill.record or "
        "scrapbook.glue. PATH may be a notebook or a run folder (ending in /).",
    )
    results.add_argument("path", metavar="PATH_OR_URL")
    results.add_argument("--json", action="store_true", help="print one JSON object")
    results.add_argument("--s3-endpoint-url", metavar="URL")
    results.add_argument("--debug", action="store_true")
    return parser


# --- helpers shared by the commands -----------------------------------------------------------


def _storage(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    from kubemill.runner.storage import Storage, make_s3_client

    endpoint = args.s3_endpoint_url or environ.get("AWS_ENDPOINT_URL")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    return Storage(lambda quick: make_s3_client(endpoint, region, quick=quick))


#: papermill's precedence (base64 < file < yaml < -p < -r), with JSON beside YAML and a JSON
#: file beside a YAML file, so a papermill command line means the same here.
MERGE_ORDER = "bfJyjpr"


def _read_parts(paths: Sequence[str]) -> list[bytes]:
    """The bytes of each part; a missing or empty part is an error naming it, so a parameter
    set never arrives partially (a middle part dropped from a JSON text can leave valid JSON)."""
    parts = []
    for number, path in enumerate(paths, 1):
        which = f"parameters file {path}" + (
            f" (part {number} of {len(paths)})" if len(paths) > 1 else ""
        )
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BadInputError(f"cannot read {which}: {exc.strerror}") from None
        if not data:
            raise BadInputError(f"{which} is empty")
        parts.append(data)
    return parts


def _parameters(sources: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    from kubemill.runner import parameters as p

    merged: dict[str, Any] = {}
    for kind, value in sorted(sources, key=lambda source: MERGE_ORDER.index(source[0])):
        if kind == "p":
            merged[value[0]] = p.infer_cli_value(value[1])
        elif kind == "r":
            merged[value[0]] = value[1]
        elif kind == "f":
            try:
                text = Path(value).read_text(encoding="utf-8")
            except OSError as exc:
                raise BadInputError(
                    f"cannot read parameters file {value}: {exc.strerror}"
                ) from None
            merged.update(p.load_yaml(text, f"parameters file {value}"))
        elif kind == "J":
            merged.update(p.load_json_parts(_read_parts(value), list(value)))
        elif kind == "y":
            merged.update(p.load_yaml(value, "-y/--parameters-yaml"))
        elif kind == "b":
            merged.update(p.load_yaml_base64(value, "-b/--parameters-base64"))
        elif kind == "j":
            merged.update(p.load_json(value, "--parameters-json"))
    return merged


def _secrets(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    try:
        secrets = parse_secret_params(environ.get(ENV_SECRET_PARAMS, ""))
        for item in args.secret_param:
            secrets.update(parse_secret_params(item))
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    return secrets


def _termination_path(args: argparse.Namespace, environ: Mapping[str, str]) -> str | None:
    if args.termination_message_path:
        return str(args.termination_message_path)
    if environ.get(ENV_TERMINATION_MESSAGE_PATH):
        return environ[ENV_TERMINATION_MESSAGE_PATH]
    return DEFAULT_TERMINATION_LOG if os.path.exists(DEFAULT_TERMINATION_LOG) else None


def _write_summary(path: str | None, summary: bytes) -> None:
    if not path:
        return
    try:
        with open(path, "wb") as handle:
            handle.write(summary)
    except OSError as exc:
        print(f"kubemill: warning: cannot write the summary to {path}: {exc}", file=sys.stderr)


# --- the commands -----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from kubemill.runner.progress import Reporter
    from kubemill.runner.run import RunOptions, run_notebook

    termination = _termination_path(args, environ)
    try:
        if args.language and args.language.lower() != "python":
            raise BadInputError(f"--language {args.language}: kubemill runs Python notebooks only")
        if args.engine and args.engine != "nbclient":
            raise BadInputError(f"--engine {args.engine}: kubemill's only engine is nbclient")
        options = RunOptions(
            input=args.notebook,
            output=args.output,
            parameters=_parameters(args.param_sources or []),
            secrets=_secrets(args, environ),
            allow_unknown_parameters=args.allow_unknown_parameters,
            kernel_name=args.kernel,
            cwd=args.cwd,
            start_timeout=args.start_timeout,
            cell_timeout=args.cell_timeout or None,
            run_timeout=args.timeout or None,
            allow_errors=args.allow_errors,
            checkpoint_interval=args.checkpoint_interval,
            html=args.html,
            report_mode=args.report_mode,
            prepare_only=args.prepare_only,
        )
    except RunnerError as exc:
        _write_summary(termination, _failure_summary(exc))
        raise
    reporter = Reporter(
        log_format=args.log_format,
        progress_bar=args.progress_bar,
        log_output=args.log_output,
        quiet=args.quiet or args.log_level in ("WARNING", "ERROR", "CRITICAL"),
        debug=args.debug,
        cell_output=sys.stderr if args.output == "-" else sys.stdout,
    )
    identity = {k: environ[v] for k, v in ENV_RUN_IDENTITY.items() if environ.get(v)}
    outcome = run_notebook(
        options, _storage(args, environ), reporter, environ=environ, identity=identity
    )
    _write_summary(termination, outcome.summary)
    if outcome.results:
        reporter.info("results: " + json.dumps(outcome.results, ensure_ascii=False)[:2000])
    return int(outcome.exit_code)


def _failure_summary(exc: RunnerError) -> bytes:
    return build_summary(
        exit_code=exc.exit_code,
        output_url=None,
        results={},
        failure=exc.details(),
        duration_seconds=None,
    )


def cmd_inspect(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from kubemill.runner.notebook import parse_notebook
    from kubemill.runner.parameters import PARAMETERS_TAG, declared_parameters, find_tagged_cell
    from kubemill.runner.storage import Location

    fetched = _storage(args, environ).read(Location.parse(args.notebook))
    nb, _ = parse_notebook(fetched.data, args.notebook)
    index = find_tagged_cell(nb, PARAMETERS_TAG)
    declared = declared_parameters(nb.cells[index].source) if index >= 0 else []
    if args.json:
        print(json.dumps([d.as_dict() for d in declared], indent=2, ensure_ascii=False))
        return 0
    if index < 0:
        print(f"{args.notebook} has no cell tagged 'parameters'.")
        return 0
    rows = [("NAME", "TYPE", "DEFAULT", "HELP")]
    rows += [(d.name, d.type or "-", d.default, d.help) for d in declared]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row[:3], widths, strict=True)), row[3])
    return 0


def cmd_results(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from kubemill.runner.notebook import collect_results, parse_notebook
    from kubemill.runner.storage import Location

    location = Location.parse(args.path)
    if location.is_folder:
        location = location.child("output.ipynb")
    fetched = _storage(args, environ).read(location)
    nb, _ = parse_notebook(fetched.data, location.uri)
    recorded = nb.metadata.get("kubemill", {}).get("results")
    results = recorded if isinstance(recorded, dict) else collect_results(nb)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return 0
    if not results:
        print(f"{location.uri} recorded no results.")
        return 0
    width = max(len(name) for name in results)
    for name, value in results.items():
        print(f"{name.ljust(width)}  {json.dumps(value, ensure_ascii=False)}")
    return 0


COMMANDS = {"run": cmd_run, "inspect": cmd_inspect, "results": cmd_results}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        return COMMANDS[args.command](args, env)
    except RunnerError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"kubemill: error: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("kubemill: interrupted", file=sys.stderr)
        return int(ExitCode.TERMINATED)
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(
            f"kubemill: internal error: {type(exc).__name__}: {exc} (run with --debug for the "
            "traceback, and please report it)",
            file=sys.stderr,
        )
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
