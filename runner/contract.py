"""The contract between the runner and whatever launched it (the operator, a shell, CI).

Dependency-free on purpose: the operator imports this module to build the runner's command line
and to read the summary it leaves behind, and must not pull in nbclient or boto3 for that.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = [
    "ENV_RUN_IDENTITY",
    "ENV_SECRET_PARAMS",
    "ENV_TERMINATION_MESSAGE_PATH",
    "RECORD_MIMETYPE",
    "SCRAPBOOK_MIMETYPES",
    "SUMMARY_LIMIT",
    "ExitCode",
    "Summary",
    "build_summary",
    "parse_secret_params",
    "parse_summary",
]

#: Where the summary goes when `--termination-message-path` is not given.
ENV_TERMINATION_MESSAGE_PATH = "KUBEMILL_TERMINATION_MESSAGE_PATH"
#: Secret parameters as `name=ENV_VAR,name2=ENV_VAR2`, so the operator never puts values in args.
ENV_SECRET_PARAMS = "KUBEMILL_SECRET_PARAMS"
#: Environment variables (set by the operator through the downward API) copied into lineage.
ENV_RUN_IDENTITY = {
    "run": "KUBEMILL_RUN_NAME",
    "runUid": "KUBEMILL_RUN_UID",
    "namespace": "KUBEMILL_POD_NAMESPACE",
    "pod": "KUBEMILL_POD_NAME",
    "node": "KUBEMILL_NODE_NAME",
    "job": "KUBEMILL_JOB_NAME",
    # What made the run, when something did: the viewer links a notebook to them.
    "schedule": "KUBEMILL_SCHEDULE_NAME",
    "workflow": "KUBEMILL_WORKFLOW_NAME",
    "step": "KUBEMILL_STEP_NAME",
}

#: Mime type of a `kubemill.record(...)` display output.
RECORD_MIMETYPE = "application/vnd.kubemill.record+json"
#: scrapbook's `glue` mime types for JSON- and text-encoded scraps.
SCRAPBOOK_MIMETYPES = (
    "application/scrapbook.scrap.json+json",
    "application/scrapbook.scrap.text+json",
)

#: Kubernetes truncates a termination message at 4096 bytes; stay inside it.
SUMMARY_LIMIT = 4096


class ExitCode(enum.IntEnum):
    """Process exit codes; each failure kind has its own so a Job's pod status tells them apart."""

    OK = 0
    INTERNAL = 1  # a bug in kubemill: the message asks for a report
    BAD_INPUT = 2  # arguments, parameters, notebook or kernel name are wrong; fix and rerun
    CELL_ERROR = 10  # a cell raised an exception
    CELL_TIMEOUT = 11  # a cell ran longer than --cell-timeout
    RUN_TIMEOUT = 12  # the whole run ran longer than --timeout
    KERNEL_DIED = 13  # the kernel process died (os._exit, segfault, OOM kill) or never started
    STORAGE = 14  # reading the input or writing the output failed
    TERMINATED = 15  # SIGTERM or SIGINT (pod deleted, Job deadline, Ctrl-C)

    @property
    def reason(self) -> str:
        """The CamelCase reason used in the summary, the run status and Events."""
        return _REASONS[self]


_REASONS = {
    ExitCode.OK: "Succeeded",
    ExitCode.INTERNAL: "InternalError",
    ExitCode.BAD_INPUT: "BadInput",
    ExitCode.CELL_ERROR: "CellError",
    ExitCode.CELL_TIMEOUT: "CellTimeout",
    ExitCode.RUN_TIMEOUT: "RunTimeout",
    ExitCode.KERNEL_DIED: "KernelDied",
    ExitCode.STORAGE: "StorageError",
    ExitCode.TERMINATED: "Terminated",
}


def parse_secret_params(text: str) -> dict[str, str]:
    """Parse `name=ENV_VAR[,name=ENV_VAR…]` into {parameter name: environment variable name}."""
    pairs: dict[str, str] = {}
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, env = item.partition("=")
        if not sep or not name.strip() or not env.strip():
            raise ValueError(
                f"secret parameter {item!r} is not NAME=ENV_VAR; write e.g. db_password=DB_PASSWORD"
            )
        pairs[name.strip()] = env.strip()
    return pairs


class _Invalid:
    """A field's value that is present but of the wrong type: it reads as missing."""


_INVALID: Any = _Invalid()


def _wire(key: str, read: Callable[[Any], Any], *, omit_empty: bool = False) -> dict[str, Any]:
    """A summary field's JSON key, how to read it from untrusted JSON, and whether it is left
    out of the message when empty (None, False, nothing)."""
    return {"key": key, "read": read, "omit_empty": omit_empty}


