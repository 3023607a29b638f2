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
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nbformat import NotebookNode

from . import __version__, early
from .clock import iso
from .contract import ExitCode, build_summary
from .errors import (
    BadInputError,
    InternalError,
    RunFailure,
    RunnerError,
    StorageError,
    Terminated,
)
from .execute import Execution, ExecutionOptions
from .links import ENV_VIEWER_ROOT, ENV_VIEWER_URL, viewer_link
from .notebook import (
    collect_results,
    error_anchor_cell,
    parse_notebook,
    remove_banners,
    serialize,
    status_banner,
)
from .parameters import (
    PARAMETERS_TAG,
    find_tagged_cell,
    inject_parameters,
    json_safe,
    normalize,
    read_parameters_cell,
    validate_parameters,
)
from .progress import Reporter
from .redact import Redactor
from .storage import Fetched, Location, Storage, display_uri, source_identity
from .upstream import Upstream, check_overlap, pick_results, read_results, upstream_lineage

__all__ = ["STOP_SAVE_BUDGET", "RunOptions", "RunOutcome", "run_notebook"]

#: Seconds the final save may take after SIGTERM: with the 5 s interrupt grace and the kernel's
#: shutdown, the runner exits within about 22 s, inside Kubernetes' default 30 s grace period.
STOP_SAVE_BUDGET = 15.0
#: Secrets shorter than this mask too much unrelated text; the run warns about them.
SHORT_SECRET = 6


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
    handle_signals: bool = True  # route SIGTERM/SIGINT into the run (off when embedded)
    interrupt_grace: float = 5.0
    report_mode: bool = False  # papermill's --report-mode: hide code cells' source
    prepare_only: bool = False  # papermill's --prepare-only: inject parameters, do not execute
    upstream: Upstream = field(default_factory=Upstream)  # --upstream-file: runs to read from


