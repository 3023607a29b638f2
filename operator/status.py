"""A NotebookRun's status, derived from its Job, its pods and the runner's summary.

Pure functions: the handlers feed in what the watches saw and patch what comes out. A run that
reached Succeeded or Failed never leaves it; later observations may only fill in details.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubemill.runner import __version__
from kubemill.runner.contract import Summary, parse_summary
from kubemill.runner.links import viewer_link

from .jobs import COMMAND_NOT_FOUND, CONTAINER
from .spec import parse_duration
from .times import parse_rfc3339

__all__ = [
    "PROBLEM_REASONS",
    "START_FAILURES",
    "TERMINAL",
    "Problem",
    "StartLimit",
    "condition",
    "derive_status",
    "format_duration",
    "job_unfinished",
    "pending_status",
    "runner_running",
    "start_deadline",
    "start_limit",
    "start_pending",
    "transitions",
]

TERMINAL = ("Succeeded", "Failed")
CONDITION_TYPES = ("JobCreated", "Running", "Succeeded", "Failed")
#: Pending reasons that name what keeps a run from starting; each new message is also a Warning
#: Event. PodProblem: the pod exists but cannot start (a missing Secret or ConfigMap, an image
#: that cannot be pulled, no node fits). PodNotCreated: the job controller cannot create the pod
#: (a missing ServiceAccount, a quota, Pod Security). JobNotCreated: the API server refused the
#: Job in a way that may pass (a quota on Jobs, the operator's own RBAC); it is retried.
PROBLEM_REASONS = ("PodProblem", "PodNotCreated", "JobNotCreated")
#: Reasons of a run that failed because its runner pod did not start within its start limit
#: (spec.startTimeout or the operator's), each naming what was in the way, so that `kubectl get`
#: and alert rules tell a registry problem from a missing Secret from a full cluster:
#: ImagePullFailed (the image cannot be pulled: its name, the registry, its credentials),
#: ConfigError (the pod names a Secret, ConfigMap or key that does not exist, or a setting the
#: kubelet refuses), Unschedulable (no node takes the pod: nodeSelector, affinity, tolerations,
#: resources; or the nodes an autoscaler adds came too late), PodNotCreated (the job controller
#: cannot create the pod: a missing ServiceAccount, a quota, Pod Security), StartTimeout (none of
#: these was seen: the pod was still being created, or the limit was spec.timeout's, see _failure).
START_FAILURES = (
    "ImagePullFailed",
    "ConfigError",
    "Unschedulable",
    "PodNotCreated",
    "StartTimeout",
)
#: The kubelet's waiting reasons of a container whose image cannot be pulled.
_IMAGE_PULL = (
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
    "SignatureValidationFailed",
)
#: The kubelet's waiting reason of a container whose configuration it cannot build: a Secret,
#: ConfigMap or key its environment names is missing, or runAsNonRoot meets a root image.
_CONFIG = ("CreateContainerConfigError",)
#: Terminated reasons of a container whose process never ran (the runtime could not start it,
#: or the pod was stopped before it was started).
_NEVER_RAN = ("StartError", "ContainerCannotRun", "ContainerStatusUnknown")


@dataclass(frozen=True)
class Problem:
    """A Warning Event about a run's Job or pod that says why the runner does not start: the job
    controller's FailedCreate, the kubelet's FailedMount. Such causes appear only as Events,
    never in the Job's or the pod's status, so the operator watches for them and hands them in.
    """

    #: The uid of the Job or pod the Event is about.
    uid: str
    #: "Job" or "Pod".
    kind: str
    #: The Event's reason (FailedCreate, FailedMount).
    reason: str
    message: str
    #: When it was last seen (the Event's lastTimestamp, RFC 3339), to tell it from older pods.
    seen: str


@dataclass(frozen=True)
class Blocker:
    """What keeps a run's runner from starting, as last seen."""

    #: The Pending reason that shows it (PROBLEM_REASONS).
    pending: str
    #: The run's reason should its start limit pass now (START_FAILURES).
    cause: str
    message: str


@dataclass(frozen=True)
class StartLimit:
    """How long a run's pod may take to start, and how a message names that limit."""

    seconds: float
    source: str


def start_limit(spec: Mapping[str, Any], default: float | None) -> StartLimit | None:
    """The run's own spec.startTimeout, else the operator's `default` (None: no limit)."""
    text = spec.get("startTimeout")
    if text:
        return StartLimit(parse_duration(text, "spec.startTimeout"), f"spec.startTimeout ({text})")
    if default is None:
        return None
    return StartLimit(default, f"the operator's start timeout ({format_duration(default)})")


