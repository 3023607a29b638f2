"""One run: fetch, parameterize, execute with checkpoints, save everything, summarize.

Whatever happens after the notebook has been read, an output notebook is written that says how
the run ended, and a summary is returned for the termination message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import signal
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbformat import NotebookNode

from kubemill.runner import __version__
from kubemill.runner.contract import ExitCode, build_summary
from kubemill.runner.errors import (
    BadInputError,
    RunFailure,
    RunnerError,
    StorageError,
    Terminated,
)
from kubemill.runner.execute import CellTiming, Execution, ExecutionOptions
from kubemill.runner.notebook import (
    collect_results,
    error_anchor_cell,
    parse_notebook,
    remove_banners,
    serialize,
    status_banner,
)
from kubemill.runner.parameters import (
    PARAMETERS_TAG,
    declared_parameters,
    find_tagged_cell,
    inject_parameters,
    validate_parameters,
)
from kubemill.runner.progress import Reporter
from kubemill.runner.redact import Redactor
from kubemill.runner.storage import Fetched, Location, Storage, describe_s3_source

__all__ = ["RunOptions", "RunOutcome", "run_notebook"]


@dataclass(frozen=True)
class RunOptions:
    input: str  # where the notebook comes from
    output: str  # a file, '-', or a folder ending in '/'
    parameters: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)  # parameter name -> env var name
    allow_unknown_parameters: bool = False
    kernel_name: str | None = None  # None: from the notebook's metadata, else python3
    cwd: str | None = None
    start_timeout: float = 60.0
    cell_timeout: float | None = None
    run_timeout: float | None = None
    allow_errors: bool = False
    checkpoint_interval: float = 10.0  # minimum seconds between two checkpoint saves
    html: bool = False
    handle_signals: bool = True
    interrupt_grace: float = 5.0


@dataclass
class RunOutcome:
    exit_code: ExitCode
    output_url: str | None
    results: dict[str, Any]
    failure: dict[str, Any] | None
    duration: float
    summary: bytes


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class _Targets:
    """Where each artifact of a run goes."""

    def __init__(self, output: str) -> None:
        self.root = Location.parse(output)
        if self.root.scheme in ("http", "https"):
            raise BadInputError(f"cannot write output to {output}: use a local path, - or s3://")
        if self.root.is_folder:
            self.notebook = self.root.child("output.ipynb")
            self.results: Location | None = self.root.child("results.json")
            self.lineage: Location | None = self.root.child("run.json")
            self.html: Location | None = self.root.child("output.html")
        else:
            self.notebook = self.root
            self.results = self.lineage = None
            stem = output[: -len(".ipynb")] if output.endswith(".ipynb") else output
            self.html = Location.parse(stem + ".html") if self.root.scheme != "-" else None


class _Checkpointer:
    """Saves the running notebook at most once per interval, and only when it changed.

    The bytes written therefore grow with the run's duration, not with cells times notebook size.
    Saves never overlap, so an older checkpoint can never land after the final save.
    """

    def __init__(self, interval: float, save: Any, reporter: Reporter) -> None:
        self._interval = interval
        self._save = save
        self._reporter = reporter
        self._dirty = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.saves = 0

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop())

    def changed(self) -> None:
        self._dirty.set()

    async def _loop(self) -> None:
        last = time.monotonic()
        while not self._stopping:
            await self._dirty.wait()
            wait = last + self._interval - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), wait)
            if self._stopping:
                return
            self._dirty.clear()
            last = time.monotonic()
            try:
                await self._save()
                self.saves += 1
            except RunnerError as exc:
                self._reporter.warning(f"checkpoint failed (the run goes on): {exc.message}")

    async def stop(self) -> None:
        """Let an in-flight save finish, then stop; the caller does the final save."""
        self._stopping = True
        self._stopped.set()
        self._dirty.set()
        if self._task is not None:
            await self._task


class _Observer:
    """Routes execution events to the reporter and the checkpointer."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.checkpointer: _Checkpointer | None = None

    def changed(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.changed()

    def cell_started(self, index: int, number: int, total: int, cell: NotebookNode) -> None:
        self.reporter.cell_started(index, number, total, cell)

    def cell_finished(self, index: int, number: int, total: int, timing: CellTiming) -> None:
        self.reporter.cell_finished(index, number, total, timing)

    def stream(self, index: int, name: str, text: str) -> None:
        self.reporter.stream(index, name, text)

    def note(self, message: str) -> None:
        self.reporter.note(message)


class _Run:
    def __init__(
        self,
        options: RunOptions,
        storage: Storage,
        reporter: Reporter,
        environ: Mapping[str, str],
        identity: Mapping[str, str],
    ) -> None:
        self.options = options
        self.storage = storage
        self.reporter = reporter
        self.environ = environ
        self.identity = dict(identity)
        self.started = time.time()
        self.targets = _Targets(options.output)
        self.nb: NotebookNode | None = None
        self.fetched: Fetched | None = None
        self.execution: Execution | None = None
        self.redactor = Redactor()
        self.failure: RunnerError | None = None
        self.kernel_name = ""

    # --- preparing ------------------------------------------------------------------------

    def prepare(self) -> None:
        options = self.options
        secret_values: dict[str, str] = {}
        for name, env in options.secrets.items():
            if env not in self.environ:
                raise BadInputError(
                    f"secret parameter {name!r} reads the environment variable {env!r}, "
                    "which is not set"
                )
            secret_values[name] = self.environ[env]
        self.redactor = Redactor(secret_values.values())
        self.reporter.redactor = self.redactor  # cell output streams into the log
        source = Location.parse(options.input)
        self.fetched = self.storage.read(source)
        self.storage.check_writable(self.targets.root)
        nb, notes = parse_notebook(self.fetched.data, options.input)
        for note in notes:
            self.reporter.info(note)
        self.nb = nb
        remove_banners(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                # Stale outputs from the input would pass for this run's if a cell never ran.
                cell.outputs = []
                cell.execution_count = None
                cell.metadata.pop("kubemill", None)
                cell.metadata.pop("execution", None)
        self.kernel_name = (
            options.kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
        )
        index = find_tagged_cell(nb, PARAMETERS_TAG)
        declared = declared_parameters(nb.cells[index].source) if index >= 0 else None
        validate_parameters(
            options.parameters,
            options.secrets,
            declared,
            allow_unknown=options.allow_unknown_parameters,
        )
        injected = options.parameters or options.secrets
        if injected and not inject_parameters(nb, options.parameters, options.secrets):
            self.reporter.warning(
                "the notebook has no cell tagged 'parameters': the parameters were injected "
                "into a new first cell, and their names could not be checked"
            )
        nb.metadata["papermill"] = {
            "parameters": dict(options.parameters),
            "input_path": options.input,
            "output_path": self.targets.notebook.uri,
        }
        self._set_metadata("Running")

    # --- metadata and lineage -------------------------------------------------------------

    def lineage(self, status: str) -> dict[str, Any]:
        fetched = self.fetched
        execution = self.execution
        language = dict(execution.kernel_info.get("language_info", {})) if execution else {}
        now = time.time()
        out: dict[str, Any] = {
            "kubemillVersion": __version__,
            "status": status,
            "input": {
                "uri": self.options.input,
                **(describe_s3_source(fetched) if fetched else {}),
            },
            "output": self.targets.notebook.uri,
            "parameters": dict(self.options.parameters),
            "secretParameters": {n: {"fromEnv": e} for n, e in self.options.secrets.items()},
            "kernel": {
                "name": self.kernel_name,
                "language": language.get("name"),
                "languageVersion": language.get("version"),
                "implementation": execution.kernel_info.get("implementation")
                if execution
                else None,
            },
            "runner": {"python": platform.python_version(), "platform": platform.platform()},
            "startTime": _iso(self.started),
            "durationSeconds": round(now - self.started, 3),
        }
        if status != "Running":
            out["endTime"] = _iso(now)
        if self.identity:
            out["identity"] = dict(self.identity)
        if execution is not None:
            out["cells"] = [t.as_dict() for t in execution.timings]
            if execution.cell_errors:
                out["tolerantCellErrors"] = execution.cell_errors
        if self.failure is not None:
            out["failure"] = self.failure.details()
        return out

    def _set_metadata(self, status: str) -> None:
        assert self.nb is not None
        meta = self.lineage(status)
        meta.pop("cells", None)  # each cell carries its own timing in its metadata
        meta["results"] = collect_results(self.nb) if status != "Running" else {}
        self.nb.metadata["kubemill"] = meta

    # --- saving ---------------------------------------------------------------------------

    def _running_view(self) -> dict[str, Any]:
        """The notebook as a checkpoint shows it: with a banner saying it is still running."""
        assert self.nb is not None
        execution = self.execution
        where = ""
        if execution is not None and execution.current_cell is not None:
            done = len(execution.timings) - 1
            where = f" Cell In [{execution.current_number}] is running ({done} code cells done)."
        banner = status_banner(
            "This run is still in progress.",
            f"Checkpoint saved at {_iso(time.time())}.{where} The final output replaces it.",
            link_to_cell=False,
            color="darkorange",
        )
        return {**self.nb, "cells": [banner, *self.nb.cells]}

    async def checkpoint(self) -> None:
        data = serialize(self._running_view(), self.redactor)
        await asyncio.to_thread(self.storage.write, self.targets.notebook, data)

    def finalize_notebook(self) -> None:
        """Banner and anchor for a failed run; final metadata for every run."""
        assert self.nb is not None
        failure = self.failure
        status = "Succeeded" if failure is None else "Failed"
        if isinstance(failure, RunFailure):
            cell = failure.cell
            if cell is not None:
                self.nb.cells.insert(cell, error_anchor_cell(failure.message))
                failure.cell = cell + 2  # after the banner and the anchor are in place
            self.nb.cells.insert(
                0,
                status_banner(
                    f"Execution failed: {failure.exit_code.reason}",
                    f"{failure.message}.",
                    link_to_cell=cell is not None,
                    color="red",
                ),
            )
            if cell is not None:
                failure.cell_id = self.nb.cells[failure.cell].get("id")
        elif failure is not None:
            self.nb.cells.insert(
                0,
                status_banner(
                    f"Not executed: {failure.exit_code.reason}",
                    f"{failure.message}.",
                    link_to_cell=False,
                    color="red",
                ),
            )
        self._set_metadata(status)

    def save_final(self) -> None:
        assert self.nb is not None
        redactor = self.redactor
        notebook = serialize(self.nb, redactor)
        self.storage.write(self.targets.notebook, notebook, durable=True)
        meta = self.nb.metadata["kubemill"]
        if self.targets.results is not None:
            results = json.dumps(redactor.tree(meta["results"]), indent=2, ensure_ascii=False)
            self.storage.write(self.targets.results, (results + "\n").encode(), durable=True)
        if self.targets.lineage is not None:
            lineage = self.lineage(meta["status"])
            lineage["results"] = meta["results"]
            text = json.dumps(redactor.tree(lineage), indent=2, ensure_ascii=False)
            self.storage.write(self.targets.lineage, (text + "\n").encode(), durable=True)
        if self.options.html and self.targets.html is not None:
            self.storage.write(self.targets.html, render_html(notebook), durable=True)

    # --- the whole run --------------------------------------------------------------------

    async def execute(self) -> None:
        assert self.nb is not None
        observer = _Observer(self.reporter)
        options = self.options
        run_timeout = options.run_timeout
        if run_timeout:
            run_timeout = max(0.001, run_timeout - (time.time() - self.started))
        self.execution = Execution(
            self.nb,
            ExecutionOptions(
                kernel_name=self.kernel_name,
                cwd=options.cwd,
                start_timeout=options.start_timeout,
                cell_timeout=options.cell_timeout,
                run_timeout=run_timeout,
                run_timeout_total=options.run_timeout,
                allow_errors=options.allow_errors,
                interrupt_grace=options.interrupt_grace,
                handle_signals=options.handle_signals,
            ),
            observer,
        )
        checkpointer = None
        if self.targets.notebook.scheme != "-":
            checkpointer = _Checkpointer(
                options.checkpoint_interval, self.checkpoint, self.reporter
            )
            observer.checkpointer = checkpointer
            checkpointer.start()
        try:
            await self.execution.run()
        finally:
            self.reporter.close()
            if checkpointer is not None:
                await checkpointer.stop()


def render_html(notebook: bytes) -> bytes:
    """The executed notebook as a standalone HTML page (needs the `html` extra)."""
    try:
        import nbformat
        from nbconvert import HTMLExporter
    except ImportError:
        raise BadInputError("--html needs nbconvert: pip install 'kubemill[html]'") from None
    body, _ = HTMLExporter().from_notebook_node(nbformat.reads(notebook.decode(), as_version=4))
    return str(body).encode()


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated.by(signal.Signals(signum).name, None, None)


@contextlib.contextmanager
def _signals_deferred(reporter: Reporter, enabled: bool) -> Iterator[None]:
    """While the final output is written, SIGTERM/SIGINT wait: the save is what they would
    interrupt, and it is what makes the run's end visible. The kubelet's SIGKILL still ends it
    after the grace period."""
    if not enabled:
        yield
        return

    def note(signum: int, _frame: object) -> None:
        reporter.warning(f"{signal.Signals(signum).name} while saving the output: saving first")

    previous = {s: signal.signal(s, note) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_notebook(
    options: RunOptions,
    storage: Storage,
    reporter: Reporter,
    *,
    environ: Mapping[str, str],
    identity: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run one notebook; never raises for an expected failure, returns its outcome instead."""
    run = _Run(options, storage, reporter, environ, identity or {})
    if options.handle_signals:
        # Until the execution installs its own handlers: a signal while fetching the notebook
        # still ends the run with a summary, not with a bare "killed by signal 15".
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _raise_terminated)
    try:
        run.prepare()
        reporter.info(
            f"running {options.input} -> {run.targets.notebook.uri} with kernel {run.kernel_name}"
        )
        asyncio.run(run.execute())
    except RunnerError as exc:
        run.failure = exc
        if reporter.debug:
            reporter.error(traceback.format_exc())
        reporter.error(exc.message)
    storage_problem: StorageError | None = None
    if run.nb is not None:
        with _signals_deferred(reporter, options.handle_signals):
            run.finalize_notebook()
            try:
                run.save_final()
            except StorageError as exc:
                storage_problem = exc
                reporter.error(f"the output could not be saved: {exc.message}")
            except RunnerError as exc:  # rendering HTML without nbconvert
                storage_problem = StorageError(exc.message)
                reporter.error(exc.message)
    duration = time.time() - run.started
    failure = run.failure
    if failure is None and storage_problem is not None:
        failure = storage_problem
    exit_code = failure.exit_code if failure is not None else ExitCode.OK
    details = run.redactor.tree(failure.details()) if failure is not None else None
    if details is not None and storage_problem is not None and failure is not storage_problem:
        details["storageError"] = storage_problem.message
    results = run.redactor.tree(collect_results(run.nb)) if run.nb is not None else {}
    saved = run.nb is not None and storage_problem is None and run.targets.notebook.scheme != "-"
    output_url = run.targets.notebook.uri if saved else None
    summary = build_summary(
        exit_code=exit_code,
        output_url=output_url,
        results=results,
        failure=details,
        duration_seconds=duration,
    )
    if exit_code is ExitCode.OK:
        reporter.info(f"succeeded in {duration:.2f}s; output: {run.targets.notebook.uri}")
    return RunOutcome(exit_code, output_url, results, details, duration, summary)
