"""Testing notebooks: reading an executed notebook (its results, parameters, outcome, cells and
output), and executing one from a Python test.

A *test notebook* (or a pytest test) asserts on what another run produced:

    from kubemill.testing import read_notebook
    nb = read_notebook("s3://results/runs/extract/")
    nb.assert_succeeded()
    assert nb.result("rows") > 1000

No Kubernetes and no kernel: the notebook is read through the runner's own storage (local paths,
s3:// with the usual AWS settings and $AWS_ENDPOINT_URL, http(s)://) and results are collected
by the runner's own code, so a test sees exactly what `kubemill results` and the run's status
see.

A pytest test can also run the notebook itself, with the runner `kubemill run` uses:

    nb = execute("report.ipynb", {"region": "eu"}, cell_timeout=60)
    assert nb.result("rows") > 1000

Importing this module is cheap: nbformat is loaded on the first read, boto3 on the first s3://
read, nbclient on the first in-process `execute`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubemill.runner.contract import ExitCode, Summary, parse_summary
from kubemill.runner.errors import BadInputError, InputNotFound, RunnerError
from kubemill.runner.storage import Location, Storage, storage_from_environ

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from kubemill.runner.run import RunOptions

__all__ = [
    "Cell",
    "ErrorOutput",
    "ExecutedNotebook",
    "Notebook",
    "NotebookFailed",
    "NotebookNotFound",
    "NotebookNotRun",
    "NotebookUnreadable",
    "execute",
    "read_notebook",
    "read_run",
]

#: Lines of a failed cell's traceback that a failure message repeats: the end, where the
#: exception was raised, which is what a reader of a test report looks for first.
TRACEBACK_LINES = 8


class NotebookUnreadable(Exception):
    """A notebook, results.json or run.json could not be read or is not what it should be.

    The message names the URL and the cause: access denied, an unreachable endpoint, a file
    that is not a notebook. A test that fails with it failed before asserting anything.
    """

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"cannot read {url}: {why}")
        self.url = url


class NotebookNotFound(NotebookUnreadable, LookupError):
    """Nothing exists at the URL: a wrong path, or the run being tested has not written yet."""


class NotebookFailed(AssertionError):
    """A run did not succeed: raised by `Notebook.assert_succeeded` and by `execute`.

    An AssertionError, so pytest and a test notebook report it as a failed check of the run
    rather than a crash of the test. The message names the failing cell (index in the notebook
    as written, and id), the failure's reason, the exception's class and message, and the end
    of its traceback; the failed notebook stays on `notebook` for further assertions.
    """

    def __init__(self, message: str, notebook: Notebook) -> None:
        super().__init__(message)
        #: The executed notebook, as far as it ran.
        self.notebook = notebook


class NotebookNotRun(Exception):
    """`execute` has no executed notebook to return: the runner refused the input (no such
    notebook, an unknown or mistyped parameter, no such kernel) or could not save the output.

    Not an AssertionError: nothing about the notebook was checked; the test's set-up is wrong.
    """

    def __init__(
        self,
        notebook: str,
        exit_code: int,
        summary: Summary | None,
        *,
        unreadable: NotebookUnreadable | None = None,
    ) -> None:
        reason = _reason(exit_code)
        failure = summary.failure if summary is not None and summary.failure else {}
        message = failure.get("message") or (
            f"the runner exited with code {exit_code} and left no summary; its log says why"
        )
        text = f"{notebook} was not run: {reason}: {message}"
        if unreadable is not None and exit_code == ExitCode.OK:
            text = f"{notebook} ran, but its output cannot be read back: {unreadable}"
        elif unreadable is not None:
            text += f"; and its output cannot be read back: {unreadable}"
        if "--" in message:
            # The runner's message names a command-line option; execute's are the same words.
            text += (
                " (execute() takes `kubemill run`'s options as keyword arguments: "
                "--allow-unknown-parameters is allow_unknown_parameters=True)"
            )
        super().__init__(text)
        self.notebook = notebook
        #: The runner's exit code, an ExitCode value (BAD_INPUT, STORAGE, INTERNAL, ...).
        self.exit_code = exit_code
        #: "BadInput", "StorageError", ...: the reason a run's status would show.
        self.reason = reason
        #: The runner's summary, None when it left none.
        self.summary = summary


def _reason(exit_code: int) -> str:
    try:
        return ExitCode(exit_code).reason
    except ValueError:
        return f"exit code {exit_code}"


@dataclass(frozen=True)
class ErrorOutput:
    """The exception a cell raised, as the notebook recorded it."""

    ename: str
    evalue: str
    #: The traceback's lines joined, with the kernel's colour codes left in.
    traceback: str


@dataclass(frozen=True)
class Cell:
    """One cell of the notebook as written, banners and the injected-parameters cell included."""

    #: Position in the notebook as written, the same numbering as the failure's `cell`.
    index: int
    id: str
    cell_type: str
    source: str
    tags: tuple[str, ...]
    execution_count: int | None
    #: The raw nbformat outputs, for what the text does not show (images, HTML, metadata).
    outputs: tuple[Mapping[str, Any], ...]

    @property
    def outputs_text(self) -> str:
        """stdout, stderr, text/plain results and displays, and errors as `ename: evalue`, in
        order; what a person reads under the cell."""
        text = ""
        for output in self.outputs:
            kind = output.get("output_type")
            if kind == "stream":
                # Printed text arrives in arbitrary pieces; joined as it was written.
                text += str(output.get("text", ""))
                continue
            if kind == "error":
                piece = f"{output.get('ename', '')}: {output.get('evalue', '')}"
            else:
                piece = str(output.get("data", {}).get("text/plain", ""))
                if not piece:
                    continue
            if text and not text.endswith("\n"):
                text += "\n"
            text += piece + "\n"
        return text

    @property
    def error(self) -> ErrorOutput | None:
        """The exception this cell raised, or None (a failed run's cell, or any cell under
        --allow-errors)."""
        for output in self.outputs:
            if output.get("output_type") == "error":
                return ErrorOutput(
                    ename=str(output.get("ename", "")),
                    evalue=str(output.get("evalue", "")),
                    traceback="\n".join(str(line) for line in output.get("traceback", [])),
                )
        return None


class Notebook:
    """An executed notebook with what a test asserts on; made by `read_notebook` or `read_run`."""

    def __init__(
        self,
        node: NotebookNode,
        *,
        url: str,
        results: Mapping[str, Any] | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> None:
        """`results` and `lineage` default to what the notebook itself holds; `read_run` passes
        results.json and run.json instead."""
        from kubemill.runner.notebook import collect_results

        #: Where the notebook was read from, for messages.
        self.url = url
        #: The whole nbformat document, for anything the properties below leave out.
        self.node = node
        meta = node.get("metadata", {}).get("kubemill")
        #: kubemill's lineage (status, parameters, input, kernel, times, failure, identity):
        #: `metadata.kubemill`, or run.json for `read_run`; {} for a notebook kubemill did not run.
        self.lineage: dict[str, Any] = dict(
            lineage if lineage is not None else meta if isinstance(meta, Mapping) else {}
        )
        #: Everything recorded with kubemill.record or scrapbook's glue, JSON types intact (a
        #: None is a result); from the outputs, so also for notebooks papermill ran.
        self.results: dict[str, Any] = dict(
            results if results is not None else collect_results(node)
        )

    def result(self, name: str) -> Any:
        """One recorded result; a KeyError naming the recorded ones when it is missing, so a
        typo or a step that stopped early is told apart from a wrong value."""
        if name not in self.results:
            recorded = ", ".join(sorted(self.results)) or "nothing"
            raise KeyError(f"{self.url} recorded no result {name!r}; it recorded: {recorded}")
        return self.results[name]

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters the run was given (papermill's metadata, else kubemill's lineage);
        secret parameters are never written, so they are not here."""
        papermill = self.node.get("metadata", {}).get("papermill", {})
        given = papermill.get("parameters") if isinstance(papermill, Mapping) else None
        if not isinstance(given, Mapping):
            given = self.lineage.get("parameters")
        return dict(given) if isinstance(given, Mapping) else {}

    @property
    def status(self) -> str | None:
        """The run's end: Succeeded, Failed, Running (a checkpoint) or Prepared; None when
        kubemill did not run the notebook."""
        status = self.lineage.get("status")
        return status if isinstance(status, str) else None

    @property
    def failed(self) -> bool:
        return self.status == "Failed"

    @property
    def failure(self) -> dict[str, Any] | None:
        """How the run failed, as in the run's status: reason, message, cell, cellId,
        executionCount and, for a CellError, ename, evalue and traceback. None otherwise."""
        failure = self.lineage.get("failure")
        return dict(failure) if isinstance(failure, Mapping) else None

    @property
    def cells(self) -> list[Cell]:
        return [_cell(index, cell) for index, cell in enumerate(self.node.get("cells", []))]

    def cell(self, key: str) -> Cell:
        """The cell with id `key`, else the one cell tagged `key`.

        A tag on several cells is an error rather than the first of them: a test must not pass
        or fail depending on which of two cells it happened to read.
        """
        cells = self.cells
        for cell in cells:
            if cell.id == key:
                return cell
        tagged = [cell for cell in cells if key in cell.tags]
        if len(tagged) == 1:
            return tagged[0]
        if tagged:
            ids = ", ".join(cell.id for cell in tagged)
            raise ValueError(f"{self.url}: the tag {key!r} is on several cells ({ids}); use an id")
        ids = ", ".join(cell.id for cell in cells)
        tags = ", ".join(sorted({tag for cell in cells for tag in cell.tags})) or "none"
        raise KeyError(f"{self.url} has no cell with id or tag {key!r}; ids: {ids}; tags: {tags}")

    @property
    def text(self) -> str:
        """Every cell's `outputs_text`, in order: for `assert "warning" not in nb.text`."""
        return "".join(cell.outputs_text for cell in self.cells)

    def assert_succeeded(self) -> None:
        """Raise NotebookFailed (an AssertionError) unless the run succeeded, naming its reason,
        message, cell and the end of the cell's traceback.

        In a test notebook this fails the test step with the tested run's own failure in the
        message, so the test's status says why the tested step failed.
        """
        __tracebackhide__ = True  # pytest shows the test's line and this message, not ours
        if self.status == "Succeeded":
            return
        raise NotebookFailed(failure_message(self.url, self.status, self.failure), self)

    def __repr__(self) -> str:
        return f"<Notebook {self.url} status={self.status} results={sorted(self.results)}>"