def start_deadline(job: Mapping[str, Any], limit: StartLimit | None) -> datetime.datetime | None:
    """When the run fails if its runner has not started by then: `limit` after its Job was
    created. From the Job's creation, not from the first problem seen: that moment is written in
    the cluster, so an operator restarted meanwhile computes the same deadline; problems come and
    go (a FailedMount that clears, then an image pull that fails), and a first sighting would
    restart the clock with each; and a pod the job controller cannot create has no creation of
    its own to count from. Not from the run's creation either: a run that waits for the runs it
    takes values from (phase Waiting) has no Job yet, and may wait for hours on purpose."""
    created = parse_rfc3339(job["metadata"].get("creationTimestamp"))
    if limit is None or created is None:
        return None
    return created + datetime.timedelta(seconds=limit.seconds)


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


def _summary(pod: Mapping[str, Any]) -> tuple[Summary | None, Mapping[str, Any] | None]:
    """The runner's summary and the container's terminated state, when the pod has ended."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER:
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if not terminated:
            return None, None
        return parse_summary(terminated.get("message")), terminated
    return None, None


def _ran(summary: Summary | None) -> dict[str, Any]:
    """The runner's own failure details, as a fresh dict to amend; empty without them."""
    return dict(summary.failure or {}) if summary is not None else {}


