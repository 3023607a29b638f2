"""The contract between the runner and whatever launched it (the operator, a shell, CI).

Dependency-free on purpose: the operator imports this module to build the runner's command line
and to read the summary it leaves behind, and must not pull in nbclient or boto3 for that.
"""

from __future__ import annotations

import enum
import json
from typing import Any

__all__ = [
    "ENV_RUN_IDENTITY",
    "ENV_SECRET_PARAMS",
    "ENV_TERMINATION_MESSAGE_PATH",
    "RECORD_MIMETYPE",
    "SCRAPBOOK_MIMETYPES",
    "SUMMARY_LIMIT",
    "ExitCode",
    "build_summary",
    "parse_secret_params",
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


def _encoded(summary: dict[str, Any]) -> bytes:
    return json.dumps(summary, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def build_summary(
    *,
    exit_code: ExitCode,
    output_url: str | None,
    results: dict[str, Any],
    failure: dict[str, Any] | None,
    duration_seconds: float | None,
    limit: int = SUMMARY_LIMIT,
) -> bytes:
    """The termination message: a JSON object of at most `limit` bytes.

    Results that do not fit are dropped, largest first, and named in `resultsTruncated`, so the
    reader knows to look in results.json instead of trusting a partial dictionary silently.
    """
    summary: dict[str, Any] = {
        "status": "Succeeded" if exit_code is ExitCode.OK else "Failed",
        "reason": exit_code.reason,
        "exitCode": int(exit_code),
        "outputUrl": output_url,
        "results": dict(results),
    }
    if duration_seconds is not None:
        summary["durationSeconds"] = round(duration_seconds, 3)
    if failure:
        summary["failure"] = dict(failure)
        if isinstance(failure.get("traceback"), str):
            # The traceback's last lines say what happened; the full one is in the notebook.
            summary["failure"]["traceback"] = failure["traceback"][-1500:]
    data = _encoded(summary)
    if len(data) <= limit:
        return data

    truncated: list[str] = []
    by_size = sorted(results, key=lambda k: len(_encoded({"v": results[k]})), reverse=True)
    for name in by_size:
        del summary["results"][name]
        truncated.append(name)
        summary["resultsTruncated"] = sorted(truncated)
        data = _encoded(summary)
        if len(data) <= limit:
            return data
    # Only the failure text (or a huge list of names) can still be too long: cut it down.
    if "failure" in summary:
        failure_copy = dict(summary["failure"])
        for key in ("traceback", "message", "evalue"):
            if isinstance(failure_copy.get(key), str):
                failure_copy[key] = failure_copy[key][:512] + "…[truncated]"
        summary["failure"] = failure_copy
    if len(_encoded(summary)) > limit:
        summary["resultsTruncated"] = True
    data = _encoded(summary)
    if len(data) > limit:
        summary.pop("failure", None)
        summary["failureTruncated"] = True
        data = _encoded(summary)
    return data