class ExecutedNotebook(Notebook):
    """A notebook `execute` ran: the run folder read back like `read_run` reads it, plus what
    only the caller of the runner knows."""

    def __init__(
        self,
        node: NotebookNode,
        *,
        url: str,
        results: Mapping[str, Any],
        lineage: Mapping[str, Any],
        exit_code: int,
        summary: Summary,
    ) -> None:
        super().__init__(node, url=url, results=results, lineage=lineage)
        #: The run folder (output.ipynb, results.json, run.json), as given or made by execute.
        self.output = url
        #: The runner's exit code: what `kubemill run` would have exited with.
        self.exit_code = exit_code
        #: The runner's summary: what a NotebookRun's status would be made from.
        self.summary = summary


def failure_message(url: str, status: str | None, failure: Mapping[str, Any] | None) -> str:
    """What a failed run's assertion says: where, which reason, which exception, and the
    traceback's last lines (the cell's line that raised is usually among them)."""
    if failure is None:
        return f"{url}: the run's status is {status!r}, not Succeeded"
    where = ""
    if isinstance(failure.get("cell"), int):
        where = f" in cell {failure['cell']}"
        if failure.get("cellId"):
            where += f" (id {failure['cellId']})"
    elif failure.get("cellId"):
        where = f" in cell {failure['cellId']}"
    text = f"{url}: the run failed{where}: {failure.get('reason')}: {failure.get('message')}"
    traceback = failure.get("traceback")
    if isinstance(traceback, str):
        lines = [line for line in traceback.splitlines() if line.strip()][-TRACEBACK_LINES:]
        if lines:
            text += "\nthe traceback ends:\n" + "\n".join(f"    {line}" for line in lines)
    return text