@dataclass
class RunOutcome:
    exit_code: ExitCode
    output_url: str | None
    results: dict[str, Any]
    failure: dict[str, Any] | None
    duration: float
    summary: bytes


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

    The bytes written therefore grow with the run's duration, not with cells times notebook
    size. Saves never overlap, so an older checkpoint can never land after the final save.
    """

    def __init__(
        self, interval: float, save: Callable[[], Awaitable[None]], reporter: Reporter
    ) -> None:
        self._interval = interval
        self._save = save
        self._reporter = reporter
        self._dirty = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.saves = 0

    def start(self) -> None:
        if self._interval > 0:
            self._task = asyncio.create_task(self._loop())

    def changed(self) -> None:
        self._dirty.set()

    async def _loop(self) -> None:
        last = time.monotonic()
        while not self._stopped.is_set():
            await self._dirty.wait()
            wait = last + self._interval - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), wait)
            if self._stopped.is_set():
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
        self._stopped.set()
        self._dirty.set()
        if self._task is not None:
            await self._task


class _SignalRouter:
    """SIGTERM/SIGINT for the whole run, by phase.

    Fetching and preparing: the run ends at once (with a summary). Executing: the execution
    interrupts the kernel and stops. Saving: the signal waits, since the save is what makes the
    run's end visible; the kubelet's SIGKILL still ends it after the grace period.
    """

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.execution: Execution | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.saving = False
        self.received: str | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        self.received = self.received or name
        if self.execution is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.execution.on_signal, signum)
        elif self.saving:
            self.reporter.warning(f"{name} while saving the output: saving first")
        else:
            raise Terminated.by(name, None, None)

    def replay_early(self) -> None:
        """Act on a SIGTERM that came before the handler was installed (see runner/early.py)."""
        for signum in early.take():
            self(signum, None)

    @contextlib.contextmanager
    def installed(self, enabled: bool) -> Iterator[None]:
        if not enabled:
            yield
            return
        previous = {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class _Run:
    def __init__(
        self,
        options: RunOptions,
        storage: Storage,
        reporter: Reporter,
        environ: Mapping[str, str],
        identity: Mapping[str, str],
        signals: _SignalRouter,
    ) -> None:
        self.options = options
        self.storage = storage
        self.reporter = reporter
        self.environ = environ
        self.identity = dict(identity)
        self.signals = signals
        self.started = time.time()
        self.targets: _Targets | None = None
        self.parameters: dict[str, Any] = {}
        self.nb: NotebookNode | None = None
        self.fetched: Fetched | None = None
        self.execution: Execution | None = None
        self.checkpoints = 0
        self.redactor = Redactor()
        self.failure: RunnerError | None = None
        self.kernel_name = ""
        self.upstream_digests: dict[str, str] = {}  # results.json URL -> SHA-256 of what was read

    # --- preparing ------------------------------------------------------------------------

    def prepare(self) -> None:
        options = self.options
        self.targets = targets = _Targets(options.output)
        self._read_secrets()
        self.parameters = normalize(options.parameters)
        check_overlap(options.upstream, [*self.parameters, *options.secrets])
        if options.html:
            try:
                import nbconvert  # noqa: F401
            except ImportError:
                raise BadInputError(
                    "--html needs nbconvert: pip install 'kubemill[html]'"
                ) from None
        self.fetched = self.storage.read(Location.parse(options.input))
        self.storage.check_writable(targets.root)
        nb, notes = parse_notebook(self.fetched.data, display_uri(options.input))
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
        self._read_upstream()
        self.kernel_name = (
            options.kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
        )
        self._parameterize(nb)
        if options.report_mode:
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        nb.metadata["papermill"] = {
            "parameters": json_safe(self.parameters),
            "input_path": display_uri(options.input),
            "output_path": targets.notebook.uri,
        }
        self._set_metadata("Running")

    def _read_secrets(self) -> None:
        values: list[str] = []
        for name, env in self.options.secrets.items():
            if env not in self.environ:
                raise BadInputError(
                    f"secret parameter {name!r} reads the environment variable {env!r}, "
                    "which is not set"
                )
            value = self.environ[env]
            if len(value) < SHORT_SECRET:
                self.reporter.warning(
                    f"secret parameter {name!r} is shorter than {SHORT_SECRET} characters: "
                    "masking it may also mask unrelated text in the output"
                )
            values.append(value)
        self.redactor = Redactor(values)
        self.reporter.redactor = self.redactor  # cell output streams into the log

    def _read_upstream(self) -> None:
        """Read the upstream results the operator could not pass inline; after the notebook, so
        a failure here still leaves an output notebook that says why."""
        upstream = self.options.upstream
        if not upstream.results:
            return
        files = read_results(upstream, self.storage.read)
        self.upstream_digests = {url: file.sha256 for url, file in files.items()}
        values = pick_results(upstream, files)
        self.parameters.update(values)
        self.reporter.info(
            f"parameters {', '.join(values)} read from the results of upstream runs "
            f"{', '.join(dict.fromkeys(ref.run for ref in upstream.results))}"
        )

    def _parameterize(self, nb: NotebookNode) -> None:
        options = self.options
        if not (self.parameters or options.secrets):
            return
        language = (
            nb.metadata.get("kernelspec", {}).get("language")
            or nb.metadata.get("language_info", {}).get("name")
            or "python"
        )
        if str(language).lower() != "python":
            raise BadInputError(
                f"the notebook's kernel language is {language!r}; kubemill injects parameters "
                "as Python and runs Python notebooks only"
            )
        index = find_tagged_cell(nb, PARAMETERS_TAG)
        cell = read_parameters_cell(nb.cells[index].source) if index >= 0 else None
        for line in cell.unreadable if cell is not None else []:
            # The kernel decides: IPython reads some lines Python cannot (`x = !ls`); a line
            # neither can read fails the run at that cell, as in papermill.
            self.reporter.warning(f"{line.describe()}; its names cannot be checked")
        validate_parameters(
            self.parameters,
            options.secrets,
            cell.declared if cell is not None else None,
            allow_unknown=options.allow_unknown_parameters,
            unreadable=cell.unreadable if cell is not None else (),
        )
        if not inject_parameters(nb, self.parameters, options.secrets):
            self.reporter.warning(
                "the notebook has no cell tagged 'parameters': the parameters were injected "
                "into a new first cell, and their names could not be checked"
            )

    # --- metadata and lineage -------------------------------------------------------------

    def lineage(self, status: str) -> dict[str, Any]:
        fetched = self.fetched
        execution = self.execution
        info = execution.kernel_info if execution else {}
        language = dict(info.get("language_info", {}))
        now = time.time()
        out: dict[str, Any] = {
            "kubemillVersion": __version__,
            "status": status,
            "input": {
                "uri": display_uri(self.options.input),
                **(source_identity(fetched) if fetched else {}),
            },
            "output": self.targets.notebook.uri if self.targets else None,
            "parameters": json_safe(self.parameters),
            "secretParameters": {n: {"fromEnv": e} for n, e in self.options.secrets.items()},
            "kernel": {
                "name": self.kernel_name,
                "language": language.get("name"),
                "languageVersion": language.get("version"),
                "implementation": info.get("implementation"),
            },
            "runner": {"python": platform.python_version(), "platform": platform.platform()},
            "startTime": iso(self.started),
            "durationSeconds": round(now - self.started, 3),
            "checkpoints": self.checkpoints,
        }
        if status != "Running":
            out["endTime"] = iso(now)
        if self.identity:
            out["identity"] = dict(self.identity)
        if self.options.upstream.runs:
            out["upstream"] = upstream_lineage(self.options.upstream, self.upstream_digests)
        if execution is not None:
            # Indices as in the notebook this run writes, which has a banner on top at the end.
            positions = self._positions()
            out["cells"] = [
                {**t.as_dict(), "index": positions.get(t.cell_id, t.index)}
                for t in execution.timings
            ]
            if execution.cell_errors:
                out["tolerantCellErrors"] = execution.cell_errors
            early = self.early_exit()
            if early is not None:
                assert execution.early_exit is not None
                out["cells"] += [
                    {"index": positions.get(cell_id), "id": cell_id, "status": "skipped"}
                    for cell_id in execution.early_exit.skipped
                ]
                out["earlyExit"] = early
        if self.failure is not None:
            out["failure"] = self.failure.details()
        return out

    def _positions(self) -> dict[str, int]:
        """Each cell's index in the notebook as it is now, by id."""
        cells = self.nb.cells if self.nb is not None else []
        return {str(cell.get("id", "")): index for index, cell in enumerate(cells)}

    def early_exit(self) -> dict[str, Any] | None:
        """How a cell ended a successful run early (papermill's `sys.exit(0)`), for run.json,
        the notebook's metadata and the summary; None when every cell ran or the run failed."""
        early = self.execution.early_exit if self.execution is not None else None
        if early is None or self.failure is not None:
            return None
        return {
            "cell": self._positions().get(early.cell_id),
            "cellId": early.cell_id,
            "executionCount": early.number,
            "code": early.request.code,
            "skippedCells": len(early.skipped),
            "message": early.message,
        }

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
            f"Checkpoint saved at {iso()}.{where} The final output replaces it.",
            link_to_cell=False,
            color="darkorange",
        )
        return {**self.nb, "cells": [banner, *self.nb.cells]}

    async def checkpoint(self) -> None:
        assert self.targets is not None
        data = serialize(self._running_view(), self.redactor)
        # Best effort with short timeouts: a slow checkpoint must not delay a stop.
        await asyncio.to_thread(self.storage.write, self.targets.notebook, data, quick=True)
        self.checkpoints += 1

    def finalize_notebook(self) -> None:
        """Banner and anchor for a failed run; final metadata for every run."""
        assert self.nb is not None
        failure = self.failure
        status = "Succeeded" if failure is None else "Failed"
        if self.options.prepare_only and failure is None:
            status = "Prepared"
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
        elif self.execution is not None and self.execution.early_exit is not None:
            early = self.execution.early_exit
            self.nb.cells.insert(
                0,
                status_banner(
                    "Succeeded: stopped early",
                    f"Cell In [{early.number}] ended the notebook ({early.request.how}); the "
                    f"{len(early.skipped)} code cell(s) after it were not run.",
                    link_to_cell=False,
                    color="green",
                ),
            )
        self._set_metadata(status)

    def save_final(self) -> None:
        """Write every artifact; after a stop signal, within STOP_SAVE_BUDGET, notebook first."""
        assert self.nb is not None and self.targets is not None
        targets, redactor = self.targets, self.redactor
        quick = self.signals.received is not None
        deadline = time.monotonic() + STOP_SAVE_BUDGET
        notebook = serialize(self.nb, redactor)
        self.storage.write(targets.notebook, notebook, durable=True, quick=quick)
        meta = self.nb.metadata["kubemill"]
        extras: list[tuple[Location, Callable[[], bytes]]] = []
        if targets.results is not None:
            extras.append((targets.results, lambda: _json_bytes(redactor.tree(meta["results"]))))
        if targets.lineage is not None:
            lineage = {**self.lineage(meta["status"]), "results": meta["results"]}
            extras.append((targets.lineage, lambda: _json_bytes(redactor.tree(lineage))))
        if self.options.html and targets.html is not None:
            extras.append((targets.html, lambda: render_html(notebook)))
        for location, content in extras:
            if quick and time.monotonic() > deadline:
                self.reporter.warning(f"out of time after the stop signal: {location.uri} skipped")
                continue
            self.storage.write(location, content(), durable=True, quick=quick)

    # --- the whole run --------------------------------------------------------------------

    async def execute(self) -> None:
        assert self.nb is not None and self.targets is not None
        options = self.options
        if options.prepare_only:
            return
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
            ),
            self.reporter,
        )
        checkpointer = None
        if self.targets.notebook.scheme != "-":
            checkpointer = _Checkpointer(
                options.checkpoint_interval, self.checkpoint, self.reporter
            )
            self.reporter.on_change = checkpointer.changed
            checkpointer.start()
        self.signals.loop = asyncio.get_running_loop()
        self.signals.execution = self.execution
        try:
            await self.execution.run()
        finally:
            self.signals.execution = None
            self.signals.saving = True
            self.reporter.on_change = None
            self.reporter.close()
            if checkpointer is not None:
                await checkpointer.stop()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(json_safe(value), indent=2, ensure_ascii=False) + "\n").encode()


