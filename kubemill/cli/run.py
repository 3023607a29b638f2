"""`kubemill run`: execute a notebook with parameters and save the output.

Also home to what the runner's commands (run, inspect, results) share: the S3 client they read
and write with, and `runner_errors`, which turns the runner's errors into its documented exit
codes. Only the runner's light contract is imported here; nbclient, boto3 and the rest load when
a command runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kubemill.runner.contract import (
    ENV_RUN_IDENTITY,
    ENV_SECRET_PARAMS,
    ENV_TERMINATION_MESSAGE_PATH,
    ExitCode,
    build_summary,
    parse_secret_params,
)
from kubemill.runner.errors import BadInputError, RunnerError

from . import Handler, parameters

if TYPE_CHECKING:
    from kubemill.runner.run import RunOptions

__all__ = ["declare_run", "run_options", "runner_errors", "storage"]

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


def _merge_order() -> str:
    """The parameter options in the order they merge, by their shortest spellings."""
    flags = {option.kind: min(option.flags, key=len) for option in parameters.PARAMETER_OPTIONS}
    return ", ".join(flags[kind] for kind in parameters.MERGE_ORDER)


def runner_errors(command: Handler) -> Handler:
    """A runner error is one line, `kubemill: error: …`, and the exit code its kind documents; an
    interrupt is TERMINATED; anything else is an internal error (a bug), with --debug's
    traceback."""

    @functools.wraps(command)
    def guarded(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        try:
            return command(args, environ)
        except RunnerError as exc:
            if args.debug:
                import traceback

                traceback.print_exc()
            print(f"kubemill: error: {exc.message}", file=sys.stderr)
            return int(exc.exit_code)
        except KeyboardInterrupt:
            print("kubemill: interrupted", file=sys.stderr)
            return int(ExitCode.TERMINATED)
        except Exception as exc:
            if args.debug:
                import traceback

                traceback.print_exc()
            print(
                f"kubemill: internal error: {type(exc).__name__}: {exc} (run with --debug for "
                "the traceback, and please report it)",
                file=sys.stderr,
            )
            return int(ExitCode.INTERNAL)

    return guarded


def storage(args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """Where the runner's commands read and write: local files, HTTP(S), and S3 with
    --s3-endpoint-url or $AWS_ENDPOINT_URL."""
    from kubemill.runner.storage import storage_from_environ

    return storage_from_environ(environ, args.s3_endpoint_url)


def declare_run(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Execute NOTEBOOK with parameters and save the executed notebook to OUTPUT."
    )
    parser.epilog = (
        textwrap.fill(
            f"Parameter sources merge in papermill's order: {_merge_order()} (a later source "
            "replaces an earlier one's value for the same name; within one kind, command-line "
            "order). --secret-param values come from the environment.",
            width=79,
        )
        + "\n\nExit codes:\n"
        + EXIT_CODES_HELP
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.set_defaults(handler=runner_errors(cmd_run))
    parser.add_argument("notebook", help="input: a path, -, s3://BUCKET/KEY or http(s)://URL")
    parser.add_argument(
        "output",
        help="output: a path, -, or s3://…; ending in / it is a folder receiving output.ipynb, "
        "results.json and run.json",
    )
    params = parser.add_argument_group("parameters")
    parameters.declare(params)
    params.add_argument(
        "--secret-param",
        metavar="NAME=ENV_VAR",
        action="append",
        default=[],
        help="give parameter NAME the value of environment variable ENV_VAR without writing it "
        f"anywhere (also read from ${ENV_SECRET_PARAMS})",
    )
    params.add_argument(
        "--upstream-file",
        metavar="FILE",
        help="a JSON file naming the upstream runs this run takes values from, and the results "
        "to read from their results.json with their JSON type (the operator writes it for "
        "notebookRunRef parameters; see the README)",
    )
    params.add_argument(
        "--allow-unknown-parameters",
        action="store_true",
        help="inject names the notebook's parameters cell does not declare",
    )
    execution = parser.add_argument_group("execution")
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
    output = parser.add_argument_group("output")
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
    logs = parser.add_argument_group("logs and progress")
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
    compat = parser.add_argument_group(
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


# --- helpers ---------------------------------------------------------------------------------


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


# --- the command -----------------------------------------------------------------------------


def run_options(args: argparse.Namespace, environ: Mapping[str, str]) -> RunOptions:
    """The `RunOptions` a `kubemill run` command line means.

    Its own function so that `kubemill.testing.execute` can be checked against it: execute
    builds the options itself in-process and this command line as a subprocess, and a unit test
    holds the two to the same options.
    """
    from kubemill.runner.run import RunOptions

    if args.language and args.language.lower() != "python":
        raise BadInputError(f"--language {args.language}: kubemill runs Python notebooks only")
    if args.engine and args.engine != "nbclient":
        raise BadInputError(f"--engine {args.engine}: kubemill's only engine is nbclient")
    return RunOptions(
        input=args.notebook,
        output=args.output,
        parameters=parameters.merge_parameters(args.param_sources or []),
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
        upstream=parameters.read_upstream_file(args.upstream_file),
    )


def cmd_run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from kubemill.runner.progress import Reporter
    from kubemill.runner.run import run_notebook

    termination = _termination_path(args, environ)
    try:
        options = run_options(args, environ)
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
        options, storage(args, environ), reporter, environ=environ, identity=identity
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