def _cell(index: int, cell: Mapping[str, Any]) -> Cell:
    tags = cell.get("metadata", {}).get("tags", [])
    count = cell.get("execution_count")
    return Cell(
        index=index,
        id=str(cell.get("id", "")),
        cell_type=str(cell.get("cell_type", "")),
        source=str(cell.get("source", "")),
        tags=tuple(str(tag) for tag in tags) if isinstance(tags, list) else (),
        execution_count=count if isinstance(count, int) else None,
        outputs=tuple(cell.get("outputs", [])),
    )


def read_notebook(url: str, *, s3_endpoint_url: str | None = None) -> Notebook:
    """Read an executed notebook from a path, s3:// or http(s):// URL, or a run folder's
    output.ipynb when `url` ends in /; results come from its outputs.

    S3 is reached like `kubemill run` reaches it: boto3's credential chain, the endpoint from
    `s3_endpoint_url`, else $AWS_ENDPOINT_URL.
    """
    location = _location(url)
    if location.is_folder:
        location = location.child("output.ipynb")
    storage = storage_from_environ(os.environ, s3_endpoint_url)
    return Notebook(_read_node(storage, location), url=location.uri)


def read_run(folder_url: str, *, s3_endpoint_url: str | None = None) -> Notebook:
    """Read a run folder: output.ipynb, with results from results.json (complete even when the
    run's status had to leave some out) and lineage from run.json (per-cell timings included).

    A folder URL without the trailing / gets one.
    """
    location = _location(folder_url if folder_url.endswith("/") else folder_url + "/")
    node, results, lineage = _read_folder(
        storage_from_environ(os.environ, s3_endpoint_url), location
    )
    return Notebook(node, url=location.uri, results=results, lineage=lineage)


