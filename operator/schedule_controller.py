"""The NotebookSchedule controller: watches, a work queue with timers, and the pure plan.

Level-triggered like the run controller: a schedule's key is queued when the schedule or one of
its children (NotebookRuns, or NotebookWorkflows for a workflowTemplate) changes, and at its
next slot; a worker then asks `schedules.plan` what to do given the
schedule, its runs and the clock, and does it (delete, create, patch status, post Events).

Two things are remembered between passes, both only until the watches catch up: the status this
process wrote last, and the runs it created. Without the second, a per-second schedule with
concurrencyPolicy Forbid could start a run before the watch shows the previous one.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any, Protocol, cast

import kopf

from .cache import Cache, plain
from .errors import AlreadyExists, InvalidSpec, TransientError
from .meta import (
    GROUP,
    LABEL_SCHEDULE,
    PLURAL,
    SCHEDULE_PLURAL,
    VERSION,
    WORKFLOW_PLURAL,
    merge_patch,
    owned_by,
)
from .schedules import after_create, plan
from .times import now as clock
from .times import parse_rfc3339
from .watches import watch_children, watch_owners
from .workqueue import QueuedController

__all__ = ["ScheduleCluster", "ScheduleReconciler", "register"]

_log = logging.getLogger(__name__)

Key = tuple[str, str]

KIND_RUN, KIND_WORKFLOW = "NotebookRun", "NotebookWorkflow"
#: How log lines and Events call each kind of child.
_NOUN = {KIND_RUN: "run", KIND_WORKFLOW: "workflow"}

#: Seconds a created run may stay unseen by the watch before it is no longer counted.
PENDING_EXPIRY = 60.0


class ScheduleCluster(Protocol):
    """The API calls the schedule controller makes."""

    def create_run(self, namespace: str, run: Mapping[str, Any]) -> None:
        """Create the NotebookRun; AlreadyExists, InvalidSpec (rejected) or TransientError."""

    def delete_run(self, namespace: str, name: str) -> None:
        """Delete the NotebookRun (its Job and pod follow); no error if it is gone."""

    def create_workflow(self, namespace: str, workflow: Mapping[str, Any]) -> None:
        """Create the NotebookWorkflow; AlreadyExists, InvalidSpec (rejected) or TransientError."""

    def delete_workflow(self, namespace: str, name: str) -> None:
        """Delete the NotebookWorkflow (its runs follow); no error if it is gone."""

    def patch_schedule_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch the schedule's status subresource."""


