"""The `kubemill` command: one argparse tree, each command's module imported only when it runs.

`kubemill --help` lists every command from COMMANDS without importing any of them. A command
line names one command, and only that command's module is imported, to declare its options and
to run it: `kubemill run` never loads the Kubernetes client, `kubemill trigger` never loads
nbclient, and `kubemill --help` costs the interpreter's start-up and argparse, nothing more.

A new command (`workflow run`, `view`, `image check`) is one row in COMMANDS and a module in this
package whose declaring function adds the command's options and sets `handler`, the function
that runs it: `handler(args, environ) -> exit code`. Each group of commands turns its own errors
into messages and exit codes, so each keeps the wording its tests and users rely on.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, NoReturn

from kubemill.runner import __version__, early
from kubemill.runner.contract import ExitCode

__all__ = ["COMMANDS", "Command", "build_parser", "main"]


# NamedTuple rather than a dataclass: dataclasses imports inspect, a quarter of --help's time.
class Command(NamedTuple):
    """One command of `kubemill`, as `kubemill --help` lists it."""

    #: The word on the command line.
    name: str
    #: "module:function" in this package; the function declares the command's options.
    declare: str
    #: One line for `kubemill --help`.
    help: str
    #: How `kubemill --help` shows the command, when it has actions of its own.
    shown: str = ""


COMMANDS: tuple[Command, ...] = (
    Command("run", "run:declare_run", "execute a notebook with parameters and save the output"),
    Command("inspect", "notebook:declare_inspect", "list the parameters a notebook declares"),
    Command(
        "results", "notebook:declare_results", "print the results an executed notebook recorded"
    ),
    Command(
        "schedule",
        "schedule:declare_schedule",
        "print a cron schedule's next slots exactly as the operator fires them",
        shown="schedule preview",
    ),
    Command("trigger", "cluster:declare_trigger", "run a NotebookSchedule's template now"),
    Command(
        "backfill", "cluster:declare_backfill", "create a NotebookSchedule's runs of past slots"
    ),
    Command("retry", "cluster:declare_retry", "re-run a failed NotebookWorkflow's failed steps"),
    Command(
        "workflow",
        "workflow:declare_workflow",
        "run a NotebookWorkflow here (a laptop, CI), retry it, print its graph",
        shown="workflow run|retry|graph",
    ),
    Command("view", "view:declare_view", "serve a folder or S3 prefix of notebooks as web pages"),
    Command(
        "image",
        "image:declare_image",
        "check that an image has what kubemill needs to run notebooks",
        shown="image check",
    ),
)

#: What a command's handler is: parsed arguments and the environment in, an exit code out.
Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


class Parser(argparse.ArgumentParser):
    """Usage errors as one line that says where to look, not the whole usage block. Every
    command's parser is one of these (argparse gives subparsers their parent's class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(int(ExitCode.BAD_INPUT), f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def _chosen(argv: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is not an option (kubemill's own
    options, -h and --version, take no value)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _declare(command: Command, parser: argparse.ArgumentParser) -> None:
    module, function = command.declare.split(":")
    declare = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    declare(parser)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole tree; given a command line, the tree with only the named command's options
    declared, so only that command's module is imported (what `main` does)."""
    width = max(len(command.shown or command.name) for command in COMMANDS) + 2
    listing = "\n".join(
        f"{(command.shown or command.name):<{width}}{command.help}" for command in COMMANDS
    )
    parser = Parser(
        prog="kubemill",
        usage="%(prog)s [-h] [--version] COMMAND ...",
        description="Jupyter notebooks as batch work: run them here (papermill-compatible),\n"
        "or on Kubernetes as NotebookRuns and NotebookSchedules.",
        epilog="Run `kubemill COMMAND -h` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kubemill {__version__}")
    # The listing above is the help; argparse's own (one line per parser) cannot show
    # `schedule preview`.
    commands = parser.add_subparsers(
        prog="kubemill",
        dest="command",
        metavar="COMMAND",
        required=True,
        title="commands",
        description=listing,
        help=argparse.SUPPRESS,
    )
    chosen = None if argv is None else _chosen(argv)
    for command in COMMANDS:
        sub = commands.add_parser(command.name)
        if argv is None or command.name == chosen:
            _declare(command, sub)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if _chosen(args_list) == "run":
        # Before anything slow is imported: a container's PID 1 would drop a SIGTERM now.
        early.hold()
    args = build_parser(args_list).parse_args(args_list)
    handler: Handler = args.handler
    return handler(args, os.environ if environ is None else environ)