def _read_folder(
    storage: Storage, location: Location
) -> tuple[NotebookNode, dict[str, Any], dict[str, Any]]:
    """A run folder's output.ipynb, results.json and run.json."""
    return (
        _read_node(storage, location.child("output.ipynb")),
        _read_object(storage, location.child("results.json")),
        _read_object(storage, location.child("run.json")),
    )


def _location(url: str) -> Location:
    try:
        location = Location.parse(url)
    except BadInputError as exc:
        raise NotebookUnreadable(url, exc.message) from None
    if location.scheme == "-":
        raise NotebookUnreadable(url, "give a path or a URL; stdin holds no run")
    return location


def _read(storage: Storage, location: Location) -> bytes:
    try:
        return storage.read(location).data
    except InputNotFound as exc:
        raise NotebookNotFound(
            location.uri, f"{exc.message}; check the URL, and that the run has finished"
        ) from None
    except RunnerError as exc:
        raise NotebookUnreadable(location.uri, exc.message) from None


def _read_node(storage: Storage, location: Location) -> NotebookNode:
    from kubemill.runner.notebook import parse_notebook

    data = _read(storage, location)
    try:
        node, _ = parse_notebook(data, location.uri)
    except BadInputError as exc:
        raise NotebookUnreadable(location.uri, exc.message) from None
    return node


