"""A NotebookRun's status, derived from its Job, its pods and the runner's summary.

Pure functions: the handlers feed in what the watches saw and patch what comes out. A run that
reached Succeeded or Failed never leaves it; later observations may only fill in details.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

from kubemill.operator.jobs import CONTAINER

__all__ = [
    "TERMINAL",
    "condition",
    "derive_status",
    "format_duration",
    "now_rfc3339",
    "pending_status",
    "transitions",
]

TERMINAL = ("Succeeded", "Failed")
CONDITION_TYPES = ("JobCreated", "Running", "Succeeded", "Failed")


def now_rfc3339(now: datetime.datetime | None = None) -> str:
    moment = now or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def format_duration(seconds: float) -> str:
    """`45s`, `3m12s`, `2h5m`: what kubectl users read in the DURATION column."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def condition(
    kind: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int,
    previous: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """A metav1.Condition whose lastTransitionTime moves only when its status changes."""
    text = "Unknown" if status is None else ("True" if status else "False")
    before = next((c for c in previous if c.get("type") == kind), None)
    since = now
    if before is not None and before.get("status") == text:
        since = before.get("lastTransitionTime", now)
    return {
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def _summary(pod: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Mapping[str, Any] | None]:
    """The runner's summary and the container's terminated state, when the pod has ended."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER:
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if not terminated:
            return None, None
        try:
            summary = json.loads(terminated.get("message") or "")
        except ValueError:
            summary = None
        return (summary if isinstance(summary, dict) else None), terminated
    return None, None


def _waiting_problem(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the newest pod cannot start (a missing Secret, an image that cannot be pulled)."""
    for pod in pods[-1:]:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") and waiting["reason"] != "ContainerCreating":
                return f"{waiting['reason']}: {waiting.get('message', '')}".strip(": ")
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"Unschedulable: {cond.get('message', '')}".strip(": ")
    return None


def _job_condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in job.get("status", {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            found: Mapping[str, Any] = cond
            return found
    return None


def _by_age(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(
        pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"])
    )


def _failure(
    job_failed: Mapping[str, Any],
    summary: dict[str, Any] | None,
    terminated: Mapping[str, Any] | None,
    spec: Mapping[str, Any],
) -> tuple[str, str, dict[str, Any]]:
    """Reason, message and failure details of a failed run, most specific source first."""
    job_reason = job_failed.get("reason", "Failed")
    if job_reason == "JobDeleted":
        message = str(job_failed.get("message"))
        failure = {**((summary or {}).get("failure") or {}), "reason": job_reason}
        failure["message"] = message
        return job_reason, message, failure
    if job_reason == "DeadlineExceeded":
        message = (
            f"the run exceeded spec.timeout ({spec.get('timeout')}) and was stopped; "
            "raise spec.timeout or make the notebook faster"
        )
        failure = dict((summary or {}).get("failure") or {})
        failure.update(reason="RunTimeout", message=message)
        return "RunTimeout", message, failure
    if terminated and terminated.get("reason") == "OOMKilled":
        # The runtime saw the memory cgroup kill a process of the container. Most often that is
        # the kernel, and the runner survives to report KernelDied; the limit is the cause the
        # user can act on, the runner's account (which cell) stays in the details.
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        message = (
            "the notebook used more memory than the container's limit"
            + (f" ({limit})" if limit else "")
            + " and was killed; raise spec.resources.limits.memory or use less memory"
        )
        ran = dict((summary or {}).get("failure") or {})
        if ran.get("cell") is not None:
            message += f" (while running cell {ran['cell']})"
        return "OOMKilled", message, {**ran, "reason": "OOMKilled", "message": message}
    if summary and summary.get("failure"):
        failure = dict(summary["failure"])
        reason = str(failure.get("reason") or summary.get("reason") or job_reason)
        message = str(failure.get("message") or reason)
        if job_reason == "BackoffLimitExceeded" and int(spec.get("retries", 0)) > 0:
            message += f" (after {int(spec.get('retries', 0)) + 1} attempts)"
        return reason, message, failure
    if terminated:
        code = terminated.get("exitCode")
        message = f"the runner exited with code {code} without a summary ({job_reason})"
        return "RunnerFailed", message, {"reason": "RunnerFailed", "message": message}
    message = str(job_failed.get("message") or job_reason)
    return job_reason, message, {"reason": job_reason, "message": message}


def pending_status(run: Mapping[str, Any], job_name: str, now: str) -> dict[str, Any]:
    """The status right after the Job was created (or adopted)."""
    return derive_status(run, {"metadata": {"name": job_name}, "status": {}}, [], now)


def derive_status(
    run: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: str,
) -> dict[str, Any]:
    """The complete status the run should have, given its Job and pods as last seen."""
    old: Mapping[str, Any] = run.get("status") or {}
    generation = int(run["metadata"].get("generation", 1))
    spec = run.get("spec") or {}
    previous = old.get("conditions") or []
    status: dict[str, Any] = {
        k: v for k, v in old.items() if k not in ("conditions", "observedGeneration")
    }
    status["observedGeneration"] = generation
    pods = _by_age(pods)
    summary, terminated = (None, None)
    for pod in reversed(pods):
        summary, terminated = _summary(pod)
        if terminated is not None:
            break
    if summary:
        # The latest attempt's account replaces an earlier one's, results included.
        if summary.get("outputUrl") is not None:
            status["outputUrl"] = summary["outputUrl"]
        status["results"] = dict(summary.get("results") or {})
        if summary.get("resultsTruncated"):
            status["resultsTruncated"] = summary["resultsTruncated"]
        else:
            status.pop("resultsTruncated", None)

    terminal = old.get("phase") in TERMINAL
    if job is not None:
        job_status = job.get("status") or {}
        status["jobName"] = job["metadata"]["name"]
        if job_status.get("startTime"):
            status.setdefault("startTime", job_status["startTime"])
        attempts = sum(int(job_status.get(k) or 0) for k in ("active", "succeeded", "failed"))
        status["attempts"] = max(attempts, len(pods), int(old.get("attempts") or 0))

    if not terminal and job is not None:
        complete = _job_condition(job, "Complete")
        failed = _job_condition(job, "Failed")
        if job["metadata"].get("deletionTimestamp") and not (complete or failed):
            # Someone deleted the Job before it finished; our finalizer kept it to tell us.
            failed = {
                "reason": "JobDeleted",
                "message": "the Job was deleted before the notebook finished; create a new "
                "NotebookRun to run it again",
            }
        running = any(p.get("status", {}).get("phase") == "Running" for p in pods[-1:])
        if complete:
            status.update(phase="Succeeded", reason="Succeeded", message="the notebook ran")
            status["completionTime"] = (job.get("status") or {}).get("completionTime") or now
            status.pop("failure", None)
        elif failed:
            reason, message, failure = _failure(failed, summary, terminated, spec)
            status.update(phase="Failed", reason=reason, message=message, failure=failure)
            status["completionTime"] = failed.get("lastTransitionTime") or now
        elif running:
            status.update(phase="Running", reason="Running", message="the notebook is running")
        else:
            problem = _waiting_problem(pods)
            status.update(
                phase="Pending",
                reason="PodProblem" if problem else "Pending",
                message=problem or "waiting for the runner pod to start",
            )
    elif not terminal:
        status.setdefault("phase", "Pending")
        status.setdefault("reason", "Pending")
        status.setdefault("message", "creating the Job")
    elif summary and summary.get("failure") and "failure" in status:
        # A terminal run may still learn the runner's own account of the failure.
        status["failure"] = {**summary["failure"], **status["failure"]}

    if status.get("phase") in TERMINAL and status.get("startTime") and status.get("completionTime"):
        start, end = _parse_time(status["startTime"]), _parse_time(status["completionTime"])
        if start and end:
            status["duration"] = format_duration((end - start).total_seconds())

    phase = status.get("phase", "Pending")
    reason, message = status.get("reason", phase), status.get("message", "")
    # A Job deleted after the run ended (its TTL) was still created: the condition stays.
    created = job is not None or bool(status.get("jobName"))
    status["conditions"] = [
        condition(
            "JobCreated",
            created,
            "JobCreated" if created else "Pending",
            f"Job {status['jobName']}" if created else "creating the Job",
            generation,
            previous,
            now,
        ),
        condition("Running", phase == "Running", reason, message, generation, previous, now),
        condition(
            "Succeeded",
            True if phase == "Succeeded" else (False if phase == "Failed" else None),
            reason,
            message,
            generation,
            previous,
            now,
        ),
        condition("Failed", phase == "Failed", reason, message, generation, previous, now),
    ]
    return status


def transitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Events (type, reason, message) for what changed between two statuses."""
    events: list[tuple[str, str, str]] = []
    if new.get("jobName") and new.get("jobName") != old.get("jobName"):
        events.append(("Normal", "JobCreated", f"created Job {new['jobName']}"))
    before, after = old.get("phase"), new.get("phase")
    if after == before:
        problem = after == "Pending" and new.get("reason") == "PodProblem"
        if problem and new.get("message") != old.get("message"):
            events.append(("Warning", "PodProblem", str(new.get("message"))))
        return events
    if after == "Running":
        events.append(("Normal", "Running", "the runner pod is executing the notebook"))
    elif after == "Succeeded":
        where = f"; output: {new['outputUrl']}" if new.get("outputUrl") else ""
        events.append(
            ("Normal", "Succeeded", f"the notebook ran in {new.get('duration', '?')}{where}")
        )
    elif after == "Failed":
        events.append(("Warning", str(new.get("reason", "Failed")), str(new.get("message", ""))))
    return events
