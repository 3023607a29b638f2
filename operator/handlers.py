"""kopf handlers for NotebookRuns: thin edges around the pure builders in jobs.py and status.py.

Nothing is registered at import time: `register()` fills the registry main.py creates.

- create/resume of a run: build its Job and create it; a Job that already exists (a restart
  after the create went through) is adopted. The deterministic name is the lock.
- events of the run's Job and pods: recompute the run's status from what the watches have seen
  (kopf indexes) and patch it when it changed, posting an Event for each transition.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Protocol, cast

import kopf

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.jobs import build_job
from kubemill.operator.meta import GROUP, LABEL_RUN, PLURAL, VERSION
from kubemill.operator.settings import Settings
from kubemill.operator.status import TERMINAL, derive_status, now_rfc3339, transitions

__all__ = ["AlreadyExists", "Cluster", "Reconciler", "register"]


class Cluster(Protocol):
    """The few API calls the handlers make, so tests and main.py choose the client."""

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> None:
        """Create the Job; raise AlreadyExists if it exists, InvalidSpec if it is rejected."""

    def patch_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the run's status subresource (None values delete keys)."""


class AlreadyExists(Exception):
    """The object to create exists already."""


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A detached copy of a kopf body, safe to keep in an index."""
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": dict(body.get("metadata") or {}),
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }


def _body(run: dict[str, Any]) -> kopf.Body:
    """A body kopf can post Events about."""
    return kopf.Body(cast(kopf.RawBody, run))


class Reconciler:
    """Mirrors Jobs and pods into NotebookRun statuses, one run at a time."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        #: Statuses this process wrote last, newer than the run index until its watch catches up.
        self._written: dict[str, dict[str, Any]] = {}

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)

    def reconcile(
        self,
        key: tuple[str, str],
        runs: kopf.Index[Any, Any],
        jobs: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
    ) -> None:
        with self._lock(key):
            run = next(iter(runs.get(key, [])), None)
            if run is None:
                return
            uid = run["metadata"]["uid"]
            old = self._written.get(uid, run.get("status") or {})
            job = next(
                (
                    j
                    for j in jobs.get(key, [])
                    if any(r.get("uid") == uid for r in j["metadata"].get("ownerReferences") or [])
                ),
                None,
            )
            owned_pods = []
            if job is not None:
                job_uid = job["metadata"].get("uid")
                owned_pods = [
                    p
                    for p in pods.get(key, [])
                    if any(
                        r.get("uid") == job_uid for r in p["metadata"].get("ownerReferences") or []
                    )
                ]
            new = derive_status({**run, "status": old}, job, owned_pods, now_rfc3339())
            if job is None and old.get("jobName") and old.get("phase") not in TERMINAL:
                new.update(
                    phase="Failed",
                    reason="JobDeleted",
                    message="the Job was deleted before the notebook finished; create a new "
                    "NotebookRun to run it again",
                )
                new = derive_status({**run, "status": new}, None, [], now_rfc3339())
            if new == old:
                return
            patch: dict[str, Any] = {k: None for k in old if k not in new}
            patch.update(new)
            self.cluster.patch_run_status(key[0], key[1], patch)
            self._written[uid] = new
            for kind, reason, message in transitions(old, new):
                kopf.event(_body(run), type=kind, reason=reason, message=message)


def register(registry: kopf.OperatorRegistry, settings: Settings, cluster: Cluster) -> Reconciler:
    """Register every handler of the NotebookRun controller into `registry`."""
    reconciler = Reconciler(cluster)
    on_run = {"group": GROUP, "version": VERSION, "plural": PLURAL, "registry": registry}
    owned = {"labels": {LABEL_RUN: kopf.PRESENT}, "registry": registry}

    # The ids name the keyword arguments through which kopf hands the indexes to handlers.
    @kopf.index(id="runs", **on_run)  # type: ignore[arg-type]
    def runs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): _plain(body)}

    @kopf.index("batch", "v1", "jobs", id="jobs", **owned)  # type: ignore[arg-type]
    def jobs(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, labels[LABEL_RUN]): _plain(body)}

    @kopf.index("", "v1", "pods", id="pods", **owned)  # type: ignore[arg-type]
    def pods(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, labels[LABEL_RUN]): _plain(body)}

    def ensure_job(
        body: kopf.Body, namespace: str, name: str, logger: kopf.Logger, **_: Any
    ) -> None:
        run = _plain(body)
        if run["status"].get("phase") in TERMINAL:
            return
        try:
            job = build_job(run, settings)
            try:
                cluster.create_job(namespace, job)
                logger.info("created Job %s", job["metadata"]["name"])
            except AlreadyExists:
                logger.info("adopted the existing Job %s", job["metadata"]["name"])
        except InvalidSpec as exc:
            now = now_rfc3339()
            status = derive_status(run, None, [], now)
            status.update(phase="Failed", reason="InvalidSpec", message=exc.message)
            status = derive_status({**run, "status": status}, None, [], now)
            cluster.patch_run_status(namespace, name, status)
            kopf.event(_body(run), type="Warning", reason="InvalidSpec", message=exc.message)
            raise kopf.PermanentError(exc.message) from None

    kopf.on.create(id="create-job", **on_run)(ensure_job)  # type: ignore[arg-type]
    kopf.on.resume(id="adopt-job", **on_run)(ensure_job)  # type: ignore[arg-type]

    @kopf.on.event("batch", "v1", "jobs", id="job-changed", **owned)  # type: ignore[arg-type]
    def job_changed(
        namespace: str,
        labels: kopf.Labels,
        runs: kopf.Index[Any, Any],
        jobs: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
        **_: Any,
    ) -> None:
        reconciler.reconcile((namespace, labels[LABEL_RUN]), runs, jobs, pods)

    @kopf.on.event("", "v1", "pods", id="pod-changed", **owned)  # type: ignore[arg-type]
    def pod_changed(
        namespace: str,
        labels: kopf.Labels,
        runs: kopf.Index[Any, Any],
        jobs: kopf.Index[Any, Any],
        pods: kopf.Index[Any, Any],
        **_: Any,
    ) -> None:
        reconciler.reconcile((namespace, labels[LABEL_RUN]), runs, jobs, pods)

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
            return
        # A run whose Job events came before the run reached the index catches up here.
        if (body.get("status") or {}).get("phase") not in TERMINAL:
            reconciler.reconcile((namespace, name), runs, jobs, pods)

    return reconciler