def _read_object(storage: Storage, location: Location) -> dict[str, Any]:
    data = _read(storage, location)
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookUnreadable(location.uri, f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise NotebookUnreadable(location.uri, "not a JSON object; was it written by kubemill?")
    return value


# --- executing -------------------------------------------------------------------------------


def execute(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    kernel: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    start_timeout: float = 60.0,
    cell_timeout: float | None = None,
    timeout: float | None = None,
    allow_errors: bool = False,
    allow_unknown_parameters: bool = False,
    s3_endpoint_url: str | None = None,
    subprocess: bool = False,
    env: Mapping[str, str] | None = None,
    raise_on_failure: bool = True,
) -> ExecutedNotebook:
    """Run `notebook` with `parameters` as `kubemill run` runs it, and read the run folder back.

    `notebook` is a path or an s3:// or http(s):// URL; `output` a folder or an s3:// prefix
    that receives output.ipynb, results.json and run.json (default: a new temporary folder,
    left in place for inspection; under pytest the `kubemill_output` fixture is tidier). The
    keyword arguments are `kubemill run`'s options with the same meaning and defaults: `kernel`
    (-k), `cwd` (the kernel's working directory), `start_timeout`, `cell_timeout` and
    `timeout` (seconds; None or 0 for no limit), `allow_errors`, `allow_unknown_parameters`,
    `s3_endpoint_url`.

    In-process by default: the runner's own `run_notebook`, without its signal handlers (the
    test process keeps its own), so a run costs a kernel start and nothing more. With
    `subprocess=True` it runs `python -m kubemill run` with the same options, in a process of
    its own with `env` added to this one's environment (the run folder is still read back with
    this process's S3 settings): for a test that needs the runner's and the kernel's
    environment set, or the run kept apart from the test process entirely, as in
    a pod (the kernel is a process of its own either way; in-process, the runner's event loop,
    threads and log writing share the test's process).

    A failed run (a cell error, a timeout, a dead kernel) raises NotebookFailed, an
    AssertionError naming the cell and the exception, unless `raise_on_failure=False`; then the
    failed notebook is returned and `status`, `failure` and `exit_code` say how it ended. A run
    the runner refused (no such notebook, an unknown or mistyped parameter, no such kernel) or
    whose output it could not save raises NotebookNotRun: there is no notebook to assert on.
    """
    __tracebackhide__ = True  # a failure's report starts at the test's call
    if env is not None and not subprocess:
        raise ValueError(
            "env= sets the runner's and the kernel's environment, which only a process of their "
            "own can have: pass subprocess=True too, or set the variables in this process "
            "(pytest's monkeypatch.setenv) for an in-process run"
        )
    request = _make_request(
        notebook,
        parameters,
        output=output,
        kernel=kernel,
        cwd=cwd,
        start_timeout=start_timeout,
        cell_timeout=cell_timeout,
        timeout=timeout,
        allow_errors=allow_errors,
        allow_unknown_parameters=allow_unknown_parameters,
        s3_endpoint_url=s3_endpoint_url,
    )
    source = request.notebook
    if subprocess:
        exit_code, summary = _run_subprocess(request, _child_environ(env))
    else:
        exit_code, summary = _run_in_process(request)
    if exit_code == ExitCode.BAD_INPUT or summary is None:
        raise NotebookNotRun(source, exit_code, summary)
    location = Location.parse(request.output)
    # Read back as read_run reads, with this process's S3 settings: boto3 takes credentials
    # from this process's environment, whatever `env` gave the runner.
    try:
        node, results, lineage = _read_folder(
            storage_from_environ(os.environ, s3_endpoint_url), location
        )
    except NotebookUnreadable as exc:
        raise NotebookNotRun(source, exit_code, summary, unreadable=exc) from None
    executed = ExecutedNotebook(
        node,
        url=location.uri,
        results=results,
        lineage=lineage,
        exit_code=exit_code,
        summary=summary,
    )
    if exit_code != ExitCode.OK and executed.status == "Succeeded":
        # The notebook ran, but something after it (results.json, the HTML page) was not saved.
        raise NotebookNotRun(source, exit_code, summary)
    if raise_on_failure:
        executed.assert_succeeded()
    return executed


@dataclass(frozen=True)
class _Request:
    """What `execute` was asked, checked: one value that both ways of running are built from."""

    notebook: str
    output: str  # a run folder, ending in /
    parameters: dict[str, Any]  # JSON shapes, as the runner normalizes them
    kernel: str | None
    cwd: str | None
    start_timeout: float
    cell_timeout: float | None
    timeout: float | None
    allow_errors: bool
    allow_unknown_parameters: bool
    s3_endpoint_url: str | None


def _make_request(
    notebook: str | os.PathLike[str],
    parameters: Mapping[str, Any] | None,
    *,
    output: str | os.PathLike[str] | None,
    kernel: str | None,
    cwd: str | os.PathLike[str] | None,
    start_timeout: float,
    cell_timeout: float | None,
    timeout: float | None,
    allow_errors: bool,
    allow_unknown_parameters: bool,
    s3_endpoint_url: str | None,
) -> _Request:
    """execute's arguments checked before anything runs, so a mistake is a Python error naming
    the argument, the same in both ways of running."""
    source = os.fspath(notebook)
    if not source or source == "-":
        raise ValueError(f"notebook={source!r}: give a path or an s3:// or http(s):// URL")
    values = _parameter_values(parameters)
    limits = (
        _seconds("start_timeout", start_timeout),
        _limit("cell_timeout", cell_timeout),
        _limit("timeout", timeout),
    )
    return _Request(
        notebook=source,
        # Last: a temporary folder is made only for arguments that are right.
        output=_output_folder(output, source),
        parameters=values,
        kernel=kernel,
        cwd=os.fspath(cwd) if cwd is not None else None,
        start_timeout=limits[0],
        cell_timeout=limits[1],
        timeout=limits[2],
        allow_errors=allow_errors,
        allow_unknown_parameters=allow_unknown_parameters,
        s3_endpoint_url=s3_endpoint_url,
    )


def _parameters_json(request: _Request) -> str:
    """The parameters file a subprocess run reads with --parameters-json-file."""
    return json.dumps(request.parameters)


def _run_options(request: _Request) -> RunOptions:
    """The runner's options for an in-process run: what `kubemill run`'s command line from
    `_command` means (a unit test holds the two together), without the signal handlers."""
    from kubemill.runner.run import RunOptions

    return RunOptions(
        input=request.notebook,
        output=request.output,
        parameters=request.parameters,
        allow_unknown_parameters=request.allow_unknown_parameters,
        kernel_name=request.kernel,
        cwd=request.cwd,
        start_timeout=request.start_timeout,
        cell_timeout=request.cell_timeout or None,
        run_timeout=request.timeout or None,
        allow_errors=request.allow_errors,
        handle_signals=False,
    )


def _command(request: _Request, parameters_file: str | None, summary_file: str) -> list[str]:
    """`kubemill run`'s arguments for `request`. Parameters go in a JSON file: a command line
    holds at most 128 KiB per argument, and JSON keeps every value's type."""
    args = ["run", "--termination-message-path", summary_file]
    args += ["--start-timeout", repr(request.start_timeout)]
    if parameters_file is not None:
        args += ["--parameters-json-file", parameters_file]
    if request.kernel is not None:
        args += ["--kernel", request.kernel]
    if request.cwd is not None:
        args += ["--cwd", request.cwd]
    if request.cell_timeout is not None:
        args += ["--cell-timeout", repr(request.cell_timeout)]
    if request.timeout is not None:
        args += ["--timeout", repr(request.timeout)]
    if request.allow_errors:
        args.append("--allow-errors")
    if request.allow_unknown_parameters:
        args.append("--allow-unknown-parameters")
    if request.s3_endpoint_url is not None:
        args += ["--s3-endpoint-url", request.s3_endpoint_url]
    # After --, a notebook named like an option is still the notebook.
    return [*args, "--", request.notebook, request.output]


def _run_in_process(request: _Request) -> tuple[int, Summary | None]:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "execute() runs the notebook with an event loop of its own, and this thread is "
            "already running one: call it in a thread (await asyncio.to_thread(execute, ...)) "
            "or pass subprocess=True"
        )
    from kubemill.runner.progress import Reporter
    from kubemill.runner.run import run_notebook

    storage = storage_from_environ(os.environ, request.s3_endpoint_url)
    outcome = run_notebook(_run_options(request), storage, Reporter(), environ=os.environ)
    return int(outcome.exit_code), parse_summary(outcome.summary)