def render_html(notebook: bytes) -> bytes:
    """The executed notebook as a standalone HTML page (needs the `html` extra)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.reads(notebook.decode(), as_version=4))
    return str(body).encode()


def run_notebook(
    options: RunOptions,
    storage: Storage,
    reporter: Reporter,
    *,
    environ: Mapping[str, str],
    identity: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run one notebook; never raises, returns the outcome with its summary instead."""
    signals = _SignalRouter(reporter)
    run = _Run(options, storage, reporter, environ, identity or {}, signals)
    with signals.installed(options.handle_signals):
        try:
            if options.handle_signals:
                signals.replay_early()
            run.prepare()
            assert run.targets is not None
            reporter.info(
                f"running {display_uri(options.input)} -> {run.targets.notebook.uri} "
                f"with kernel {run.kernel_name}"
            )
            asyncio.run(run.execute())
        except RunnerError as exc:
            run.failure = exc
            if reporter.debug:
                reporter.error(traceback.format_exc())
            reporter.error(exc.message)
        except Exception as exc:
            run.failure = InternalError(f"{type(exc).__name__}: {exc}")
            if reporter.debug:
                reporter.error(traceback.format_exc())
            reporter.error(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for the "
                "traceback, and please report it)"
            )
        signals.saving = True
        storage_problem = _save(run, reporter)
    return _outcome(run, storage_problem, reporter)


