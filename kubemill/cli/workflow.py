"""`kubemill workflow run|retry|graph`: a NotebookWorkflow on a laptop or in CI.

The decisions are the operator's own (kubemill/cli/localflow.py says how); this module carries
them out: each run is a `kubemill run` process, the command the runner pods run, given the
parameters and upstream file the operator would mount, and its summary becomes the run's
status. After every change the workflow and its runs are written to
`<output-dir>/<namespace>/<workflow>.workflow.json`, which `workflow retry` picks up.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.status import TERMINAL
from kubemill.operator.times import rfc3339
from kubemill.runner.rules import OUTPUT_PREFIX_PATTERN

from .localflow import (
    Local,
    Start,
    advance,
    definitions,
    ended_status,
    ended_without_start,
    interrupted,
    load_workflow,
    only,
    override,
    parameters_text,
    retry,
    run_environment,
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
#: Seconds a stopped runner gets to save its output and summary before it is killed: what
#: Kubernetes gives a pod (terminationGracePeriodSeconds' default), which the runner's own
#: stop budget fits in (runner/run.py, STOP_SAVE_BUDGET).
STOP_GRACE = 30.0


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
    again.add_argument(
        "--force",
        action="store_true",
        help="retry a workflow the state file says is still running when whether its "
        "`workflow run` is still going cannot be checked here (it ran on another machine, or "
        "an older kubemill wrote the file); only when you know it is not",
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
    base = "." if args.manifest == "-" else str(Path(args.manifest).absolute().parent)
    digests = definitions(workflow, _notebook_digests(workflow, base))
    if args.only:
        local, changed = only(workflow, args.only, earlier, digests)
        if changed:
            print(f"kubemill workflow: running {', '.join(changed)} again: changed since "
                  "its outputs were made (its definition, its notebook, or a step it needs)",
                  file=sys.stderr)  # fmt: skip
    else:
        local = Local(workflow, digests=digests)
    return _Driver(local, args, state, root, base, out).drive()


def _notebook_digests(workflow: Mapping[str, Any], base: str) -> dict[str, str]:
    """A digest of each step's local notebook file, by the path the step gives; a URL's
    notebook is not fetched here (it counts as written)."""
    found = {}
    spec = workflow.get("spec") or {}
    for step in [*spec.get("steps", []), *spec.get("finally", [])]:
        notebook = str(((step.get("runTemplate") or {}).get("spec") or {}).get("notebook") or "")
        if notebook and "://" not in notebook and notebook not in found:
            with contextlib.suppress(OSError):  # (a missing notebook fails its run)
                content = Path(base, notebook).read_bytes()
                found[notebook] = hashlib.sha256(content).hexdigest()
    return found


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
    if local.phase not in TERMINAL:
        _take_over(local, kept, given, args.force)
    retry(local, rfc3339())
    root, base = str(kept.get("output") or given.parent.parent), str(kept.get("base") or ".")
    return _Driver(local, args, given, root, base, out).drive()


def _take_over(local: Local, kept: Mapping[str, Any], path: Path, force: bool) -> None:
    """A state file that says the workflow is still running: refuse while the `workflow run`
    it names may still be going; otherwise (it was killed without a chance to write, or
    --force) stop the runners it left, and end the workflow as interrupted."""
    name = local.workflow["metadata"]["name"]
    driver = kept.get("driver") or {}
    pid, host = driver.get("pid"), driver.get("host")
    said = f" (PID {pid} on {host})" if host != socket.gethostname() else f" (PID {pid})"
    alive = _alive(driver) if driver else None
    # Without a start time (no /proc) a live PID may be a later process's: --force decides.
    certain = driver.get("started") is not None
    if alive and (certain or not force):
        raise UsageError(
            f"workflow {name} is still being run by `kubemill workflow run`{said}; wait for it "
            f"to end, or stop it (kill -INT {pid}), then retry"
            + ("" if certain else "; if that PID is another process's now, retry with --force")
        )
    if alive is None and not force:
        unknown = (
            f"its `kubemill workflow run`{said} ran on another machine"
            if driver
            else "it names no process running it (an older kubemill wrote it)"
        )
        raise UsageError(
            f"{path} says workflow {name} is {local.phase}, and {unknown}, so whether that run "
            "still goes cannot be checked here; if it does not, retry with --force"
        )
    runners = [(str(run), record) for run, record in (kept.get("runners") or {}).items()]
    # Only a runner known by its start time is stopped: without one, a live PID may be another
    # process's by now, and signalling its process group could stop someone else's work.
    left = {int(r["pid"]): (run, r) for run, r in runners if r.get("started") and _alive(r)}
    unsure = [f"{run} (PID {r['pid']})" for run, r in runners if not r.get("started") and _alive(r)]
    if unsure:
        print(
            "kubemill workflow: cannot tell whether these processes are still its runs (no "
            "start time recorded); stop them yourself if they are: " + ", ".join(unsure),
            file=sys.stderr,
        )
    if left:
        print(
            "kubemill workflow: stopping the runs it left running: "
            + ", ".join(f"{run} (PID {p})" for p, (run, _) in left.items()),
            file=sys.stderr,
        )
        _terminate(list(left), lambda p: bool(_alive(left[p][1])))
    why = (
        f"its `kubemill workflow run`{said} ended without saving how the workflow ended "
        "(it was killed)"
        if alive is False
        else f"its `kubemill workflow run`{said if driver else ''} is taken to have ended (--force)"
    )
    print(f"kubemill workflow: workflow {name} was {local.phase}, but {why}: its unfinished "
          "runs count as failed (Interrupted)", file=sys.stderr)  # fmt: skip
    interrupted(local, (), why, rfc3339())


def _identity(pid: int) -> dict[str, Any]:
    """What tells this process apart from a later one given the same PID: its start time in
    clock ticks since boot (/proc/PID/stat's 22nd field) where /proc has it."""
    record: dict[str, Any] = {"pid": pid, "host": socket.gethostname()}
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
        # (The command name, field 2, is in parentheses and may hold spaces.)
        record["started"] = stat[stat.rindex(")") + 2 :].split()[19]
    except (OSError, ValueError, IndexError):
        pass
    return record


def _alive(record: Mapping[str, Any]) -> bool | None:
    """Whether the process `record` (from _identity) names still runs; None when that cannot
    be told from here (another machine's)."""
    pid = int(record.get("pid") or 0)
    if pid <= 0:
        return False
    if record.get("host", socket.gethostname()) != socket.gethostname():
        return None
    now = _identity(pid)
    if record.get("started") is not None and now.get("started") is not None:
        return bool(now["started"] == record["started"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(
    pids: Sequence[int], alive: Callable[[int], bool], hurry: threading.Event | None = None
) -> None:
    """Stop processes as the kubelet stops a pod: SIGTERM, which the runner answers by saving
    its output and summary, then after STOP_GRACE seconds (or at once once `hurry` is set: a
    second Ctrl-C) SIGKILL to each one's process group (the runner's session: what it left)."""
    for pid in pids:
        # (Ended already; or another user's by now, which is not ours to stop.)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        if hurry is not None and hurry.is_set():
            break
        time.sleep(0.1)  # other people's processes: no child to wait on
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


class _Interrupted(BaseException):
    """SIGINT or SIGTERM reached `workflow run`: the runs are stopped, the state kept."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class _Process:
    start: Start
    process: subprocess.Popen[bytes]
    began: str
    #: The run's own temporary folder: its parameters, upstream file and summary.
    scratch: Path
    log: Path
    #: The runner's PID and start time, in the state file: `workflow retry` stops it when
    #: this process was killed without stopping it.
    identity: dict[str, Any] = field(default_factory=dict)


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
    identity: dict[str, Any] = field(default_factory=lambda: _identity(os.getpid()))
    #: While a runner is being started, a signal waits in `deferred`: stopped then, the
    #: runner would start with no entry in `running`, and nothing would stop it.
    launching: bool = False
    deferred: int | None = None
    #: An interrupt is being handled: a second signal before _end takes over is not raised
    #: again (it would skip stopping the runs and saving the state).
    stopping: bool = False

    @property
    def _secrets(self) -> dict[str, str]:
        return dict(self.args.secret_param)

    def drive(self) -> int:
        """Run the workflow to its end. On every other way out (SIGINT, SIGTERM, an error)
        the runs still going are stopped and the state says the workflow was interrupted, so
        that `workflow retry` takes it up."""
        parallel = self.args.parallel or os.cpu_count() or 1
        scratch = Path(tempfile.mkdtemp(prefix="kubemill-workflow-"))
        # What ended before this command (a retry's, --only's reused steps) is not news.
        for entry in (self.local.workflow.get("status") or {}).get("steps") or []:
            self.shown[step_label(entry)] = str(entry.get("phase"))
        # Ctrl-C, and the SIGTERM a cancelled CI job gets: stop the runs, so each saves.
        handlers = {s: signal.signal(s, self._interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
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
        except _Interrupted as exc:
            name = signal.Signals(exc.signum).name
            stopped = self._end(f"`kubemill workflow run` was interrupted ({name})")
            print(f"kubemill workflow: interrupted ({name}); "
                  + (f"stopped the runs {', '.join(stopped)}; " if stopped else "")
                  + f"`kubemill workflow retry {self.state.parent.parent}` re-runs what did "
                  "not succeed", file=sys.stderr)  # fmt: skip
            self._report()
            return 128 + exc.signum
        except UsageError:
            raise  # (a workflow the planner refused: nothing started)
        except BaseException as exc:
            self._end(f"`kubemill workflow run` failed ({type(exc).__name__}: {exc})")
            raise
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            shutil.rmtree(scratch, ignore_errors=True)
        return self._report()

    def _interrupt(self, signum: int, frame: object) -> None:
        if self.stopping:
            return
        if self.launching:
            self.deferred = signum  # raised once the runner being started is in self.running
        else:
            self.stopping = True
            raise _Interrupted(signum)

    def _end(self, why: str) -> list[str]:
        """Stop the runs still going, end the workflow as interrupted (`why`), save; the
        names of the runs stopped. A second Ctrl-C kills them without waiting."""
        hurry = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: hurry.set())
        stopped = list(self.running)
        processes = {p.process.pid: p.process for p in self.running.values()}
        _terminate(list(processes), lambda pid: processes[pid].poll() is None, hurry)
        for name in stopped:
            self.running[name].process.wait()
            self._finish(name)
        interrupted(self.local, stopped, why, rfc3339())
        self._save()
        return stopped

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
            env = run_environment(run, os.environ)
        except InvalidSpec as exc:
            ended_without_start(run, exc.reason, exc.message, now)
            return
        log = self._log(meta["name"])
        log.parent.mkdir(parents=True, exist_ok=True)
        # The kubemill of this interpreter, not whichever is first on PATH.
        sibling = Path(sys.executable).with_name("kubemill")
        kubemill = str(sibling) if sibling.exists() else (shutil.which("kubemill") or "kubemill")
        self.launching = True
        try:
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [kubemill, *argv, "--no-progress-bar"],
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # Out of the terminal's process group: Ctrl-C reaches this process only,
                    # which stops each run once (a second signal would stop a runner before it
                    # saves).
                    start_new_session=True,
                )
            identity = _identity(process.pid)
            self.running[meta["name"]] = _Process(start, process, now, own, log, identity)
        finally:
            self.launching = False
        run["status"] = started_status(run, now)
        threading.Thread(target=self._await, args=(meta["name"], process), daemon=True).start()
        if self.deferred is not None:
            self.stopping = True
            raise _Interrupted(self.deferred)

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

    def _save(self) -> None:
        self.state.parent.mkdir(parents=True, exist_ok=True)
        local = {
            "output": self.root,
            "base": self.base,
            # Who runs the workflow and its runs: `workflow retry` refuses while this process
            # lives, and stops the runners it left when it was killed without a word.
            "driver": self.identity,
            "runners": {name: p.identity for name, p in self.running.items()},
        }
        data = {**self.local.to_json(), "local": local}
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
