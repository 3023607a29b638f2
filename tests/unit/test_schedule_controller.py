"""The schedule controller's order of work and its memory, with a cluster that records calls.

The API itself is exercised end to end in tests/e2e/test_notebookschedule.py; these tests pin
down what the e2e tests cannot provoke on demand: refused deletes and creates, and a run that
disappears before the watch shows it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import kopf
import pytest

from kubemill.operator import schedule_controller
from kubemill.operator.errors import InvalidSpec, TransientError
from kubemill.operator.schedule_controller import ScheduleReconciler

NOW = datetime.datetime(2027, 1, 12, 6, 0, 0, 500000, tzinfo=datetime.UTC)
KEY = ("ns", "daily")


class Recorder:
    """A cluster whose calls are recorded; `refuse` makes one kind of call fail."""

    def __init__(self, refuse: dict[str, Exception] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.status: dict[str, Any] = {}
        self.refuse = refuse or {}

    def create_run(self, namespace: str, run: Mapping[str, Any]) -> None:
        self.calls.append(("create", run["metadata"]["name"]))
        if "create" in self.refuse:
            raise self.refuse["create"]

    def delete_run(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))
        if "delete" in self.refuse:
            raise self.refuse["delete"]

    def create_workflow(self, namespace: str, workflow: Mapping[str, Any]) -> None:
        self.calls.append(("create workflow", workflow["metadata"]["name"]))
        if "create" in self.refuse:
            raise self.refuse["create"]

    def delete_workflow(self, namespace: str, name: str) -> None:
        self.calls.append(("delete workflow", name))
        if "delete" in self.refuse:
            raise self.refuse["delete"]

    def patch_schedule_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append(("status", name))
        self.status.update(status)


class Reconciler(ScheduleReconciler):
    def __init__(self, cluster: Recorder) -> None:
        super().__init__(cluster)
        self.events: list[tuple[str, str]] = []

    def post_event(self, body: kopf.Body, kind: str, reason: str, message: str) -> None:
        self.events.append((reason, message))


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule_controller, "clock", lambda: NOW)


def schedule(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "daily", "namespace": "ns", "uid": "u", "generation": 1,
                     "creationTimestamp": "2027-01-01T00:00:00Z"},
        "spec": {"schedule": "0 6 * * *", "runTemplate": {"spec": {"notebook": "s3://b/n"}},
                 **spec},
        "status": {"lastConsideredTime": "2027-01-11T06:00:00Z"},
    }  # fmt: skip


def finished(slot: str, phase: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"daily-{slot}",
            "ownerReferences": [{"uid": "u"}],
            "labels": {"kubemill.dev/origin": "schedule"},
            "annotations": {"kubemill.dev/scheduled-time": "2027-01-10T06:00:00Z"},
        },
        "status": {"phase": phase, "completionTime": "2027-01-10T06:10:00Z"},
    }


def reconcile(
    reconciler: ScheduleReconciler,
    schedule: dict[str, Any],
    runs: list[dict[str, Any]],
    workflows: list[dict[str, Any]] | None = None,
) -> None:
    """One pass, with `schedule`, `runs` and `workflows` as what the watches delivered (nothing
    else)."""
    for cache, objects in (
        (reconciler.schedules, [schedule]),
        (reconciler.runs, runs),
        (reconciler.workflows, workflows or []),
    ):
        for gone in cache.get(KEY):
            cache.apply(KEY, "DELETED", gone)
        for obj in objects:
            meta = obj["metadata"]
            cache.apply(KEY, "ADDED", {**obj, "metadata": {"uid": meta.get("name"), **meta}})
    reconciler.reconcile(KEY)


def test_a_refused_prune_does_not_hold_up_the_next_run() -> None:
    cluster = Recorder(refuse={"delete": RuntimeError("403: denied by policy")})
    reconciler = Reconciler(cluster)
    old = finished("20270110-060000", "Failed")
    reconcile(reconciler, schedule(failedRunsHistoryLimit=0), [old])
    assert cluster.calls == [
        ("create", "daily-20270112-060000"),
        ("status", "daily"),
        ("delete", "daily-20270110-060000"),
    ]
    assert [reason for reason, _ in reconciler.events] == ["RunCreated", "PruneFailed"]
    assert "403: denied by policy" in reconciler.events[1][1]


def test_a_rejected_run_is_not_reported_as_created(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Recorder(refuse={"create": InvalidSpec("run daily-20270112-060000 was rejected")})
    reconciler = Reconciler(cluster)
    reconcile(reconciler, schedule(), [])
    assert [reason for reason, _ in reconciler.events] == ["RunRejected"]
    assert cluster.status["lastConsideredTime"] == "2027-01-12T06:00:00Z"
    assert cluster.status.get("lastScheduleTime") is None
    ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidRunTemplate")
    assert ready["message"] == "run daily-20270112-060000 was rejected"
    # The next slot's run is accepted: Ready again.
    cluster.refuse = {}
    tomorrow = NOW + datetime.timedelta(days=1)
    monkeypatch.setattr(schedule_controller, "clock", lambda: tomorrow)
    reconcile(reconciler, schedule(), [])
    ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Scheduling")


def test_a_run_refused_for_now_is_named_on_the_schedule_and_retried() -> None:
    """A quota on NotebookRuns (403) may pass: not a rejection of the template, but never a
    silent retry either."""
    refusal = TransientError("exceeded quota: runs, requested: count/notebookruns… (HTTP 403)")
    cluster = Recorder(refuse={"create": refusal})
    reconciler = Reconciler(cluster)
    with pytest.raises(TransientError):  # the queue retries the pass with backoff
        reconcile(reconciler, schedule(), [])
    assert [reason for reason, _ in reconciler.events] == ["RunNotCreated"]
    assert "exceeded quota" in reconciler.events[0][1]
    assert ("status", "daily") not in cluster.calls  # the slot stays due


def test_a_run_refused_for_now_does_not_hold_up_the_prune_that_may_free_the_quota() -> None:
    """A quota on NotebookRuns full of finished runs: the history prune of the same pass must
    still run (it is what frees the quota), and the refusal is posted once, not per retry."""
    refusal = TransientError("exceeded quota: runs (HTTP 403)")
    cluster = Recorder(refuse={"create": refusal})
    reconciler = Reconciler(cluster)
    old = finished("20270110-060000", "Failed")
    for _ in range(3):
        with pytest.raises(TransientError):
            reconcile(reconciler, schedule(failedRunsHistoryLimit=0), [old])
    assert cluster.calls.count(("delete", "daily-20270110-060000")) == 3
    assert ("status", "daily") not in cluster.calls
    assert [reason for reason, _ in reconciler.events] == ["RunNotCreated"]
    cluster.refuse = {}
    reconcile(reconciler, schedule(failedRunsHistoryLimit=0), [])
    assert cluster.calls[-2:] == [("create", "daily-20270112-060000"), ("status", "daily")]


def test_a_created_run_blocks_forbid_until_seen_but_not_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Recorder()
    reconciler = Reconciler(cluster)
    spec = schedule(schedule="* * * * * *", concurrencyPolicy="Forbid")
    reconcile(reconciler, spec, [])
    assert cluster.calls[0] == ("create", "daily-20270112-060000")
    # A second later the watch still has not shown it: it counts as active.
    monkeypatch.setattr(schedule_controller, "clock", lambda: NOW + datetime.timedelta(seconds=1))
    reconcile(reconciler, spec, [])
    assert ("create", "daily-20270112-060001") not in cluster.calls
    assert reconciler.events[-1][0] == "SkippedActive"
    # Deleted before the watch ever showed it: after a minute it no longer blocks.
    later = NOW + datetime.timedelta(seconds=61)
    monkeypatch.setattr(schedule_controller, "clock", lambda: later)
    reconcile(reconciler, spec, [])
    assert cluster.calls[-2] == ("create", "daily-20270112-060101")


def workflow_schedule(**spec: Any) -> dict[str, Any]:
    body = schedule(**spec)
    body["spec"].pop("runTemplate")
    step = {"name": "a", "runTemplate": {"spec": {"notebook": "s3://b/n"}}}
    body["spec"]["workflowTemplate"] = {"spec": {"steps": [step]}}
    return body


def test_a_workflow_template_creates_and_prunes_workflows() -> None:
    cluster = Recorder()
    reconciler = Reconciler(cluster)
    old = finished("20270110-060000", "Failed")
    reconcile(reconciler, workflow_schedule(failedRunsHistoryLimit=0), [], [old])
    assert cluster.calls == [
        ("create workflow", "daily-20270112-060000"),
        ("status", "daily"),
        ("delete workflow", "daily-20270110-060000"),
    ]
    assert reconciler.events == [
        ("RunCreated", "created workflow daily-20270112-060000 for slot 2027-01-12T06:00:00Z")
    ]


def test_replace_deletes_each_child_as_its_own_kind() -> None:
    """After a switch from runTemplate to workflowTemplate, the active run is still replaced."""
    cluster = Recorder()
    reconciler = Reconciler(cluster)
    running = finished("20270111-060000", "Running")
    running["status"] = {"phase": "Running"}
    reconcile(reconciler, workflow_schedule(concurrencyPolicy="Replace"), [running], [])
    assert cluster.calls[:2] == [
        ("delete", "daily-20270111-060000"),
        ("create workflow", "daily-20270112-060000"),
    ]


def test_a_workflow_refused_for_now_is_named_as_a_workflow() -> None:
    cluster = Recorder(refuse={"create": TransientError("exceeded quota (HTTP 403)")})
    reconciler = Reconciler(cluster)
    with pytest.raises(TransientError):
        reconcile(reconciler, workflow_schedule(), [], [])
    assert reconciler.events == [
        (
            "RunNotCreated",
            "cannot create workflow daily-20270112-060000: exceeded quota (HTTP 403); retrying",
        )
    ]


def test_a_created_workflow_blocks_forbid_until_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Recorder()
    reconciler = Reconciler(cluster)
    spec = workflow_schedule(schedule="* * * * * *", concurrencyPolicy="Forbid")
    reconcile(reconciler, spec, [], [])
    monkeypatch.setattr(schedule_controller, "clock", lambda: NOW + datetime.timedelta(seconds=1))
    reconcile(reconciler, spec, [], [])
    assert cluster.calls.count(("create workflow", "daily-20270112-060001")) == 0
    assert reconciler.events[-1][0] == "SkippedActive"