def _integer(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID


def _number(value: Any) -> Any:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else _INVALID


def _text(value: Any) -> Any:
    return value if isinstance(value, str) else _INVALID


def _flag(value: Any) -> Any:
    return value if isinstance(value, bool) else _INVALID


def _json_object(value: Any) -> Any:
    return value if isinstance(value, dict) else _INVALID


def _names(value: Any) -> Any:
    if value is True or value is False:
        return value
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return value
    return _INVALID


@dataclass(frozen=True)
class Summary:
    """The runner's summary, as the operator reads it from the pod's termination message.

    A frozen dataclass rather than a TypedDict so the reader says `summary.output_url`: the
    wire names (camelCase JSON keys) appear once, in each field's metadata below, and a typo on
    either side is a type error instead of a silently missing key. Only `exit_code` is needed to
    count as a summary; every other field has the value a reader assumes when it is missing, so
    a summary from an older or newer runner still reads.
    """

    #: The process exit code (an `ExitCode` value; an int, so a newer runner's code still reads).
    exit_code: int = field(metadata=_wire("exitCode", _integer))
    #: "Succeeded" or "Failed".
    status: str = field(default="", metadata=_wire("status", _text))
    #: The `ExitCode`'s reason: CellError, RunTimeout, …
    reason: str = field(default="", metadata=_wire("reason", _text))
    #: Where the executed notebook was saved; None when nothing was saved.
    output_url: str | None = field(default=None, metadata=_wire("outputUrl", _text))
    #: The recorded results that fit (JSON values; a result may be None).
    results: Mapping[str, Any] = field(
        default_factory=dict, metadata=_wire("results", _json_object)
    )
    #: Seconds from start to summary, to the millisecond; None when the run never started.
    duration_seconds: float | None = field(
        default=None, metadata=_wire("durationSeconds", _number, omit_empty=True)
    )
    #: The failure details (reason, message, cell, cellId, executionCount, ename, evalue,
    #: traceback), passed on whole to the run's status.failure; None when the run succeeded.
    failure: Mapping[str, Any] | None = field(
        default=None, metadata=_wire("failure", _json_object, omit_empty=True)
    )
    #: How a cell ended a successful run early with `sys.exit(0)`, `sys.exit()` or `exit()`
    #: (cell, cellId, executionCount, code, skippedCells, message); None when every cell ran.
    early_exit: Mapping[str, Any] | None = field(
        default=None, metadata=_wire("earlyExit", _json_object, omit_empty=True)
    )
    #: Names of the results left out to fit, or True when even the names did not fit;
    #: results.json has them all.
    results_truncated: list[str] | bool = field(
        default=False, metadata=_wire("resultsTruncated", _names, omit_empty=True)
    )
    #: The kubemill viewer's page of the output, when the runner was told of a viewer serving it.
    viewer_url: str | None = field(
        default=None, metadata=_wire("viewerUrl", _text, omit_empty=True)
    )
    #: The failure details did not fit even cut short and were left out.
    failure_truncated: bool = field(
        default=False, metadata=_wire("failureTruncated", _flag, omit_empty=True)
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as the termination message."""
        out: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.metadata["omit_empty"] and _empty(value):
                continue
            if isinstance(value, Mapping):
                value = dict(value)
            out[item.metadata["key"]] = value
        return out

    def encode(self) -> bytes:
        """Compact, ASCII-only JSON: a byte cut can never split a character."""
        return _encoded(self.to_json())


def _empty(value: Any) -> bool:
    """None, False or an empty list or object; a duration of 0.0 is a value."""
    if value is None or value is False:
        return True
    return isinstance(value, list | Mapping) and not value


def _encoded(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def parse_summary(message: str | bytes | None) -> Summary | None:
    """The summary in a container's termination message, or None when there is none to read.

    Never raises: the message comes from a pod, and a pod can leave anything there (nothing,
    its last log lines under `FallbackToLogsOnError`, a summary the kubelet cut at 4096 bytes,
    JSON nested past the parser's recursion limit). A JSON object with an integer `exitCode` is
    a summary; a field of the wrong type reads as missing, so one bad field costs only itself.
    """
    if not message:
        return None
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {}
    for item in fields(Summary):
        key = item.metadata["key"]
        if key in raw:
            value = item.metadata["read"](raw[key])
            if value is not _INVALID:
                values[item.name] = value
    if "exit_code" not in values:
        return None
    return Summary(**values)


def build_summary(
    *,
    exit_code: ExitCode,
    output_url: str | None,
    results: Mapping[str, Any],
    failure: Mapping[str, Any] | None,
    duration_seconds: float | None,
    early_exit: Mapping[str, Any] | None = None,
    viewer_url: str | None = None,
    limit: int = SUMMARY_LIMIT,
) -> bytes:
    """The termination message: a JSON object of at most `limit` bytes.

    Results that do not fit are dropped, largest first, and named in `resultsTruncated`, so the
    reader knows to look in results.json instead of trusting a partial dictionary silently.
    """
    details: dict[str, Any] | None = dict(failure) if failure else None
    if details is not None and isinstance(details.get("traceback"), str):
        # The traceback's last lines say what happened; the full one is in the notebook.
        details["traceback"] = details["traceback"][-1500:]
    summary = Summary(
        exit_code=int(exit_code),
        status="Succeeded" if exit_code is ExitCode.OK else "Failed",
        reason=exit_code.reason,
        output_url=output_url,
        results=dict(results),
        duration_seconds=None if duration_seconds is None else round(duration_seconds, 3),
        failure=details,
        early_exit=dict(early_exit) if early_exit else None,
        viewer_url=viewer_url,
    )
    data = summary.encode()
    if len(data) <= limit:
        return data

    kept = dict(results)
    truncated: list[str] = []
    by_size = sorted(results, key=lambda k: len(_encoded({"v": results[k]})), reverse=True)
    for name in by_size:
        del kept[name]
        truncated.append(name)
        summary = replace(summary, results=dict(kept), results_truncated=sorted(truncated))
        data = summary.encode()
        if len(data) <= limit:
            return data
    # Only the failure text (or a huge list of names) can still be too long: cut it down.
    if details is not None:
        cut = dict(details)
        for key in ("traceback", "message", "evalue"):
            if isinstance(cut.get(key), str):
                cut[key] = cut[key][:512] + "…[truncated]"
        summary = replace(summary, failure=cut)
    if truncated and len(summary.encode()) > limit:
        summary = replace(summary, results_truncated=True)
    data = summary.encode()
    if len(data) > limit:
        summary = replace(summary, failure=None, failure_truncated=True)
        data = summary.encode()
        if truncated and summary.results_truncated is True:
            # Without the failure details the names may fit after all: they say what to fetch.
            named = replace(summary, results_truncated=sorted(truncated)).encode()
            data = named if len(named) <= limit else data
    return data
