"""One run folder as the runs view shows it: `parse_run` reads what the runner wrote.

The runner writes a run folder's files in this order (`kubemill.runner.run`): `output.ipynb`
(checkpoints while the notebook runs, then the final notebook), `results.json`, `run.json`. So
`run.json` is the run's commit marker: once it exists the other two are final, and a folder with
`output.ipynb` alone is a run in progress (or one killed before its final save). A run written
again into the same folder shows as the earlier run until its own run.json replaces that one.

`run.json` carries the results too (the same redacted values as `results.json`), so the index
reads one object per run; `results.json` is read only when `run.json` has no `results`
(a runner older than that field).

Pure and lenient: a run.json that is broken, partial or from another version gives a record with
what could be read and a note saying what could not, never an exception, because one bad folder
must not stop the index of 100,000 others.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubemill.runner.clock import parse_rfc3339

__all__ = [
    "OUTPUT_NAME",
    "RESULTS_NAME",
    "RUN_NAME",
    "STATUS_RUNNING",
    "STATUS_UNKNOWN",
    "RunRecord",
    "in_progress",
    "parse_run",
]

#: The names of a run folder's files, as the runner writes them.
RUN_NAME = "run.json"
RESULTS_NAME = "results.json"
OUTPUT_NAME = "output.ipynb"

#: A folder with a checkpointed notebook and no run.json yet (the runner's own word for it).
STATUS_RUNNING = "Running"
#: A run.json whose status could not be read.
STATUS_UNKNOWN = "Unknown"


@dataclass(frozen=True)
class RunRecord:
    """What the runs view shows of one run, and what it filters and searches on."""

    #: The run folder's path relative to the store's root, without a trailing slash ("" for
    #: a run written to the root itself); unique, and the stable tie-breaker of every sort.
    folder: str
    #: The NotebookRun's name (lineage identity), else the folder's last segment.
    name: str
    namespace: str | None = None
    #: What made the run, when something did (the operator passes them from the run's labels).
    schedule: str | None = None
    workflow: str | None = None
    step: str | None = None
    #: Succeeded, Failed, Prepared (papermill's --prepare-only), Running or Unknown.
    status: str = STATUS_UNKNOWN
    #: Why it failed: the ExitCode reason (CellError, RunTimeout, …); None for a success.
    reason: str | None = None
    #: The failure's one-line message.
    message: str | None = None
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None
    duration: float | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    #: Secret parameters by name only: run.json never holds their values.
    secret_parameters: tuple[str, ...] = ()
    results: Mapping[str, Any] = field(default_factory=dict)
    #: Lineage the header and the compare view link to: input URI and checksum, upstream runs,
    #: the NotebookRun's uid, job and pod, failure details, an early exit.
    detail: Mapping[str, Any] = field(default_factory=dict)
    #: The output notebook's path, when the folder has one.
    output: str | None = None
    #: The run.json version this record was read from (None: not read, retried next refresh).
    etag: str | None = None
    #: What could not be read, or was left out, in words a person reads.
    notes: tuple[str, ...] = ()


def parse_run(folder: str, run_json: bytes, results_json: bytes | None = None) -> RunRecord:
    """The record of the run in `folder` from its run.json (and results.json, when read)."""
    reader = _Reader()
    try:
        document = json.loads(run_json)
    except (ValueError, RecursionError) as exc:
        document = None
        reader.notes.append(f"run.json is not JSON ({_short(exc)})")
    if document is not None and not isinstance(document, dict):
        reader.notes.append(f"run.json is {type(document).__name__}, not an object")
        document = None
    raw: dict[str, Any] = document or {}

    identity = reader.mapping(raw, "identity")
    failure = reader.mapping(raw, "failure")
    input_ = reader.mapping(raw, "input")
    start = reader.time(raw, "startTime")
    end = reader.time(raw, "endTime")
    duration = reader.number(raw, "durationSeconds")
    if duration is None and start is not None and end is not None:
        duration = (end - start).total_seconds()

    results = _results(reader, raw, results_json)
    detail: dict[str, Any] = {}
    for key in ("uri", "sha256", "etag", "versionId"):
        value = reader.text(input_, key, where="input.")
        if value is not None:
            detail["input" + key[0].upper() + key[1:]] = value
    for key in ("runUid", "job", "pod", "node"):
        value = reader.text(identity, key, where="identity.")
        if value is not None:
            detail[key] = value
    upstream = raw.get("upstream")
    if isinstance(upstream, list):
        detail["upstream"] = [dict(item) for item in upstream if isinstance(item, dict)]
    elif upstream is not None:
        reader.notes.append("upstream is not a list; ignored")
    if failure:
        detail["failure"] = {k: v for k, v in failure.items() if k != "traceback"}
    early = reader.mapping(raw, "earlyExit")
    if early:
        detail["earlyExit"] = early
    version = reader.text(raw, "kubemillVersion")
    if version is not None:
        detail["kubemillVersion"] = version

    name = reader.text(identity, "run", where="identity.") or _last_segment(folder)
    status = reader.text(raw, "status") or STATUS_UNKNOWN
    if document is not None and "status" not in raw:
        reader.notes.append("run.json has no status")
    return RunRecord(
        folder=folder,
        name=name,
        namespace=reader.text(identity, "namespace", where="identity."),
        schedule=reader.text(identity, "schedule", where="identity."),
        workflow=reader.text(identity, "workflow", where="identity."),
        step=reader.text(identity, "step", where="identity."),
        status=status,
        reason=reader.text(failure, "reason", where="failure."),
        message=reader.text(failure, "message", where="failure."),
        start=start,
        end=end,
        duration=duration,
        parameters=reader.mapping(raw, "parameters"),
        secret_parameters=tuple(sorted(reader.mapping(raw, "secretParameters"))),
        results=results,
        detail=detail,
        output=_join(folder, OUTPUT_NAME),
        notes=tuple(reader.notes),
    )


def in_progress(folder: str, modified: datetime.datetime) -> RunRecord:
    """A folder with an output notebook and no run.json: running, or stopped before its final
    save (a SIGKILL, a node lost). Nothing is read for it, since the notebook can be large and
    is rewritten at every checkpoint; its last change stands in for the start, so it sorts
    among the newest runs while it is being written."""
    return RunRecord(
        folder=folder,
        name=_last_segment(folder),
        status=STATUS_RUNNING,
        start=modified,
        output=_join(folder, OUTPUT_NAME),
        notes=(
            f"no {RUN_NAME} yet: the run is in progress, or it stopped before its final save; "
            f"the time is the output's last checkpoint",
        ),
    )


def _results(reader: _Reader, raw: Mapping[str, Any], results_json: bytes | None) -> dict[str, Any]:
    if results_json is not None:
        try:
            results = json.loads(results_json)
        except (ValueError, RecursionError) as exc:
            reader.notes.append(f"results.json is not JSON ({_short(exc)})")
        else:
            if isinstance(results, dict):
                return results
            reader.notes.append(f"results.json is {type(results).__name__}, not an object")
    return reader.mapping(raw, "results")


class _Reader:
    """Typed reads from untrusted JSON: a value of the wrong type reads as missing, with a note."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def _wrong(self, where: str, key: str, value: Any, expected: str) -> None:
        self.notes.append(f"{where}{key} is {type(value).__name__}, not {expected}; ignored")

    def mapping(self, raw: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self._wrong(where, key, value, "an object")
            return {}
        return value

    def text(self, raw: Mapping[str, Any], key: str, where: str = "") -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self._wrong(where, key, value, "text")
            return None
        return value

    def number(self, raw: Mapping[str, Any], key: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._wrong("", key, value, "a number")
            return None
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            self._wrong("", key, value, "a finite number")
            return None
        return number

    def time(self, raw: Mapping[str, Any], key: str) -> datetime.datetime | None:
        value = raw.get(key)
        if value is None:
            return None
        moment = parse_rfc3339(value)
        if moment is None:
            self.notes.append(f"{key} {str(value)[:40]!r} is not a time; ignored")
        return moment


def _last_segment(folder: str) -> str:
    return folder.rsplit("/", 1)[-1] or "(root)"


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _short(exc: Exception) -> str:
    return str(exc)[:120]