def _save(run: _Run, reporter: Reporter) -> StorageError | None:
    if run.nb is None:
        return None
    run.finalize_notebook()
    try:
        run.save_final()
    except StorageError as exc:
        reporter.error(f"the output could not be saved: {exc.message}")
        return exc
    except Exception as exc:  # e.g. nbconvert failing on an odd output while rendering HTML
        reporter.error(f"the output could not be saved: {type(exc).__name__}: {exc}")
        return StorageError(f"{type(exc).__name__}: {exc}")
    return None


def _outcome(run: _Run, storage_problem: StorageError | None, reporter: Reporter) -> RunOutcome:
    duration = time.time() - run.started
    failure = run.failure
    if failure is None and storage_problem is not None:
        failure = storage_problem
    exit_code = failure.exit_code if failure is not None else ExitCode.OK
    details = run.redactor.tree(failure.details()) if failure is not None else None
    if details is not None and storage_problem is not None and failure is not storage_problem:
        details["storageError"] = storage_problem.message
    results = json_safe(run.redactor.tree(collect_results(run.nb))) if run.nb is not None else {}
    targets = run.targets
    saved = (
        run.nb is not None
        and storage_problem is None
        and targets is not None
        and targets.notebook.scheme != "-"
    )
    output_url = targets.notebook.uri if saved and targets is not None else None
    early = run.early_exit() if failure is None else None
    environ = run.environ
    page = viewer_link(
        output_url or "", environ.get(ENV_VIEWER_URL, ""), environ.get(ENV_VIEWER_ROOT, "")
    )
    summary = build_summary(
        exit_code=exit_code,
        output_url=output_url,
        results=results,
        failure=details,
        duration_seconds=duration,
        early_exit=early,
        viewer_url=page,
    )
    if exit_code is ExitCode.OK and targets is not None:
        how = f" ({early['message']})" if early is not None else ""
        reporter.info(f"succeeded in {duration:.2f}s{how}; output: {targets.notebook.uri}")
    if page is not None:
        reporter.info(f"read it at {page}")
    return RunOutcome(exit_code, output_url, results, details, duration, summary)