def _waiting_problem(pods: Sequence[Mapping[str, Any]]) -> Blocker | None:
    """Why the newest pod cannot start (a missing Secret, an image that cannot be pulled, no
    node that fits), from its status: the kubelet's waiting reason, the scheduler's condition."""
    for pod in pods[-1:]:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason and reason != "ContainerCreating":
                message = f"{reason}: {waiting.get('message', '')}".strip(": ")
                cause = (
                    "ImagePullFailed" if reason in _IMAGE_PULL
                    else "ConfigError" if reason in _CONFIG
                    else "StartTimeout"
                )  # fmt: skip
                return Blocker("PodProblem", cause, message)
        for cond in pod.get("status", {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                message = f"Unschedulable: {cond.get('message', '')}".strip(": ")
                return Blocker("PodProblem", "Unschedulable", message)
    return None


def _runner_state(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            found: Mapping[str, Any] = status
            return found
    return {}


def _runner_ran(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's runner process ever ran: it runs now, or it ended (now or in an earlier
    restart) after the runtime had started it."""
    status = _runner_state(pod)
    for state in (status.get("state") or {}, status.get("lastState") or {}):
        if state.get("running"):
            return True
        terminated = state.get("terminated") or {}
        if terminated and terminated.get("reason") not in _NEVER_RAN:
            return True
    return False


def runner_running(pod: Mapping[str, Any]) -> bool:
    """Whether the pod's runner was running when last seen, so its summary (the termination
    message) is still to come: the Job can say Complete, or Failed past its deadline, while the
    pod watch has not yet delivered the runner's end, and releasing the pod then would lose it."""
    if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
        return False
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return "running" in (status.get("state") or {})
    return False


def job_unfinished(job: Mapping[str, Any]) -> bool:
    """Whether the Job, as the watch shows it, still works at its run: neither Complete nor
    Failed, nor being deleted. (A Job created or adopted this pass, not seen yet, has no uid.)"""
    if not job["metadata"].get("uid") or job["metadata"].get("deletionTimestamp"):
        return False
    return not (_job_condition(job, "Complete") or _job_condition(job, "Failed"))


def end_unseen(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the Job has ended while none of `pods` shows how its runner ended. The pod
    watch lags the Job watch (always just after a restart, often in a burst), and a status
    written from what was seen would end the run without its results or the runner's account
    of a failure, while the runs that take values from it read them as soon as it ends."""
    if not (_job_condition(job, "Complete") or _job_condition(job, "Failed")):
        return False
    return all(_summary(pod)[1] is None for pod in pods)


def _stopping(pod: Mapping[str, Any]) -> bool:
    meta, phase = pod["metadata"], pod.get("status", {}).get("phase")
    return bool(meta.get("deletionTimestamp")) or phase in ("Succeeded", "Failed")


def _still_blocked(old: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the last status's problem still stands when nothing current says otherwise: the
    pod it was about is stopping, or (the job controller's problem) no pod was ever created."""
    if not pods:
        return old.get("reason") == "PodNotCreated"
    return old.get("reason") == "PodProblem" and _stopping(pods[-1])


def _event_problem(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], problems: Sequence[Problem]
) -> Blocker | None:
    """What a reported problem that still holds says: a FailedMount of the newest pod
    while its runner has not run, or a FailedCreate of the Job while it has no live pod and none
    created since. Pods sorted oldest first."""
    newest = pods[-1] if pods else None
    if newest is not None and newest.get("status", {}).get("phase", "Pending") == "Pending":
        uid = newest["metadata"].get("uid")
        mine = [p for p in problems if p.kind == "Pod" and p.uid == uid]
        if mine and not _runner_ran(newest):
            latest = max(mine, key=lambda p: p.seen)
            # A FailedMount: the pod's volumes are ConfigMaps (the notebook, the parameters).
            return Blocker("PodProblem", "ConfigError", f"{latest.reason}: {latest.message}")
    uid = job["metadata"].get("uid")
    creates = [p for p in problems if p.kind == "Job" and p.uid == uid]
    if not creates or uid is None:
        return None
    latest = max(creates, key=lambda p: p.seen)
    live = any(p.get("status", {}).get("phase") in (None, "Pending", "Running") for p in pods)
    newer = any((p["metadata"].get("creationTimestamp") or "") >= latest.seen for p in pods)
    if live or newer:
        return None
    message = f"the Job cannot create the runner pod: {latest.message}"
    return Blocker("PodNotCreated", "PodNotCreated", message)


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


#: How runtimes say a container's command is not in its image (runc, crun: `exec: "kubemill":
#: executable file not found in $PATH`; a script whose interpreter is missing: `no such file or
#: directory`), and the exit code of a shell that did not find it.
_NOT_FOUND = ("executable file not found", "no such file or directory")


def _runner_not_in_image(terminated: Mapping[str, Any]) -> bool:
    if terminated.get("exitCode") == COMMAND_NOT_FOUND:
        return True
    said = str(terminated.get("message") or "").lower()
    return terminated.get("reason") == "StartError" and any(s in said for s in _NOT_FOUND)


def _failure(
    job_failed: Mapping[str, Any],
    summary: Summary | None,
    terminated: Mapping[str, Any] | None,
    spec: Mapping[str, Any],
    blocker: str | None,
    image: str | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """Reason, message and failure details of a failed run, most specific source first.
    `blocker` is what kept the notebook from starting, when it never started (None when it
    did), or "" when nothing was reported."""
    job_reason = job_failed.get("reason", "Failed")
    if job_reason == "JobDeleted":
        message = str(job_failed.get("message"))
        failure = {**_ran(summary), "reason": job_reason}
        failure["message"] = message
        return job_reason, message, failure
    if job_reason == "DeadlineExceeded" and blocker is not None:
        # No runner ever ran: the time went on getting the pod started, and more time would
        # rarely help. Say what was in the way, as last seen.
        message = (
            f"the notebook never started: spec.timeout ({spec.get('timeout')}) passed while "
            + (f"the runner pod could not start ({blocker})" if blocker else "waiting for the "
               "runner pod to start")
            + "; fix that, or raise spec.timeout if the pod only starts slowly"
        )  # fmt: skip
        return "StartTimeout", message, {"reason": "StartTimeout", "message": message}
    if job_reason == "DeadlineExceeded":
        message = (
            f"the run exceeded spec.timeout ({spec.get('timeout')}) and was stopped; "
            "raise spec.timeout or make the notebook faster"
        )
        failure = _ran(summary)
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
        ran = _ran(summary)
        if ran.get("cell") is not None:
            message += f" (while running cell {ran['cell']})"
        return "OOMKilled", message, {**ran, "reason": "OOMKilled", "message": message}
    if summary is not None and summary.failure:
        failure = _ran(summary)
        reason = str(failure.get("reason") or summary.reason or job_reason)
        message = str(failure.get("message") or reason)
        if job_reason == "BackoffLimitExceeded" and int(spec.get("retries", 0)) > 0:
            message += f" (after {int(spec.get('retries', 0)) + 1} attempts)"
        return reason, message, failure
    if terminated and _runner_not_in_image(terminated):
        said = ": ".join(str(terminated[k]) for k in ("reason", "message") if terminated.get(k))
        if said.strip() in ("", "Error"):
            said = f"exit code {terminated.get('exitCode')}: command not found"
        named = image or "the operator's runner image"
        message = (
            f"the image {named} has no kubemill runner ({said.strip()}): build it FROM "
            "kubemill's runner image or install kubemill in it (pip install "
            f"'kubemill=={__version__}'); `kubemill image check IMAGE` lists everything it lacks"
        )
        return "RunnerNotInImage", message, {"reason": "RunnerNotInImage", "message": message}
    if terminated:
        # The runtime's own account (StartError: exec: "kubemill": argument list too long) is
        # often the only one there is.
        code = terminated.get("exitCode")
        message = f"the runner exited with code {code} without a summary ({job_reason})"
        said = ": ".join(str(terminated[k]) for k in ("reason", "message") if terminated.get(k))
        if said and said != "Error":
            message += f": {said.strip()}"
        return "RunnerFailed", message, {"reason": "RunnerFailed", "message": message}
    message = str(job_failed.get("message") or job_reason)
    return job_reason, message, {"reason": job_reason, "message": message}


def _scheduled(pod: Mapping[str, Any]) -> bool:
    """Whether the pod was bound to a node (binding sets PodScheduled True)."""
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "PodScheduled" and c.get("status") == "True" for c in conditions)


def _image(pods: Sequence[Mapping[str, Any]], spec: Mapping[str, Any]) -> str | None:
    """The runner's image as the kubelet reports it (the pod spec is not kept), else the run's."""
    for pod in pods[-1:]:
        image = _runner_state(pod).get("image")
        if image:
            return str(image)
    return spec.get("image")


def start_pending(
    old: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], summary: Summary | None = None
) -> bool:
    """Whether the run's runner has yet to start: no process of it ever ran, in any attempt.
    The start limit counts only until then; afterwards spec.timeout is the only limit."""
    if summary is not None or old.get("phase") in ("Running", *TERMINAL):
        return False
    return not any(_runner_ran(p) for p in pods)


def _start_failure(
    limit: StartLimit,
    blocker: Blocker | None,
    pods: Sequence[Mapping[str, Any]],
    spec: Mapping[str, Any],
) -> tuple[str, str]:
    """Reason and message of a run whose runner did not start within `limit`: the reason names
    what was in the way (START_FAILURES), the message what it was and what to do. Unschedulable
    only when the scheduler said so (PodScheduled False): a pod it has not looked at yet (a busy
    scheduler, a scheduling gate) is a StartTimeout that says the pod waited for a node."""
    never = f"the notebook never started: {limit.source} passed"
    raise_it = "raise spec.startTimeout"
    newest = pods[-1] if pods else None
    if blocker is None:
        doing = (
            "the Job created no runner pod" if newest is None
            else "the runner pod was still waiting for a node (the scheduler had not said why)"
            if not _scheduled(newest)
            else "the runner pod was still being created (its image pulled, its volumes mounted)"
        )  # fmt: skip
        return "StartTimeout", f"{never} while {doing}; {raise_it} if it only starts slowly"
    cause, said = blocker.cause, blocker.message
    if cause == "ImagePullFailed":
        image = _image(pods, spec)
        what = (
            f'the image "{image}" could not be pulled' if image else "the image could not be pulled"
        )
        advice = (
            "fix spec.image, or give the pod's ServiceAccount imagePullSecrets for the registry"
        )
    elif cause == "ConfigError":
        what = "the runner pod could not be set up"
        advice = "create what it names in the run's namespace, or fix the run's reference to it"
    elif cause == "Unschedulable":
        what = "no node took the runner pod"
        advice = (
            "check spec.nodeSelector, affinity, tolerations and resources, or "
            f"{raise_it} if nodes are being added"
        )
    elif cause == "PodNotCreated":
        what = "the Job could not create the runner pod"
        said = said.removeprefix("the Job cannot create the runner pod: ")
        advice = f"fix that, or {raise_it} if it only passes slowly (a quota)"
    else:
        what = "the runner pod could not start"
        advice = f"fix that, or {raise_it} if it only starts slowly"
    return cause, f"{never} while {what} ({said}); {advice}"


def pending_status(run: Mapping[str, Any], job_name: str, now: str) -> dict[str, Any]:
    """The status right after the Job was created (or adopted)."""
    return derive_status(run, {"metadata": {"name": job_name}, "status": {}}, [], now)


def derive_status(
    run: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: str,
    problems: Sequence[Problem] = (),
    start_timeout: float | None = None,
) -> dict[str, Any]:
    """The complete status the run should have at `now`, given its Job and pods as last seen,
    the Warning Events seen about them (`problems`; only those that still hold are used), and
    the operator's start timeout for runs without spec.startTimeout (None: no limit)."""
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
    if summary is not None:
        # The latest attempt's account replaces an earlier one's, results included.
        if summary.output_url is not None:
            status["outputUrl"] = summary.output_url
        status["results"] = dict(summary.results)
        if summary.results_truncated:
            status["resultsTruncated"] = summary.results_truncated
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
        # What keeps the runner from starting: the pod's own status first, then the Events.
        blocked = _waiting_problem(pods) or _event_problem(job, pods, problems)
        started = not start_pending(old, pods, summary)
        if not (blocked or started) and _still_blocked(old, pods):
            # The pod that could not start is being stopped (the Job's deadline, a deletion),
            # or the Event is no longer at hand (a restart): the last status still says why.
            kept = str(old["reason"])
            cause = "PodNotCreated" if kept == "PodNotCreated" else "StartTimeout"
            blocked = Blocker(kept, cause, str(old.get("message", "")))
        limit = None if started else start_limit(spec, start_timeout)
        deadline = start_deadline(job, limit)
        moment = parse_rfc3339(now)
        expired = deadline is not None and moment is not None and deadline <= moment
        if complete:
            early = summary.early_exit if summary is not None else None
            said = early.get("message") if early else None
            message = f"the notebook ran; {said}" if isinstance(said, str) else "the notebook ran"
            status.update(phase="Succeeded", reason="Succeeded", message=message)
            status["completionTime"] = (job.get("status") or {}).get("completionTime") or now
            status.pop("failure", None)
        elif failed:
            blocker = None if started else (blocked.message if blocked else "")
            image = _image(pods, spec)
            reason, message, failure = _failure(failed, summary, terminated, spec, blocker, image)
            status.update(phase="Failed", reason=reason, message=message, failure=failure)
            status["completionTime"] = failed.get("lastTransitionTime") or now
        elif running:
            status.update(phase="Running", reason="Running", message="the notebook is running")
        elif expired and limit is not None:
            # The handler deletes the Job once this is written, so nothing keeps trying.
            reason, message = _start_failure(limit, blocked, pods, spec)
            status.update(phase="Failed", reason=reason, message=message)
            status["failure"] = {"reason": reason, "message": message}
            status["completionTime"] = now
        elif blocked:
            status.update(phase="Pending", reason=blocked.pending, message=blocked.message)
        else:
            status.update(
                phase="Pending", reason="Pending", message="waiting for the runner pod to start"
            )
    elif not terminal:
        status.setdefault("phase", "Pending")
        status.setdefault("reason", "Pending")
        status.setdefault("message", "creating the Job")
    elif summary is not None and summary.failure and "failure" in status:
        # A terminal run may still learn the runner's own account of the failure.
        status["failure"] = {**summary.failure, **status["failure"]}

    if status.get("phase") in TERMINAL and status.get("startTime") and status.get("completionTime"):
        start, end = parse_rfc3339(status["startTime"]), parse_rfc3339(status["completionTime"])
        if start and end:
            status["duration"] = format_duration((end - start).total_seconds())

    phase = status.get("phase", "Pending")
    reason, message = status.get("reason", phase), status.get("message", "")
    # A Job deleted after the run ended (its TTL) was still created: the condition stays.
    created = job is not None or bool(status.get("jobName"))
    if created:
        job_reason, job_message = "JobCreated", f"Job {status['jobName']}"
    elif phase == "Waiting":
        job_reason, job_message = "Waiting", message
    else:
        job_reason, job_message = "Pending", "creating the Job"
    status["conditions"] = [
        condition(
            "JobCreated",
            created,
            job_reason,
            job_message,
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


def with_viewer(status: Mapping[str, Any], viewer: str, root: str) -> dict[str, Any]:
    """`status` with viewerUrl, the viewer's page of its output notebook, when the operator
    knows a viewer that serves it (and without one when it does not)."""
    new = dict(status)
    link = viewer_link(str(status.get("outputUrl") or ""), viewer, root)
    if link is None:
        new.pop("viewerUrl", None)
    else:
        new["viewerUrl"] = link
    return new


def transitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Events (type, reason, message) for what changed between two statuses."""
    events: list[tuple[str, str, str]] = []
    if new.get("jobName") and new.get("jobName") != old.get("jobName"):
        events.append(("Normal", "JobCreated", f"created Job {new['jobName']}"))
    before, after = old.get("phase"), new.get("phase")
    if after == before or (after == "Pending" and before is None):
        problem = after == "Pending" and new.get("reason") in PROBLEM_REASONS
        if problem and new.get("message") != old.get("message"):
            events.append(("Warning", str(new["reason"]), str(new.get("message"))))
        return events
    if after == "Waiting":
        events.append(("Normal", "Waiting", str(new.get("message", ""))))
    elif after == "Running":
        events.append(("Normal", "Running", "the runner pod is executing the notebook"))
    elif after == "Succeeded":
        where = f"; output: {new['outputUrl']}" if new.get("outputUrl") else ""
        events.append(
            ("Normal", "Succeeded", f"the notebook ran in {new.get('duration', '?')}{where}")
        )
    elif after == "Failed":
        events.append(("Warning", str(new.get("reason", "Failed")), str(new.get("message", ""))))
    return events
