"""The workflow controller's order of work and its memory, with a cluster that records calls:
a refused run fails its step (and skips what needs it), runs it created are not created again
before the watch shows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from kubemill.operator import workflow_controller
from kubemill.operator.errors import AlreadyExists, InvalidSpec
from kubemill.operator.workflow_controller import WorkflowReconciler

KEY = ("ns", "wf")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.status: dict[str, Any] = {}
        self.refuse: dict[str, Exception] = {}
        self.existing: dict[str, dict[str, Any]] = {}

    def create_run(self, namespace: str, run: Mapping[str, Any]) -> None:
        name = run["metadata"]["name"]
        self.calls.append(("create", name))
        if name in self.refuse:
            raise self.refuse[name]

    def delete_run(self, namespace: str, name: str) -> None:
        self.calls.append(("delete", name))

    def get_run(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.existing.get(name)

    def replace_workflow_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append(("status", str(status.get("phase", "-"))))
        self.status = dict(status)


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        workflow_controller.kopf,
        "event",
        lambda body, type, reason, message: posted.append((reason, message)),
    )
    return posted


def workflow() -> dict[str, Any]:
    steps = [
        {"name": "a", "runTemplate": {"spec": {"notebook": "s3://n/a.ipynb"}}},
        {"name": "b", "dependsOn": ["a"], "runTemplate": {"spec": {"notebook": "s3://n/b.ipynb"}}},
    ]
    return {
        "metadata": {"name": "wf", "namespace": "ns", "uid": "wf-uid", "generation": 1},
        "spec": {"steps": steps},
        "status": {},
    }


def test_runs_created_are_not_created_again_before_the_watch_shows_them(
    events: list[tuple[str, str]],
) -> None:
    cluster = Recorder()
    reconciler = WorkflowReconciler(cluster)
    reconciler.workflows.apply(KEY, "ADDED", workflow())
    reconciler.reconcile(KEY)
    reconciler.reconcile(KEY)
    assert cluster.calls == [("create", "wf-a"), ("status", "Running")]
    assert events == [("RunCreated", "created run wf-a for step a")]


def test_a_run_created_before_a_restart_is_adopted() -> None:
    cluster = Recorder()
    cluster.refuse["wf-a"] = AlreadyExists("wf-a")
    cluster.existing["wf-a"] = {
        "metadata": {"name": "wf-a", "ownerReferences": [{"uid": "wf-uid"}]}
    }
    reconciler = WorkflowReconciler(cluster)
    reconciler.workflows.apply(KEY, "ADDED", workflow())
    reconciler.reconcile(KEY)
    assert cluster.calls == [("create", "wf-a"), ("status", "Running")]


def test_a_refused_run_fails_its_step_and_skips_what_needs_it(
    events: list[tuple[str, str]],
) -> None:
    cluster = Recorder()
    cluster.refuse["wf-a"] = InvalidSpec("run wf-a was rejected: metadata.labels: Invalid value")
    reconciler = WorkflowReconciler(cluster)
    reconciler.enqueue = lambda key: None  # type: ignore[method-assign]
    reconciler.workflows.apply(KEY, "ADDED", workflow())
    reconciler.reconcile(KEY)
    assert (
        "RunRejected",
        "step a: run wf-a was rejected: metadata.labels: Invalid value",
    ) in events
    reconciler.reconcile(KEY)  # the pass the refusal queued
    steps = {s["name"]: s for s in cluster.status["steps"]}
    assert (steps["a"]["phase"], steps["a"]["reason"]) == ("Failed", "InvalidSpec")
    assert (steps["b"]["phase"], steps["b"]["reason"]) == ("Skipped", "UpstreamFailed")
    assert cluster.status["phase"] == "Failed"


def test_a_namesake_run_of_another_owner_is_never_taken_for_the_steps_run(
    events: list[tuple[str, str]],
) -> None:
    cluster = Recorder()
    cluster.refuse["wf-a"] = AlreadyExists("wf-a")
    owner = {"kind": "NotebookWorkflow", "name": "other", "uid": "other-uid"}
    cluster.existing["wf-a"] = {"metadata": {"name": "wf-a", "ownerReferences": [owner]}}
    reconciler = WorkflowReconciler(cluster)
    reconciler.enqueue = lambda key: None  # type: ignore[method-assign]
    reconciler.workflows.apply(KEY, "ADDED", workflow())
    reconciler.reconcile(KEY)
    reconciler.reconcile(KEY)
    step = cluster.status["steps"][0]
    assert (step["phase"], step["reason"]) == ("Failed", "InvalidSpec")
    assert "exists and is not this workflow's (owned by NotebookWorkflow other)" in step["message"]
    assert events[0][0] == "RunNameTaken"
