"""The NotebookRun controller: kopf watches, a coalescing work queue, and the pure builders.

Nothing is registered at import time: `register()` fills the registry main.py creates.

It is level-triggered, like controllers built with controller-runtime: every watch event of a
run, its Job or its pods updates the controller's caches and queues the run's key; a worker
then looks at the run, its Job and its pods as the caches hold them, creates the Job if there is
none (the deterministic name makes a second create fail with 409, and the existing Job is
adopted), and patches the status when it differs. Nothing is remembered between events but
what the cluster says, so a restart at any point resumes where the last one stopped, and kopf
writes no bookkeeping onto the runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol, cast

import kopf

from .cache import Cache, plain
from .errors import AlreadyExists, InvalidSpec, TransientError
from .jobs import build_job, build_parameter_config_maps
from .meta import (
    GROUP,
    JOB_FINALIZER,
    LABEL_RUN,
    PLURAL,
    POD_FINALIZER,
    VERSION,
    controller_name,
    job_name,
    owned_by,
)
from .problems import Problems
from .references import Resolution, referenced_runs, resolve
from .settings import Settings
from .status import (
    TERMINAL,
    derive_status,
    end_unseen,
    job_unfinished,
    runner_running,
    start_deadline,
    start_limit,
    start_pending,
    transitions,
    with_viewer,
)
from .times import now as clock
from .times import rfc3339
from .watches import watch_children
from .workqueue import QueuedController

__all__ = ["Cluster", "Reconciler", "register"]

_log = logging.getLogger(__name__)

Key = tuple[str, str]


class Cluster(Protocol):
    """The few API calls the controller makes, so tests and main.py choose the client."""

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> None:
        """Create the Job; AlreadyExists, InvalidSpec (rejected for good) or TransientError
        (refused in a way that may pass: a quota, RBAC, the API server's health)."""

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        """Create a ConfigMap; AlreadyExists, InvalidSpec (rejected) or TransientError."""

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        """Take kubemill's finalizer off the Job (no error if it is gone already)."""

    def delete_job(self, job: Mapping[str, Any]) -> None:
        """Delete the Job, its pods in the background (no error if it is gone already); our
        finalizer keeps it until it is taken off."""

    def remove_pod_finalizer(self, pod: Mapping[str, Any]) -> None:
        """Take kubemill's finalizer off the pod (no error if it is gone already)."""

    def list_pods(self, namespace: str, run: str) -> list[dict[str, Any]]:
        """The pods labelled as `run`'s, as the API server has them now; TransientError when
        it cannot say."""

    def get_run(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The run as the API server has it now, or None when it does not exist."""

    def replace_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace the run's whole status subresource with `status`, None values kept: a
        recorded result may be None, which a merge patch would read as "delete this key"."""


def _run_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the controller keeps of a run: all of its spec until it ends, then all but the
    parameters, which only building its Job needs and which may be megabytes per run."""
    finished = (body.get("status") or {}).get("phase") in TERMINAL
    return plain(body, drop=("parameters",) if finished else ())


def _child_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    return plain(body, spec=False)


def _body(run: dict[str, Any]) -> kopf.Body:
    """A body kopf can post Events about."""
    return kopf.Body(cast(kopf.RawBody, run))


class Reconciler(QueuedController):
    """Brings each NotebookRun's Job and status in line with the cluster, one run at a time
    (the queue never gives one key to two threads at once)."""

    transient = (TransientError,)

    def __init__(self, cluster: Cluster, settings: Settings, *, workers: int = 8) -> None:
        super().__init__("run", workers=workers)
        self.cluster = cluster
        self.settings = settings
        #: Statuses this process wrote last, newer than the run index until its watch catches up.
        self._written: dict[str, dict[str, Any]] = {}
        #: Warning Events about runs' Jobs and pods (problems.EventWatcher fills it).
        self.problems = Problems(self.poke)
        #: What the watches delivered: runs by (namespace, name), their Jobs and pods by the
        #: same key (their run label).
        self.runs = Cache(_run_copy)
        self.jobs = Cache(_child_copy)
        self.pods = Cache(_child_copy)
        #: The runs that take values from a run, by (namespace, that run's name), kept from
        #: the runs' specs as they arrive: a referenced run's change wakes them.
        self._dependents: dict[Key, set[str]] = {}
        self._dependents_lock = threading.Lock()

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    def run_seen(self, key: Key, event: str | None, body: Mapping[str, Any]) -> None:
        """Record a run's watch event, queue it when it has work left, and queue the runs
        that wait for it (they may start, or fail with it)."""
        namespace, name = key
        self.runs.apply(key, event, body)
        with self._dependents_lock:
            for other in referenced_runs(body.get("spec") or {}):
                group = self._dependents.setdefault((namespace, other), set())
                if event == "DELETED":
                    group.discard(name)
                    if not group:
                        del self._dependents[(namespace, other)]
                else:
                    group.add(name)
            waiting = sorted(self._dependents.get(key, ()))
        if event == "DELETED":
            self.forget(body["metadata"]["uid"])
            self.enqueue(key)  # to release its Jobs and pods
        elif (body.get("status") or {}).get("phase") not in TERMINAL:
            self.enqueue(key)
        for dependent in waiting:
            self.enqueue((namespace, dependent))

    def reconcile(self, key: Key) -> None:
        run = self.runs.first(key)
        all_pods = self.pods.get(key)
        if run is None:
            orphans = self.jobs.get(key)
            if (all_pods or orphans) and self.cluster.get_run(*key) is not None:
                # Not deleted: the runs' watch has not listed it yet (the operator has just
                # started) while its Job's or pods' watch has. Releasing now would let a pod
                # go with the outcome still in it; the run's own event reconciles it.
                return
            # Deleted: its Jobs and pods go through owner references once our finalizers are
            # off them; there is no status left to write.
            self.problems.release(key)
            for pod in all_pods:
                self._release_pod(pod)
            for orphan in orphans:
                self._release(orphan)
            return
        meta = run["metadata"]
        uid = meta["uid"]
        old = self._written.get(uid, run.get("status") or {})
        all_jobs = self.jobs.get(key)
        job: dict[str, Any] | None = next((j for j in all_jobs if owned_by(j, uid)), None)
        for orphan in all_jobs:
            if not owned_by(orphan, uid):
                # A namesake's, deleted while this run was being created: nothing to record.
                self._release(orphan)
        now = rfc3339()
        deleting = bool(meta.get("deletionTimestamp"))
        if job is None and old.get("phase") not in TERMINAL and not deleting:
            try:
                resolved = resolve(run, lambda other: self.runs.first((key[0], other)))
            except InvalidSpec as exc:
                resolved = Resolution(failed=(exc.reason, exc.message))
            if not resolved.ready and old.get("jobName"):
                return  # its Job exists (the watch will show it): what it took stands
            if resolved.failed is not None:
                reason, message = resolved.failed
                self._write_ended(key, run, old, now, reason, message)
                return
            if resolved.waiting is not None:
                waiting = {**old, "phase": "Waiting", "reason": "Waiting"}
                waiting["message"] = resolved.waiting
                self._write(key, run, old, derive_status({**run, "status": waiting}, None, [], now))
                return
            try:
                job, invalid = self._ensure_job(run, resolved)
            except TransientError as exc:
                # Refused in a way that may pass (a quota on Jobs, the operator's RBAC): say so
                # on the run, and try again with backoff.
                if not old.get("jobName"):
                    # (A run whose Job exists, that the Job watch has not shown yet, keeps its
                    # status: the retry finds the Job.)
                    self._write_pending(
                        key,
                        run,
                        old,
                        now,
                        f"cannot create the Job or its parameters: {exc}; retrying",
                    )
                raise
            if invalid is not None:
                self._write_ended(key, run, old, now, "InvalidSpec", invalid)
                return
            if (
                job is not None
                and job.get("new")
                and old.get("reason") in (None, "Pending", "Waiting")
            ):
                # The Job's own watch event, a moment away, writes the status that names it.
                # Not writing it here first lets a burst of runs (a workflow's fan-out) get
                # their Jobs sooner: the API server's writes go to the Jobs before statuses.
                return
        current = job_name(meta["name"], uid)
        owned_pods = [p for p in all_pods if controller_name(p, "Job") == current]
        ending = job is not None and old.get("phase") not in TERMINAL
        due = ending and job is not None and self._start_due(key, run, job, old, owned_pods)
        if ending and job is not None and (due or end_unseen(job, owned_pods)):
            # The run ends now, so what its pods say is read from the API server rather than
            # awaited from the pod watch: once per run, and only when the watch lags (or, at
            # the start deadline, might hide a runner that has just started).
            fresh = self.cluster.list_pods(key[0], meta["name"])
            owned_pods = [p for p in fresh if controller_name(p, "Job") == current]
        # Pods of a namesake run deleted before (or of Jobs not ours) hold nothing we need.
        for pod in all_pods:
            if controller_name(pod, "Job") != current:
                self._release_pod(pod)
        children = [job, *owned_pods] if job else owned_pods
        uids = [c["metadata"]["uid"] for c in children if c["metadata"].get("uid")]
        problems = self.problems.observe(key, uids)
        new = derive_status(
            {**run, "status": old}, job, owned_pods, now, problems,
            self.settings.start_timeout_seconds,
        )  # fmt: skip
        new = with_viewer(new, self.settings.viewer_url, self.settings.viewer_root)
        self._write(key, run, old, new)
        if due and new.get("phase") not in TERMINAL:
            # Due by the clock, not yet by this pass's time (whole seconds, taken earlier).
            self.enqueue_after(key, 1.0)
        if new.get("phase") in TERMINAL:
            # The outcome is written: the pods (whose termination messages held it) and the
            # Job may go now, whatever TTL or deletion is waiting for them. A pod whose runner
            # was still running when last seen keeps both: its end, with the summary, comes
            # in a later pod event, which fills in the status and releases them.
            self.problems.release(key)
            if job is not None and job_unfinished(job):
                # Ended before its Job did (its runner never started in time): the Job goes,
                # so that the job controller and the kubelet stop trying.
                try:
                    self.cluster.delete_job(job)
                except TransientError as exc:
                    # (RBAC without delete, an admission policy, the API server's health.) Our
                    # finalizers come off all the same: held, they would keep the Job and pods
                    # for good. The Job's next event (its pod's next retry) tries again, and
                    # deleting the run deletes the Job.
                    name = job["metadata"]["name"]
                    message = f"cannot delete Job {name}: {exc}; it goes with the run"
                    _log.warning("run %s/%s: %s", key[0], key[1], message)
                    kopf.event(_body(run), type="Warning", reason="JobNotDeleted", message=message)
            settling = [p for p in owned_pods if runner_running(p)]
            for pod in owned_pods:
                if pod not in settling:
                    self._release_pod(pod)
            if job is not None and not settling:
                self._release(job)

    def _start_due(
        self,
        key: Key,
        run: Mapping[str, Any],
        job: Mapping[str, Any],
        old: Mapping[str, Any],
        pods: list[dict[str, Any]],
    ) -> bool:
        """Whether the run's start deadline has passed with its runner not started; before it,
        the run is queued for that moment, since no watch event need come then (a pod stuck
        in ImagePullBackOff changes no more)."""
        if not start_pending(old, pods):
            return False
        limit = start_limit(run.get("spec") or {}, self.settings.start_timeout_seconds)
        deadline = start_deadline(job, limit)
        if deadline is None:
            return False
        left = (deadline - clock()).total_seconds()
        if left > 0:
            # A second late: status times are whole seconds, so the pass then sees it passed.
            self.enqueue_after(key, left + 1.0)
            return False
        return True

    def _release(self, job: Mapping[str, Any]) -> None:
        if JOB_FINALIZER in (job["metadata"].get("finalizers") or []):
            self.cluster.remove_job_finalizer(job)

    def _release_pod(self, pod: Mapping[str, Any]) -> None:
        if POD_FINALIZER in (pod["metadata"].get("finalizers") or []):
            self.cluster.remove_pod_finalizer(pod)

    def _write_pending(
        self, key: Key, run: dict[str, Any], old: Mapping[str, Any], now: str, message: str
    ) -> None:
        pending = {**old, "phase": "Pending", "reason": "JobNotCreated", "message": message}
        self._write(key, run, old, derive_status({**run, "status": pending}, None, [], now))

    def _write_ended(
        self,
        key: Key,
        run: dict[str, Any],
        old: Mapping[str, Any],
        now: str,
        reason: str,
        message: str,
    ) -> None:
        """The run fails without a Job: its spec cannot run, or a run it needs failed."""
        failed = {**old, "phase": "Failed", "reason": reason, "message": message}
        failed["completionTime"] = now
        self._write(key, run, old, derive_status({**run, "status": failed}, None, [], now))

    def _ensure_job(
        self, run: dict[str, Any], resolved: Resolution
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The run's Job, created now if the watch has not shown one, or why it cannot be.

        Creating is safe to repeat: the name is deterministic, so a Job created before a
        restart, or one the watch has not delivered yet, answers 409 and is adopted. Our
        finalizer keeps a Job until its outcome is recorded, so a missing Job was never made.
        The parameter ConfigMaps come first, named after the Job and adopted the same way, so
        the Job's pod never waits for them.
        """
        meta = run["metadata"]
        try:
            job = build_job(run, self.settings, resolved)
            for config_map in build_parameter_config_maps(run, resolved):
                with contextlib.suppress(AlreadyExists):
                    self.cluster.create_configmap(meta["namespace"], config_map)
            self.cluster.create_job(meta["namespace"], job)
        except AlreadyExists:
            # Adopted: it exists but the watch has not shown it (or never will, if its watch
            # is broken): the status says so now, from the pods if any.
            return {"metadata": {"name": job_name(meta["name"], meta["uid"])}, "status": {}}, None
        except InvalidSpec as exc:
            return None, exc.message
        # Created just now: its own watch event follows within moments.
        return {"metadata": {"name": job["metadata"]["name"]}, "status": {}, "new": True}, None

    def _write(
        self, key: Key, run: dict[str, Any], old: Mapping[str, Any], new: dict[str, Any]
    ) -> None:
        if new == old:
            return
        self.cluster.replace_run_status(key[0], key[1], new)
        self._written[run["metadata"]["uid"]] = new
        for kind, reason, message in transitions(old, new):
            kopf.event(_body(run), type=kind, reason=reason, message=message)


def register(registry: kopf.OperatorRegistry, settings: Settings, cluster: Cluster) -> Reconciler:
    """Register the NotebookRun controller's watches into `registry`."""
    reconciler = Reconciler(cluster, settings)

    # (Not watches.watch_owners: a run's change also wakes the runs that take values from it.)
    @kopf.on.event(GROUP, VERSION, PLURAL, id="run-changed", registry=registry)  # type: ignore[arg-type]
    def run_changed(namespace: str, name: str, body: kopf.Body, **kwargs: Any) -> None:
        reconciler.run_seen((namespace, name), kwargs.get("type"), body)

    # A Job or one of its pods changed: the run's status may have changed with it.
    for resource, cache, handler_id in (
        (("batch", "v1", "jobs"), reconciler.jobs, "job-changed"),
        (("", "v1", "pods"), reconciler.pods, "pod-changed"),
    ):
        watch_children(registry, resource, LABEL_RUN, handler_id, cache, reconciler.enqueue)
    return reconciler
