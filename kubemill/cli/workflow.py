"""`kubemill workflow run|retry|graph`: a NotebookWorkflow on a laptop or in CI.

The decisions are the operator's own (kubemill/cli/localflow.py says how); this module carries
them out: each run is a `kubemill run` process, the command the runner pods run, given the
parameters and upstream file the operator would mount, and its summary becomes the run's
status. After every change the workflow and its runs are written to
`<output-dir>/<namespace>/<workflow>.workflow.json`, which `workflow retry` picks up.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.schema_rules import OUTPUT_PREFIX_PATTERN
from kubemill.operator.status import TERMINAL
from kubemill.operator.times import rfc3339

from .localflow import (
    Local,
    Start,
    advance,
    ended_status,
    ended_without_start,
    load_workflow,
    only,
    override,
    parameters_text,
    retry,
    run_folder,
    runner_args,
    started_status,
    stranded,
    upstream_text,
)
from .schedule import UsageError, positive, usage_errors
from .workflow_report import graph, junit_xml, redraw, step_label, summary_lines, table_lines

__all__ = ["declare_workflow", "state_path"]

#: Where run folders and the state file go unless --output-dir says otherwise.
DEFAULT_OUTPUT_DIR = "./kubemill-runs/"
#: The state file's name after the workflow's: `<workflow>.workflow.json`.
STATE_SUFFIX = ".workflow.json"
#: The exit code of a workflow that did not succeed (or a test that failed).
_FAILED = 1


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _secret(text: str) -> tuple[str, str]:
    name, equals, variable = text.partition("=")
    if not equals or not name or not variable:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=ENV_VAR")
    return name, variable


def _running_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parallel",
        type=positive,
        default=None,
        metavar="N",
        help="runs at once (default: the number of CPUs)",
    )
    parser.add_argument("-k", "--kernel", help="kernel for every run (default: each run's own)")
    parser.add_argument(
        "--cell-timeout", type=_seconds, help="limit per cell in seconds, for every run"
    )
    parser.add_argument(
        "--timeout", type=_seconds, help="limit per run in seconds (default: each run's timeout)"
    )
    parser.add_argument(
        "--secret-param",
        type=_secret,
        action="append",
        default=[],
        metavar="NAME=ENV_VAR",
        help="a parameter a run takes from a Secret (parametersFrom[].secretKeyRef) takes the "
        "value of ENV_VAR here instead; without it such a run fails",
    )
    parser.add_argument("--junit-xml", metavar="FILE", help="write a JUnit XML report to FILE")


def declare_workflow(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a NotebookWorkflow manifest here, with the operator's rules: on a laptop, or in CI."
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="run a NotebookWorkflow manifest here",
        description="Run a NotebookWorkflow manifest here: each step's run is a `kubemill run` "
        "process, started when the operator would start its NotebookRun.",
    )
    run.add_argument("manifest", help="a YAML file holding one NotebookWorkflow ('-': stdin)")
    run.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        metavar="DIR",
        help="run folders go to DIR/NAMESPACE/RUN/, and the state file to "
        f"DIR/NAMESPACE/WORKFLOW{STATE_SUFFIX} (default {DEFAULT_OUTPUT_DIR})",
    )
    run.add_argument(
        "--output",
        metavar="S3_PREFIX",
        help="run folders go to S3_PREFIX/NAMESPACE/RUN/ instead (the state file stays in "
        "--output-dir)",
    )
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("STEP.NAME", "VALUE"),
        help="set a step's parameter, typed as `kubemill run -p` types it",
    )
    run.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="STEP",
        help="run this step and the steps it needs, reusing the runs of needed steps that "
        "succeeded in an earlier run in the same output folder (repeatable)",
    )
    _running_options(run)
    run.set_defaults(handler=usage_errors(cmd_run))

    again = actions.add_parser(
        "retry",
        help="re-run a local workflow's failed and skipped steps",
        description="Re-run the failed and skipped steps (and the finally steps) of a workflow "
        "run here, reusing the outputs of the steps that succeeded.",
    )
    again.add_argument(
        "state", metavar="DIR_OR_STATE_FILE", help=f"a *{STATE_SUFFIX} file, or the folder of one"
    )
    _running_options(again)
    again.set_defaults(handler=usage_errors(cmd_retry))

    shown = actions.add_parser(
        "graph",
        help="print a NotebookWorkflow's steps and what each needs",
        description="Print the steps of a NotebookWorkflow manifest and what each needs "
        "(dependsOn, stepRef values, forEach lists); finally steps come after every step.",
    )
    shown.add_argument("manifest", help="a YAML file holding one NotebookWorkflow ('-': stdin)")
    shown.add_argument(
        "--format", choices=("text", "dot", "mermaid"), default="text", help="default text"
    )
    shown.set_defaults(handler=usage_errors(cmd_graph))


def _manifest(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        documents = list(yaml.safe_load_all(text))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return load_workflow(documents, path)


def cmd_graph(args: argparse.Namespace, out: TextIO) -> int:
    try:
        out.write(graph(_manifest(args.manifest), args.format))
    except InvalidSpec as exc:
        raise UsageError(exc.message) from None
    return 0


def state_path(output_dir: str | Path, workflow: Mapping[str, Any]) -> Path:
    meta = workflow["metadata"]
    return Path(output_dir) / str(meta["namespace"]) / f"{meta['name']}{STATE_SUFFIX}"


def _read_state(path: Path) -> tuple[Local, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the state file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a kubemill workflow state file")
    return Local.from_json(data), dict(data.get("local") or {})


def _typed(value: str) -> Any:
    from kubemill.runner.parameters import infer_cli_value

    return infer_cli_value(value)


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    workflow = _manifest(args.manifest)
    override(workflow, [(key, _typed(value)) for key, value in args.parameter])
    output_dir = Path(args.output_dir).absolute()
    if args.output is not None and not re.fullmatch(OUTPUT_PREFIX_PATTERN, args.output):
        raise UsageError(f"--output {args.output!r} must be an S3 prefix (s3://BUCKET/PREFIX/)")
    root = args.output or str(output_dir)
    state = state_path(output_dir, workflow)
    earlier = None
    if args.only and state.exists():
        earlier, _ = _read_state(state)
        if earlier.workflow["metadata"].get("uid"):
            workflow["metadata"]["uid"] = earlier.workflow["metadata"]["uid"]
    local = only(workflow, args.only, earlier) if args.only else Local(workflow)
    base = "." if args.manifest == "-" else str(Path(args.manifest).absolute().parent)
    return _Driver(local, args, state, root, base, out).drive()


def cmd_retry(args: argparse.Namespace, out: TextIO) -> int:
    given = Path(args.state).absolute()
    if given.is_dir():
        found = sorted(given.glob(f"*/*{STATE_SUFFIX}")) + sorted(given.glob(f"*{STATE_SUFFIX}"))
        if len(found) != 1:
            raise UsageError(
                f"{given} holds {len(found)} workflow state files; name one of them"
                + (f": {', '.join(str(f) for f in found)}" if found else "")
            )
        given = found[0]
    local, kept = _read_state(given)
    retry(local, rfc3339())
    root, base = str(kept.get("output") or given.parent.parent), str(kept.get("base") or ".")
    return _Driver(local, args, given, root, base, out).drive()


@dataclass
class _Process:
    start: Start
    process: subprocess.Popen[bytes]
    began: str
    #: The run's own temporary folder: its parameters, upstream file and summary.
    scratch: Path
    log: Path


@dataclass
class _Driver:
    """Plans, starts runs, waits for one to end, plans again; until the workflow ends."""

    local: Local
    args: argparse.Namespace
    state: Path
    #: Where run folders go: a local folder or an S3 prefix.
    root: str
    #: The folder relative notebook paths are read from: the manifest's.
    base: str
    out: TextIO
    running: dict[str, _Process] = field(default_factory=dict)
    ended: queue.Queue[str] = field(default_factory=queue.Queue)
    shown: dict[str, str] = field(default_factory=dict)
    drawn: int = 0

    @property
    def _secrets(self) -> dict[str, str]:
        return dict(self.args.secret_param)

    def drive(self) -> int:
        parallel = self.args.parallel or os.cpu_count() or 1
        scratch = Path(tempfile.mkdtemp(prefix="kubemill-workflow-"))
        # What ended before this command (a retry's, --only's reused steps) is not news.
        for entry in (self.local.workflow.get("status") or {}).get("steps") or []:
            self.shown[step_label(entry)] = str(entry.get("phase"))
        # A cancelled CI job gets SIGTERM: stop the runs as Ctrl-C does, so each saves.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                ready = advance(self.local, rfc3339(), list(self.running), self._secrets)
                status = self.local.workflow.get("status") or {}
                if status.get("reason") == "InvalidSpec" and not status.get("steps"):
                    raise UsageError(str(status.get("message")))
                free = max(0, parallel - len(self.running))
                if ready[:free]:
                    for start in ready[:free]:
                        self._launch(start, scratch)
                    continue  # plan again: the workflow's status counts them as running
                self._save()
                self._show()
                if not self.running:
                    if self.local.phase in TERMINAL:
                        break
                    if not ready:
                        stranded(self.local, rfc3339())
                    continue
                self._finish(self.ended.get())
        except KeyboardInterrupt:
            self._stop()
            advance(self.local, rfc3339(), [], self._secrets)  # the status says where it stopped
            self._save()
            print("kubemill workflow: interrupted; the runs that were going were stopped",
                  file=sys.stderr)  # fmt: skip
            return _FAILED
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return self._report()

    def _launch(self, start: Start, scratch: Path) -> None:
        run = self.local.runs[start.run["metadata"]["name"]]
        meta = run["metadata"]
        now = rfc3339()
        own = scratch / meta["name"]
        own.mkdir(parents=True, exist_ok=True)
        files: dict[str, str | None] = {}
        for name, text in (
            ("parameters.json", parameters_text(start)),
            ("upstream.json", upstream_text(start)),
        ):
            files[name] = None
            if text is not None:
                (own / name).write_text(text, encoding="utf-8")
                files[name] = str(own / name)
        notebook = str(run["spec"]["notebook"])
        if "://" not in notebook:
            notebook = str(Path(self.base, notebook))
        folder = run_folder(self.root, meta["namespace"], meta["name"])
        try:
            argv = runner_args(
                start,
                notebook,
                folder,
                files["parameters.json"],
                files["upstream.json"],
                str(own / "summary.json"),
                self._secrets,
                kernel=self.args.kernel,
                cell_timeout=self.args.cell_timeout,
                timeout=self.args.timeout,
            )
        except InvalidSpec as exc:
            ended_without_start(run, exc.reason, exc.message, now)
            return
        log = self._log(meta["name"])
        log.parent.mkdir(parents=True, exist_ok=True)
        # The kubemill of this interpreter, not whichever is first on PATH.
        sibling = Path(sys.executable).with_name("kubemill")
        kubemill = str(sibling) if sibling.exists() else (shutil.which("kubemill") or "kubemill")
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [kubemill, *argv, "--no-progress-bar"],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=_run_environment(os.environ, meta),
                # Out of the terminal's process group: Ctrl-C reaches this process only, which
                # stops each run once (a second signal would stop a runner before it saves).
                start_new_session=True,
            )
        self.running[meta["name"]] = _Process(start, process, now, own, log)
        run["status"] = started_status(run, now)
        threading.Thread(target=self._await, args=(meta["name"], process), daemon=True).start()

    def _log(self, run: str) -> Path:
        """Where a run's runner output goes: beside the state file, since a run folder may
        be in S3, and the runner writes nothing but notebooks and results there."""
        name = self.state.name.removesuffix(STATE_SUFFIX)
        return self.state.with_name(f"{name}.logs") / f"{run}.log"

    def _await(self, name: str, process: subprocess.Popen[bytes]) -> None:
        process.wait()
        self.ended.put(name)

    def _finish(self, name: str) -> None:
        done = self.running.pop(name)
        summary_file = done.scratch / "summary.json"
        summary = summary_file.read_text(encoding="utf-8") if summary_file.exists() else None
        run = self.local.runs[name]
        code = done.process.returncode
        run["status"] = ended_status(run, summary, code, done.began, rfc3339())

    def _stop(self) -> None:
        for done in self.running.values():
            if done.process.poll() is None:
                done.process.terminate()
        for name in list(self.running):
            self.running[name].process.wait()
            self._finish(name)

    def _save(self) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        data = {**self.local.to_json(), "local": {"output": self.root, "base": self.base}}
        partial = self.state.with_name(self.state.name + ".partial")
        partial.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        partial.replace(self.state)

    def _show(self) -> None:
        if self.out.isatty():
            lines = table_lines(self.local.workflow)
            self.out.write(redraw(lines, self.drawn))
            self.drawn = len(lines)
            self.out.flush()
            return
        for entry in (self.local.workflow.get("status") or {}).get("steps") or []:
            label = step_label(entry)
            phase = str(entry.get("phase"))
            if phase == self.shown.get(label) or phase in ("Pending", "Waiting"):
                continue
            self.shown[label] = phase
            said = ""
            if phase in ("Failed", "Skipped"):
                said = f"  {entry.get('reason')}: {entry.get('message', '')}"
            log = self._log(str(entry.get("runName")))
            if phase == "Failed" and log.exists():
                said += f" (log: {log})"
            when = f" in {entry['duration']}" if entry.get("duration") else ""
            self.out.write(f"{label} {phase}{when}{said}\n")
            self.out.flush()

    def _report(self) -> int:
        workflow = self.local.workflow
        status = workflow.get("status") or {}
        if self.args.junit_xml:
            report = junit_xml(workflow, self.local.runs, socket.gethostname() or "localhost")
            Path(self.args.junit_xml).write_bytes(report)
        folder = f"{self.root.rstrip('/')}/{workflow['metadata']['namespace']}/"
        self.out.write("\n".join(summary_lines(workflow, folder)) + "\n")
        tests = status.get("tests") or {}
        passed = status.get("phase") == "Succeeded" and not tests.get("failed")
        return 0 if passed else _FAILED


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_environment(environ: Mapping[str, str], meta: Mapping[str, Any]) -> dict[str, str]:
    """The runner's environment: this one, with the run's identity for its lineage, as the
    operator sets it in the pod."""
    from kubemill.runner.contract import ENV_RUN_IDENTITY

    env = {k: v for k, v in environ.items() if not k.startswith("KUBEMILL_")}
    env[ENV_RUN_IDENTITY["run"]] = str(meta["name"])
    env[ENV_RUN_IDENTITY["runUid"]] = str(meta["uid"])
    env[ENV_RUN_IDENTITY["namespace"]] = str(meta["namespace"])
    return env
