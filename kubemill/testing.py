"""Reading an executed notebook in a test: its results, parameters, outcome, cells and output.

A *test notebook* (or a pytest test) asserts on what another run produced:

    from kubemill.testing import read_notebook
    nb = read_notebook("s3://results/runs/extract/")
    nb.assert_succeeded()
    assert nb.result("rows") > 1000

No Kubernetes and no kernel: the notebook is read through the runner's own storage (local paths,
s3:// with the usual AWS settings and $AWS_ENDPOINT_URL, http(s)://) and results are collected
by the runner's own code, so a test sees exactly what `kubemill results` and the run's status
see. Importing this module is cheap: nbformat is loaded on the first read, boto3 on the first
s3:// read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubemill.runner.errors import BadInputError, InputNotFound, RunnerError
from kubemill.runner.storage import Location, Storage, storage_from_environ

if TYPE_CHECKING:
    from nbformat import NotebookNode

__all__ = [
    "Cell",
    "ErrorOutput",
    "Notebook",
    "NotebookNotFound",
    "NotebookUnreadable",
    "read_notebook",
    "read_run",
]


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
        """Raise AssertionError unless the run succeeded, with its reason, message and cell.

        In a test notebook this fails the test step with the tested run's own failure in the
        message, so the test's status says why the tested step failed.
        """
        if self.status == "Succeeded":
            return
        failure = self.failure
        if failure is None:
            raise AssertionError(f"{self.url}: the run's status is {self.status!r}, not Succeeded")
        where = f" in cell {failure['cellId']}" if failure.get("cellId") else ""
        raise AssertionError(
            f"{self.url}: the run failed{where}: {failure.get('reason')}: {failure.get('message')}"
        )

    def __repr__(self) -> str:
        return f"<Notebook {self.url} status={self.status} results={sorted(self.results)}>"


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
    storage = storage_from_environ(os.environ, s3_endpoint_url)
    node = _read_node(storage, location.child("output.ipynb"))
    return Notebook(
        node,
        url=location.uri,
        results=_read_object(storage, location.child("results.json")),
        lineage=_read_object(storage, location.child("run.json")),
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
