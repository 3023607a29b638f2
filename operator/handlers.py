"""The NotebookRun controller: kopf watches, a coalescing work queue, and the pure builders.

Nothing is registered at import time: `register()` fills the registry main.py creates.

It is level-triggered, like controllers built with controller-runtime: every watch event of a
run, its Job or its pods only queues the run's key; a worker then looks at the run, its Job and
its pods as kopf's indexes hold them, creates the Job if there is none (the deterministic name
makes a second create fail with 409, and the existing Job is adopted), and patches the status
when it differs. Nothing is remembered between events but what the cluster says, so a restart at
any point resumes where the last one stopped, and kopf writes no bookkeeping onto the runs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Hashable, Mapping
from typing import Any, Protocol, cast

import kopf

from .errors import InvalidSpec
from .jobs import build_job, build_parameter_config_maps
from .meta import (
    GROUP,
    JOB_FINALIZER,
    LABEL_RUN,
    PLURAL,
    POD_FINALIZER,
    VERSION,
    job_name,
)
from .problems import Problems
from .settings import Settings
from .status import (
    TERMINAL,
    derive_status,
    now_rfc3339,
    runner_running,
    transitions,
)
from .workqueue import QueuedController

__all__ = [
    "AlreadyExists",
    "Cluster",
    "Reconciler",
    "TransientError",
    "merge_patch",
    "plain",
    "register",
    "snapshot",
]

_log = logging.getLogger(__name__)

Key = tuple[str, str]


class AlreadyExists(Exception):
    """The object to create exists already."""


class TransientError(Exception):
    """An API call failed in a way that may pass: try again later. The message is the API
    server's, with its HTTP status, since a run's status may show it."""


class Cluster(Protocol):
    """The few API calls the controller makes, so tests and main.py choose the client."""

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> None:
        """Create the Job; AlreadyExists, InvalidSpec (rejected for good) or TransientError
        (refused in a way that may pass: a quota, RBAC, the API server's health)."""

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        """Create a ConfigMap; AlreadyExists, InvalidSpec (rejected) or TransientError."""

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        """Take kubemill's finalizer off the Job (no error if it is gone already)."""

    def remove_pod_finalizer(self, pod: Mapping[str, Any]) -> None:
        """Take kubemill's finalizer off the pod (no error if it is gone already)."""

    def replace_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace the run's whole status subresource with `status`, None values kept: a
        recorded result may be None, which a merge patch would read as "delete this key"."""


_KEPT_METADATA = (
    "deletionTimestamp",
    "finalizers",
    "name",
    "namespace",
    "uid",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "creationTimestamp",
    "resourceVersion",
)


def plain(body: Mapping[str, Any], *, spec: bool = True) -> dict[str, Any]:
    """A detached copy of what the controller uses from a body, small enough to keep in an
    index: no managedFields, and no pod or Job spec, which would triple the memory per run."""
    meta = body.get("metadata") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
        "spec": dict(body.get("spec") or {}) if spec else {},
        "status": dict(body.get("status") or {}),
    }


def _body(run: dict[str, Any]) -> kopf.Body:
    """A body kopf can post Events about."""
    return kopf.Body(cast(kopf.RawBody, run))


def snapshot(index: Any, key: Hashable) -> list[dict[str, Any]]:
    """A copy of the objects under `key` in a kopf index. kopf changes its indexes on its event
    loop while the workers read them from their threads; a read that overlaps a change fails
    with "dictionary changed size during iteration", and reading again is all it needs."""
    for _ in range(9):
        try:
            return list(index.get(key, []))
        except RuntimeError:
            continue
    return list(index.get(key, []))


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `old` into `new`: removed keys become None at every
    depth, so a later attempt's results replace an earlier one's instead of merging."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    return patch


def _owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def _job_of(pod: Mapping[str, Any]) -> str | None:
    """The name of the Job that controls a pod. The name, not the uid: Job names hash the
    run's uid, so they tell a run's pods from a namesake's even before the Job is seen."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            name: str = ref.get("name", "")
            return name
    return None


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

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    def reconcile(self, key: Key, runs: Any, jobs: Any, pods: Any) -> None:
        run = next(iter(snapshot(runs, key)), None)
        all_pods = snapshot(pods, key)
        if run is None:
            # Deleted: its Jobs and pods go through owner references once our finalizers are
            # off them; there is no status left to write.
            self.problems.release(key)
            for pod in all_pods:
                self._release_pod(pod)
            for orphan in snapshot(jobs, key):
                self._release(orphan)
            return
        meta = run["metadata"]
        uid = meta["uid"]
        old = self._written.get(uid, run.get("status") or {})
        all_jobs = snapshot(jobs, key)
        job: dict[str, Any] | None = next((j for j in all_jobs if _owned_by(j, uid)), None)
        for orphan in all_jobs:
            if not _owned_by(orphan, uid):
                # A namesake's, deleted while this run was being created: nothing to record.
                self._release(orphan)
        now = now_rfc3339()
        deleting = bool(meta.get("deletionTimestamp"))
        if job is None and old.get("phase") not in TERMINAL and not deleting:
            try:
                job, invalid = self._ensure_job(run)
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
                failed = {**old, "phase": "Failed", "reason": "InvalidSpec", "message": invalid}
                new = derive_status({**run, "status": failed}, None, [], now)
                self._write(key, run, old, new)
                return
        current = job_name(meta["name"], uid)
        owned_pods = [p for p in all_pods if _job_of(p) == current]
        # Pods of a namesake run deleted before (or of Jobs not ours) hold nothing we need.
        for pod in all_pods:
            if _job_of(pod) != current:
                self._release_pod(pod)
        children = [job, *owned_pods] if job else owned_pods
        uids = [c["metadata"]["uid"] for c in children if c["metadata"].get("uid")]
        problems = self.problems.observe(key, uids)
        new = derive_status({**run, "status": old}, job, owned_pods, now, problems)
        self._write(key, run, old, new)
        if new.get("phase") in TERMINAL:
            # The outcome is written: the pods (whose termination messages held it) and the
            # Job may go now, whatever TTL or deletion is waiting for them. A pod whose runner
            # was still running when last seen keeps both: its end, with the summary, comes
            # in a later pod event, which fills in the status and releases them.
            self.problems.release(key)
            settling = [p for p in owned_pods if runner_running(p)]
            for pod in owned_pods:
                if pod not in settling:
                    self._release_pod(pod)
            if job is not None and not settling:
                self._release(job)

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

    def _ensure_job(self, run: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
        """The run's Job, created now if the watch has not shown one, or why it cannot be.

        Creating is safe to repeat: the name is deterministic, so a Job created before a
        restart, or one the watch has not delivered yet, answers 409 and is adopted. Our
        finalizer keeps a Job until its outcome is recorded, so a missing Job was never made.
        The parameter ConfigMaps come first, named after the Job and adopted the same way, so
        the Job's pod never waits for them.
        """
        meta = run["metadata"]
        try:
            job = build_job(run, self.settings)
            for config_map in build_parameter_config_maps(run):
                with contextlib.suppress(AlreadyExists):
                    self.cluster.create_configmap(meta["namespace"], config_map)
            self.cluster.create_job(meta["namespace"], job)
        except AlreadyExists:
            pass
        except InvalidSpec as exc:
            return None, exc.message
        return {"metadata": {"name": job_name(meta["name"], meta["uid"])}, "status": {}}, None

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
    """Register the NotebookRun controller's indexes and watches into `registry`."""
    reconciler = Reconciler(cluster, settings)
    on_run = {"group": GROUP, "version": VERSION, "plural": PLURAL, "registry": registry}
    owned = {"labels": {LABEL_RUN: kopf.PRESENT}, "registry": registry}

    # The ids name the keyword arguments through which kopf hands the indexes to handlers.
    @kopf.index(id="runs", **on_run)  # type: ignore[arg-type]
    def runs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): plain(body)}

    @kopf.index("batch", "v1", "jobs", id="jobs", **owned)  # type: ignore[arg-type]
    def jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, labels[LABEL_RUN]): plain(body, spec=False)}

    @kopf.index("", "v1", "pods", id="pods", **owned)  # type: ignore[arg-type]
    def pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, labels[LABEL_RUN]): plain(body, spec=False)}

    @kopf.on.event(id="run-changed", **on_run)  # type: ignore[arg-type]
    def run_changed(
        namespace: str,
        name: str,
        body: kopf.Body,
        runs: kopf.Index[Any, Any],
        jobs: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
        **kwargs: Any,
    ) -> None:
        if kwargs.get("type") == "DELETED":
            reconciler.forget(body["metadata"]["uid"])
            reconciler.enqueue((namespace, name), runs, jobs, pods)  # to release its Jobs
        elif (body.get("status") or {}).get("phase") not in TERMINAL:
            reconciler.enqueue((namespace, name), runs, jobs, pods)

    def child_changed(
        namespace: str,
        labels: kopf.Labels,
        runs: kopf.Index[Any, Any],
        jobs: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
        **_: Any,
    ) -> None:
        reconciler.enqueue((namespace, labels[LABEL_RUN]), runs, jobs, pods)

    # A Job or one of its pods changed: the run's status may have changed with it.
    kopf.on.event("batch", "v1", "jobs", id="job-changed", **owned)(child_changed)  # type: ignore[arg-type]
    kopf.on.event("", "v1", "pods", id="pod-changed", **owned)(child_changed)  # type: ignore[arg-type]
    return reconciler