def _child_environ(env: Mapping[str, str] | None) -> dict[str, str]:
    """This process's environment with `env` on top, less the secret parameters a runner would
    read from it: execute takes none, and the in-process run reads none."""
    from kubemill.runner.contract import ENV_SECRET_PARAMS

    environ = {**os.environ, **(env or {})}
    environ.pop(ENV_SECRET_PARAMS, None)
    return environ


def _run_subprocess(request: _Request, environ: Mapping[str, str]) -> tuple[int, Summary | None]:
    import subprocess

    with tempfile.TemporaryDirectory(prefix="kubemill-execute-") as scratch:
        summary_file = os.path.join(scratch, "summary.json")
        parameters_file = None
        if request.parameters:
            parameters_file = os.path.join(scratch, "parameters.json")
            Path(parameters_file).write_text(_parameters_json(request), encoding="utf-8")
        # -P: a working directory holding a folder named like a standard-library module (this
        # repository's operator/) must not shadow it.
        argv = [sys.executable, "-P", "-m", "kubemill"]
        argv += _command(request, parameters_file, summary_file)
        # The runner's log and the cells' output go where this process's go (pytest captures
        # them per test).
        completed = subprocess.run(argv, env=dict(environ), check=False)
        summary = None
        if os.path.exists(summary_file):
            summary = parse_summary(Path(summary_file).read_bytes())
    return completed.returncode, summary