class ScheduleReconciler(QueuedController):
    transient = (TransientError,)

    def __init__(self, cluster: ScheduleCluster, *, workers: int = 4) -> None:
        super().__init__("schedule", workers=workers)
        self.cluster = cluster
        self._written: dict[str, dict[str, Any]] = {}
        #: Runs created by this process that the run watch has not shown yet, by schedule uid.
        self._created: dict[str, dict[str, dict[str, Any]]] = {}
        #: The last RunNotCreated message posted per schedule uid: posted again only if it changes.
        self._refused: dict[str, str] = {}
        #: What the watches delivered: schedules by (namespace, name), and their runs and
        #: workflows, without spec, by the same key (their schedule label).
        self.schedules = Cache()
        self.runs = Cache(_run_copy)
        self.workflows = Cache(_run_copy)

    def forget(self, uid: str) -> None:
        self._written.pop(uid, None)
        self._created.pop(uid, None)
        self._refused.pop(uid, None)

    def reconcile(self, key: Key) -> None:
        schedule = self.schedules.first(key)
        if schedule is None or schedule["metadata"].get("deletionTimestamp"):
            return  # its runs go with it through their owner references
        uid = schedule["metadata"]["uid"]
        old = self._written.get(uid, schedule.get("status") or {})
        # Both kinds, whatever the template is now: after a switch from runTemplate to
        # workflowTemplate the old runs still count for Forbid, Replace and the history.
        kinds: dict[str, str] = {}
        children = []
        for kind, cache in ((KIND_RUN, self.runs), (KIND_WORKFLOW, self.workflows)):
            for child in cache.get(key):
                if owned_by(child, uid):
                    children.append(child)
                    kinds[child["metadata"]["name"]] = kind
        now = clock()
        created = self._pending(uid, set(kinds), now)
        kinds.update({n: str(c.get("kind") or KIND_RUN) for n, c in created.items()})
        decided = plan({**schedule, "status": old}, [*children, *created.values()], now)
        namespace, name = key
        body = kopf.Body(cast(kopf.RawBody, schedule))
        for run_name, why in decided.replace:
            kind = kinds.get(run_name, KIND_RUN)
            _log.info("deleting %s %s/%s: %s", _NOUN[kind], namespace, run_name, why)
            self._delete(kind, namespace, run_name)
            created.pop(run_name, None)
        status, events = decided.status, list(decided.events)
        generation = int(schedule["metadata"].get("generation", 1))
        deferred: TransientError | None = None
        for run, reason, message in decided.create:
            run_name = run["metadata"]["name"]
            noun = _NOUN[run["kind"]]
            try:
                if run["kind"] == KIND_WORKFLOW:
                    self.cluster.create_workflow(namespace, run)
                else:
                    self.cluster.create_run(namespace, run)
            except AlreadyExists:
                continue  # created before a restart, or a backfill made it: the lock held
            except TransientError as exc:
                # Refused in a way that may pass (a quota on NotebookRuns, RBAC, the API
                # server's health): said once on the schedule (again only if the reason
                # changes), and retried with backoff after the rest of this pass, whose
                # history prune may be what frees the quota.
                message = f"cannot create {noun} {run_name}: {exc}; retrying"
                if self._refused.get(uid) != message:
                    self.post_event(body, "Warning", "RunNotCreated", message)
                    self._refused[uid] = message
                deferred = exc
                break
            except InvalidSpec as exc:
                # Refused by the API server: the template makes invalid runs.
                events.append(("Warning", "RunRejected", exc.message))
                status = after_create(status, generation, now, refused=exc.message)
                if run_name == decided.slot_run:
                    status = {**status, "lastScheduleTime": old.get("lastScheduleTime")}
                continue
            status = after_create(status, generation, now, refused=None)
            self._refused.pop(uid, None)
            _log.info("created %s %s/%s", noun, namespace, run_name)
            events.append(("Normal", reason, message))
            created[run_name] = {
                "kind": run["kind"],
                "metadata": {**run["metadata"], "creationTimestamp": now.isoformat()},
                "status": {},
            }
        # A run refused for now leaves the status as it was, so its slot stays due.
        if status != old and deferred is None:
            self.cluster.patch_schedule_status(namespace, name, merge_patch(old, status))
            self._written[uid] = status
        for kind, reason, message in events:
            self.post_event(body, kind, reason, message)
        if decided.wake_at is not None:
            self._queue.add_after(key, (decided.wake_at - clock()).total_seconds())
        for run_name, why in decided.prune:
            # Last, and never fatal: a delete that is refused (an admission policy, a
            # namespace without the permission) must not stop the schedule's next runs.
            kind = kinds.get(run_name, KIND_RUN)
            try:
                self._delete(kind, namespace, run_name)
            except Exception as exc:
                noun = _NOUN[kind]
                _log.warning("cannot delete %s %s/%s (%s): %s", noun, namespace, run_name, why, exc)
                message = f"cannot delete {run_name} ({why}): {exc}"
                self.post_event(body, "Warning", "PruneFailed", message)
            else:
                _log.info("deleted %s %s/%s: %s", _NOUN[kind], namespace, run_name, why)
        if deferred is not None:
            raise deferred

    def _delete(self, kind: str, namespace: str, name: str) -> None:
        if kind == KIND_WORKFLOW:
            self.cluster.delete_workflow(namespace, name)
        else:
            self.cluster.delete_run(namespace, name)

    def post_event(self, body: kopf.Body, kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    def _pending(self, uid: str, seen: set[str], now: datetime.datetime) -> dict[str, Any]:
        """Runs this process created that the watch has not shown yet. An entry the watch
        never confirms (the run was deleted before it was seen) expires after a minute, so it
        cannot hold a Forbid schedule back for good."""
        created = self._created.setdefault(uid, {})
        for name in list(created):
            made = parse_rfc3339(created[name]["metadata"]["creationTimestamp"]) or now
            if name in seen or (now - made).total_seconds() > PENDING_EXPIRY:
                del created[name]
        return created


def _run_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    return plain(body, spec=False)


def register(registry: kopf.OperatorRegistry, cluster: ScheduleCluster) -> ScheduleReconciler:
    """Register the NotebookSchedule controller's watches into `registry`."""
    reconciler = ScheduleReconciler(cluster)
    watch_owners(registry, SCHEDULE_PLURAL, "schedule-changed", reconciler.schedules, reconciler)
    # A child's phase decides Forbid and Replace, the history and lastSuccessfulTime.
    for plural, cache, handler_id in (
        (PLURAL, reconciler.runs, "scheduled-run-changed"),
        (WORKFLOW_PLURAL, reconciler.workflows, "scheduled-workflow-changed"),
    ):
        resource = (GROUP, VERSION, plural)
        watch_children(registry, resource, LABEL_SCHEDULE, handler_id, cache, reconciler.enqueue)
    return reconciler
