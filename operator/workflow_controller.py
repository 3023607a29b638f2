"""The NotebookWorkflow controller: watches, a work queue, and the pure plan.

Level-triggered like the other two: a workflow's key is queued when the workflow or one of its
runs changes; a worker asks `workflows.plan` what to do given the workflow and its runs, and
does it (delete, create, patch status, post Events). The runs this process created are
remembered until the watch shows them, so a second pass in between never counts a step twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol, cast

import kopf

from .cache import Cache, plain
from .errors import AlreadyExists, InvalidSpec, TransientError
from .meta import GROUP, LABEL_WORKFLOW, PLURAL, VERSION, WORKFLOW_PLURAL, owned_by
from .times import rfc3339
from .watches import watch_children, watch_owners
from .workflows import plan
from .workqueue import QueuedController

__all__ = ["WorkflowCluster", "WorkflowReconciler", "register"]

_log = logging.getLogger(__name__)

Key = tuple[str, str]

#: Seconds a change of a workflow's runs waits before the workflow's next pass. A step's run
#: that takes a value from another starts without the workflow's help (the run controller
#: watches the run it waits for), so this delays only the status table and the steps gated
#: by dependsOn or a forEach list; in exchange a fan-out's hundreds of run events become a
#: few passes, whose CPU and status writes the runs' own Jobs would otherwise wait behind.
RUN_EVENT_DELAY = 0.25
#: Seconds a created run may stay unseen by the watch before it is no longer counted.
PENDING_EXPIRY = 60.0


class WorkflowCluster(Protocol):
    """The API calls the workflow controller makes."""

    def create_run(self, namespace: str, run: Mapping[str, Any]) -> None:
        """Create the NotebookRun; AlreadyExists, InvalidSpec (rejected) or TransientError."""

    def get_run(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The NotebookRun, or None if there is none."""

    def delete_run(self, namespace: str, name: str) -> None:
        """Delete the NotebookRun; no error if it is gone."""

    def replace_workflow_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Replace the workflow's whole status subresource (None values kept: a step's
        recorded result may be None)."""


def _run_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """A step's run as the plan needs it: its status (results, output) and, for the runs it
    inlines values from, nothing of its spec."""
    return plain(body, spec=False)


class WorkflowReconciler(QueuedController):
    transient = (TransientError,)

    def __init__(self, cluster: WorkflowCluster, *, workers: int = 4) -> None:
        super().__init__("workflow", workers=workers)
        self.cluster = cluster
        self._written: dict[str, dict[str, Any]] = {}
        #: Runs created by this process that the run watch has not shown yet, by workflow uid:
        #: each with when it was created (monotonic), so one that never shows up expires.
        self._created: dict[str, dict[str, tuple[dict[str, Any], float]]] = {}
        #: Runs the API server refused, by workflow uid and run name: the step fails with it.
        self._rejected: dict[str, dict[str, str]] = {}
        self.workflows = Cache()
        self.runs = Cache(_run_copy)

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._created.pop(uid, None)
        self._rejected.pop(uid, None)

    def reconcile(self, key: Key) -> None:
        workflow = self.workflows.first(key)
        if workflow is None or workflow["metadata"].get("deletionTimestamp"):
            return  # its runs go with it through their owner references
        uid = workflow["metadata"]["uid"]
        old = self._written.get(uid, workflow.get("status") or {})
        seen = {r["metadata"]["name"]: r for r in self.runs.get(key) if owned_by(r, uid)}
        created = self._created.setdefault(uid, {})
        now = time.monotonic()
        for name in [n for n, (_, at) in created.items() if n in seen or now - at > PENDING_EXPIRY]:
            # Seen by the watch, or never: a run deleted before its watch event came is gone.
            del created[name]
        rejected = self._rejected.setdefault(uid, {})
        runs = [*seen.values(), *(body for body, _ in created.values())]
        decided = plan({**workflow, "status": old}, runs, rfc3339(), rejected)
        namespace, name = key
        body = kopf.Body(cast(kopf.RawBody, workflow))
        for run_name, why in decided.delete:
            _log.info("deleting run %s/%s: %s", namespace, run_name, why)
            self.cluster.delete_run(namespace, run_name)
            created.pop(run_name, None)
        events = list(decided.events)
        retry = False
        for run, step in decided.create:
            run_name = run["metadata"]["name"]
            try:
                self.cluster.create_run(namespace, run)
            except AlreadyExists:
                found = self.cluster.get_run(namespace, run_name)
                if found is None or owned_by(found, uid):
                    continue  # created before a restart (or just deleted): the name is the lock
                # A namesake that is not this workflow's: never take its outputs for ours.
                owner = ", ".join(
                    f"{r.get('kind')} {r.get('name')}"
                    for r in found["metadata"].get("ownerReferences") or []
                )
                rejected[run_name] = (
                    f"a NotebookRun named {run_name} exists and is not this workflow's (owned "
                    f"by {owner or 'nobody'}); delete it, or rename the workflow or step"
                )
                events.append(("Warning", "RunNameTaken", f"step {step}: {rejected[run_name]}"))
                retry = True
                continue
            except InvalidSpec as exc:
                # Refused by the API server (a label, an admission policy): the step fails
                # with its message, on the next pass, which this queues.
                rejected[run_name] = exc.message
                events.append(("Warning", "RunRejected", f"step {step}: {exc.message}"))
                retry = True
                continue
            _log.info("created run %s/%s for step %s", namespace, run_name, step)
            events.append(("Normal", "RunCreated", f"created run {run_name} for step {step}"))
            created[run_name] = ({**run, "status": {}}, time.monotonic())
        if decided.status != old:
            self.cluster.replace_workflow_status(namespace, name, decided.status)
            self._written[uid] = decided.status
        for kind, reason, message in events:
            kopf.event(body, type=kind, reason=reason, message=message)
        if retry:
            self.enqueue(key)


def register(registry: kopf.OperatorRegistry, cluster: WorkflowCluster) -> WorkflowReconciler:
    """Register the NotebookWorkflow controller's watches into `registry`."""
    reconciler = WorkflowReconciler(cluster)
    watch_owners(registry, WORKFLOW_PLURAL, "workflow-changed", reconciler.workflows, reconciler)

    def run_changed(key: Key) -> None:
        reconciler.enqueue_after(key, RUN_EVENT_DELAY)

    resource, handler_id = (GROUP, VERSION, PLURAL), "workflow-run-changed"
    watch_children(registry, resource, LABEL_WORKFLOW, handler_id, reconciler.runs, run_changed)
    return reconciler