def _parameter_values(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters as the runner will see them, checked before anything runs: a value the
    runner cannot pass (a set, an object) is a TypeError here, in both ways of running."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise TypeError(
            f"parameters must be a mapping of name to value, not {type(parameters).__name__}"
        )
    from kubemill.runner.parameters import normalize

    try:
        return normalize(parameters)
    except BadInputError as exc:
        raise TypeError(exc.message) from None


def _seconds(name: str, value: float) -> float:
    """A time option checked as `kubemill run` checks it, but before anything runs, and named
    as the caller spelt it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
    ):
        raise ValueError(f"{name}={value!r}: give 0 or more seconds")
    return float(value)


def _limit(name: str, value: float | None) -> float | None:
    """A time limit: seconds, or None (like 0) for none."""
    if value is None:
        return None
    try:
        return _seconds(name, value)
    except ValueError:
        raise ValueError(
            f"{name}={value!r}: give 0 or more seconds, or None for no limit"
        ) from None


def notebook_stem(notebook: str) -> str:
    """A folder name for a run of `notebook`: its file name without .ipynb, kept to characters
    that need no quoting in a path or an S3 key."""
    name = notebook.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    if name.endswith(".ipynb"):
        name = name[: -len(".ipynb")]
    name = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return name.strip(".") or "notebook"


def _output_folder(output: str | os.PathLike[str] | None, notebook: str) -> str:
    if output is None:
        folder = tempfile.mkdtemp(prefix=f"kubemill-{notebook_stem(notebook)}-")
        return Path(folder).as_posix() + "/"
    text = os.fspath(output)
    if not text or text == "-" or text.endswith(".ipynb"):
        raise ValueError(
            f"output={text!r}: execute writes a run folder (output.ipynb, results.json, "
            "run.json); give a folder's path or an s3:// prefix"
        )
    return text if text.endswith("/") else text + "/"
