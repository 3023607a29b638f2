"""A run whose pod does not start within its start limit fails, its reason naming the cause:
table tests of the pure decisions (no cluster), and the controller's actions around them (a
recording cluster)."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import pytest

from kubemill.operator import handlers
from kubemill.operator.errors import InvalidSpec, TransientError
from kubemill.operator.handlers import Reconciler
from kubemill.operator.meta import JOB_FINALIZER, POD_FINALIZER, job_name
from kubemill.operator.settings import DEFAULT_START_TIMEOUT_SECONDS, Settings
from kubemill.operator.status import (
    START_FAILURES,
    Problem,
    StartLimit,
    derive_status,
    job_unfinished,
    start_deadline,
    start_limit,
    transitions,
)
from kubemill.operator.times import rfc3339
from kubemill.operator.workflows import _run_phase

CREATED = "2026-11-28T10:00:00Z"
BEFORE, AT, AFTER = "2026-11-28T10:00:04Z", "2026-11-28T10:00:05Z", "2026-11-28T10:09:00Z"
IMAGE = "registry.invalid/team/runner:1"
RUN: dict[str, Any] = {
    "metadata": {"name": "r", "namespace": "ns", "uid": "run-uid", "generation": 1},
    "spec": {"notebook": "s3://b/n.ipynb", "output": "s3://o/", "startTimeout": "5s"},
    "status": {},
}
JOB = job_name("r", "run-uid")


def job(created: str | None = CREATED, *conditions: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": JOB, "namespace": "ns", "uid": "job-uid", "finalizers": [JOB_FINALIZER],
        "ownerReferences": [{"kind": "NotebookRun", "uid": "run-uid", "controller": True}],
    }  # fmt: skip
    if created:
        meta["creationTimestamp"] = created
    if deleting:
        meta["deletionTimestamp"] = AT
    conds = [
        {"type": c, "status": "True", "reason": c, "lastTransitionTime": AT} for c in conditions
    ]
    return {"metadata": meta, "status": {"active": 1, "conditions": conds}}


def pod(
    waiting: str = "ContainerCreating",
    message: str = "",
    *,
    scheduled: bool = True,
    condition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    conds = [{"type": "PodScheduled", "status": "True"}] if scheduled else []
    if condition is not None:
        conds.append(condition)
    state = {"waiting": {"reason": waiting, **({"message": message} if message else {})}}
    return {
        "metadata": {
            "name": "p1", "namespace": "ns", "uid": "pod-uid", "creationTimestamp": CREATED,
            "finalizers": [POD_FINALIZER],
            "ownerReferences": [{"kind": "Job", "name": JOB, "controller": True}],
        },
        "status": {
            "phase": "Pending", "conditions": conds,
            "containerStatuses": [{"name": "runner", "image": IMAGE, "state": state}],
        },
    }  # fmt: skip


SECRET = pod("CreateContainerConfigError", 'secret "no-such-db" not found')
PULL = pod("ImagePullBackOff", f'Back-off pulling image "{IMAGE}"')
UNBOUND = pod(scheduled=False)
REFUSED = pod(
    scheduled=False,
    condition={
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
    },
)  # fmt: skip
MOUNT = Problem(
    "pod-uid", "Pod", "FailedMount",
    'MountVolume.SetUp failed for volume "notebook" : configmap "nb" not found', AT,
)  # fmt: skip
CREATE = Problem(
    "job-uid", "Job", "FailedCreate",
    'Error creating: pods "r-" is forbidden: error looking up service account ns/sa: '
    'serviceaccount "sa" not found', AT,
)  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "default", "expected"),
    [
        ({"startTimeout": "5s"}, 600.0, StartLimit(5.0, "spec.startTimeout (5s)")),
        ({"startTimeout": "1h30m"}, None, StartLimit(5400.0, "spec.startTimeout (1h30m)")),
        ({}, 600.0, StartLimit(600.0, "the operator's start timeout (10m0s)")),
        ({}, None, None),
    ],
)
def test_the_limit_is_the_runs_own_else_the_operators(
    spec: dict[str, Any], default: float | None, expected: StartLimit | None
) -> None:
    assert start_limit(spec, default) == expected


def test_a_bad_start_timeout_is_invalid_spec() -> None:
    with pytest.raises(InvalidSpec, match=r"spec\.startTimeout '0s' is not a duration"):
        start_limit({"startTimeout": "0s"}, None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("", DEFAULT_START_TIMEOUT_SECONDS),
        ("90s", 90.0),
        ("1h", 3600.0),
        ("0", None),
        (" 0 ", None),
    ],
)
def test_the_operators_start_timeout_is_a_duration_or_0_for_none(
    text: str, seconds: float | None
) -> None:
    settings = Settings.from_env({"KUBEMILL_START_TIMEOUT": text} if text else {})
    assert settings.start_timeout_seconds == seconds


@pytest.mark.parametrize("text", ["10", "0s", "soon", "-1m"])
def test_a_bad_operator_start_timeout_stops_the_operator_at_start_up(text: str) -> None:
    with pytest.raises(ValueError, match="KUBEMILL_START_TIMEOUT="):
        Settings.from_env({"KUBEMILL_START_TIMEOUT": text})


def test_the_deadline_counts_from_the_jobs_creation() -> None:
    limit = StartLimit(5.0, "")
    assert start_deadline(job(), limit) == datetime.datetime(
        2026, 11, 28, 10, 0, 5, tzinfo=datetime.UTC
    )
    assert start_deadline(job(), None) is None
    # A Job created just now, not seen by the watch yet, has no creation time: no deadline yet.
    assert start_deadline(job(None), limit) is None


@pytest.mark.parametrize(
    ("pods", "problems", "reason", "pending", "names"),
    [
        ([SECRET], [], "ConfigError", "PodProblem", 'Error: secret "no-such-db" not found'),
        ([pod()], [MOUNT], "ConfigError", "PodProblem", 'configmap "nb" not found'),
        ([PULL], [], "ImagePullFailed", "PodProblem", f'the image "{IMAGE}" could not be pulled'),
        ([pod("ErrImagePull", "not found")], [], "ImagePullFailed", "PodProblem", IMAGE),
        ([pod("InvalidImageName", "bad")], [], "ImagePullFailed", "PodProblem", "InvalidImageName"),
        ([REFUSED], [], "Unschedulable", "PodProblem", "didn't match Pod's node affinity/selector"),
        ([UNBOUND], [], "StartTimeout", "Pending", "still waiting for a node"),
        ([], [CREATE], "PodNotCreated", "PodNotCreated", 'serviceaccount "sa" not found'),
        ([pod("CreateContainerError", "no file")], [], "StartTimeout", "PodProblem", "no file"),
        ([pod()], [], "StartTimeout", "Pending", "still being created"),
        ([], [], "StartTimeout", "Pending", "the Job created no runner pod"),
    ],
)  # fmt: skip
def test_past_the_deadline_the_reason_names_the_cause(
    pods: list[dict[str, Any]], problems: list[Problem], reason: str, pending: str, names: str
) -> None:
    before = derive_status(RUN, job(), pods, BEFORE, problems)
    assert (before["phase"], before["reason"]) == ("Pending", pending)
    failed = derive_status({**RUN, "status": before}, job(), pods, AT, problems)
    assert (failed["phase"], failed["reason"]) == ("Failed", reason), failed["message"]
    assert reason in START_FAILURES
    assert failed["message"].startswith("the notebook never started: spec.startTimeout (5s) passed")
    assert names in failed["message"]
    assert failed["failure"] == {"reason": reason, "message": failed["message"]}
    assert failed["completionTime"] == AT
    conditions = {c["type"]: (c["status"], c["reason"]) for c in failed["conditions"]}
    assert conditions["Failed"] == ("True", reason)  # kubectl wait --for=condition=Failed
    assert transitions(before, failed) == [("Warning", reason, failed["message"])]
    # It is final: a later look (the Job being deleted, the pod gone) changes nothing.
    later = derive_status({**RUN, "status": failed}, job(deleting=True), [], AFTER, problems)
    assert (later["phase"], later["reason"], later["message"]) == (
        "Failed", reason, failed["message"]
    )  # fmt: skip


def test_the_operators_default_applies_without_spec_start_timeout() -> None:
    run = {**RUN, "spec": {k: v for k, v in RUN["spec"].items() if k != "startTimeout"}}
    assert derive_status(run, job(), [SECRET], AFTER)["phase"] == "Pending"  # no limit given
    assert derive_status(run, job(), [SECRET], AFTER, (), 600.0)["phase"] == "Pending"
    failed = derive_status(run, job(), [SECRET], AFTER, (), 60.0)
    assert (failed["phase"], failed["reason"]) == ("Failed", "ConfigError")
    assert "the operator's start timeout (1m0s) passed" in failed["message"]
    # The run's own limit wins over the operator's, longer or shorter.
    longer = {**run, "spec": {**run["spec"], "startTimeout": "1h"}}
    assert derive_status(longer, job(), [SECRET], AFTER, (), 60.0)["phase"] == "Pending"
    assert DEFAULT_START_TIMEOUT_SECONDS == Settings().start_timeout_seconds == 600.0


def test_a_runner_that_started_is_not_held_to_the_start_limit() -> None:
    running = pod()
    running["status"].update(phase="Running")
    running["status"]["containerStatuses"][0]["state"] = {"running": {}}
    assert derive_status(RUN, job(), [running], AFTER)["phase"] == "Running"
    # A retry whose pod cannot start, after an attempt that ran: spec.timeout governs.
    ran = {**RUN, "status": {"phase": "Running", "reason": "Running"}}
    assert derive_status(ran, job(), [SECRET], AFTER)["reason"] == "PodProblem"
    # A Job that ended is the Job's account, whatever the clock says.
    complete = derive_status(RUN, job(CREATED, "Complete"), [], AFTER)
    assert complete["phase"] == "Succeeded"


def test_spec_timeout_before_the_start_limit_stays_a_start_timeout() -> None:
    run = {**RUN, "spec": {**RUN["spec"], "timeout": "3s"}}
    failed_job = job(CREATED)
    failed_job["status"]["conditions"] = [
        {
            "type": "Failed",
            "status": "True",
            "reason": "DeadlineExceeded",
            "lastTransitionTime": BEFORE,
        }
    ]
    failed = derive_status(run, failed_job, [SECRET], BEFORE)
    assert failed["reason"] == "StartTimeout" and "spec.timeout (3s)" in failed["message"]


@pytest.mark.parametrize(
    ("the_job", "unfinished"),
    [
        (job(), True),
        (job(CREATED, "Complete"), False),
        (job(CREATED, "Failed"), False),
        (job(deleting=True), False),
        ({"metadata": {"name": JOB}, "status": {}}, False),  # created this pass, not seen yet
    ],
)
def test_only_a_job_still_at_work_is_deleted(the_job: dict[str, Any], unfinished: bool) -> None:
    assert job_unfinished(the_job) is unfinished


def test_a_workflow_counts_a_start_failure_as_a_failed_step() -> None:
    for reason in START_FAILURES:
        run = {"status": {"phase": "Failed", "reason": reason, "message": "m"}}
        assert _run_phase(run) == ("Failed", reason, "m")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.status: dict[str, Any] = {}
        self.pods_now: list[dict[str, Any]] = []
        #: What a Job delete answers (None: it is deleted).
        self.delete_refused: Exception | None = None

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> None:
        self.calls.append(("create", job["metadata"]["name"]))

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        self.calls.append(("configmap", config_map["metadata"]["name"]))

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        self.calls.append(("release-job", job["metadata"]["name"]))

    def delete_job(self, job: Mapping[str, Any]) -> None:
        self.calls.append(("delete-job", job["metadata"]["name"]))
        if self.delete_refused is not None:
            raise self.delete_refused

    def remove_pod_finalizer(self, pod: Mapping[str, Any]) -> None:
        self.calls.append(("release-pod", pod["metadata"]["name"]))

    def list_pods(self, namespace: str, run: str) -> list[dict[str, Any]]:
        self.calls.append(("list-pods", run))
        return self.pods_now

    def replace_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append(("status", f"{status.get('phase')} {status.get('reason')}"))
        self.status = dict(status)


class Controller(Reconciler):
    """The reconciler with its timer requests recorded instead of queued."""

    def __init__(self, cluster: Recorder, settings: Settings) -> None:
        super().__init__(cluster, settings)
        self.timers: list[float] = []

    def enqueue_after(self, key: Any, delay: float) -> None:
        self.timers.append(delay)


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        handlers.kopf, "event", lambda body, type, reason, message: posted.append((reason, message))
    )
    return posted


def reconcile(
    controller: Controller, run: dict[str, Any], jobs: list[Any], pods: list[Any]
) -> None:
    key = ("ns", "r")
    for cache, objects in (
        (controller.runs, [run]),
        (controller.jobs, jobs),
        (controller.pods, pods),
    ):
        for gone in cache.get(key):
            cache.apply(key, "DELETED", gone)
        for obj in objects:
            cache.apply(key, "ADDED", obj)
    controller.reconcile(key)


def ago(seconds: float) -> str:
    return rfc3339(datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds))


def test_the_controller_wakes_at_the_deadline_then_fails_the_run_and_deletes_its_job(
    events: list[tuple[str, str]],
) -> None:
    cluster = Recorder()
    controller = Controller(cluster, Settings())
    reconcile(controller, RUN, [job(ago(1))], [SECRET])
    assert cluster.calls == [("status", "Pending PodProblem")]
    # Queued for the deadline (4 s left, and a second for whole-second times): nothing else
    # would wake it, as a pod stuck on a missing Secret changes no more.
    assert len(controller.timers) == 1 and 4.0 <= controller.timers[0] <= 5.0
    # At the deadline the pods are read afresh (a runner that just started would show), the
    # failure is written first, and only then does the Job go and the finalizers come off.
    cluster.calls.clear()
    cluster.pods_now = [SECRET]
    reconcile(controller, {**RUN, "status": cluster.status}, [job(ago(6))], [SECRET])
    assert cluster.calls == [
        ("list-pods", "r"), ("status", "Failed ConfigError"), ("delete-job", JOB),
        ("release-pod", "p1"), ("release-job", JOB),
    ]  # fmt: skip
    assert events[-1] == ("ConfigError", cluster.status["message"])
    # The next look (the Job being deleted) neither deletes it again nor rewrites the status.
    cluster.calls.clear()
    deleting = job(ago(7), deleting=True)
    reconcile(controller, {**RUN, "status": cluster.status}, [deleting], [])
    assert cluster.calls == [("release-job", JOB)]


def test_a_runner_that_started_as_the_deadline_passed_is_not_failed() -> None:
    cluster = Recorder()
    controller = Controller(cluster, Settings())
    started = pod()
    started["status"]["phase"] = "Running"
    started["status"]["containerStatuses"][0]["state"] = {"running": {}}
    cluster.pods_now = [started]
    reconcile(controller, RUN, [job(ago(6))], [pod()])  # the pod watch lags
    assert cluster.calls == [("list-pods", "r"), ("status", "Running Running")]


def test_a_failed_run_whose_job_is_still_at_work_has_it_deleted_after_a_restart() -> None:
    """The operator stopped between writing the failure and deleting the Job: the next pass
    finds a failed run with a Job still at work, and deletes it."""
    cluster = Recorder()
    controller = Controller(cluster, Settings())
    failed = derive_status(RUN, job(), [SECRET], AT)
    reconcile(controller, {**RUN, "status": failed}, [job(ago(60))], [SECRET])
    assert cluster.calls == [("delete-job", JOB), ("release-pod", "p1"), ("release-job", JOB)]
    assert controller.timers == []


def test_a_refused_job_delete_still_releases_the_pods_and_the_job(
    events: list[tuple[str, str]],
) -> None:
    """An operator without delete on Jobs (RBAC not reapplied after an upgrade, a policy that
    denies it): held finalizers would keep the Job and its pods for good."""
    cluster = Recorder()
    cluster.delete_refused = TransientError('jobs.batch "r-1" is forbidden (HTTP 403)')
    controller = Controller(cluster, Settings())
    failed = derive_status(RUN, job(), [SECRET], AT)
    reconcile(controller, {**RUN, "status": failed}, [job(ago(60))], [SECRET])
    assert cluster.calls == [("delete-job", JOB), ("release-pod", "p1"), ("release-job", JOB)]
    assert events[-1][0] == "JobNotDeleted" and "forbidden (HTTP 403)" in events[-1][1]


def test_a_pass_due_by_the_clock_but_not_by_its_own_time_wakes_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pass takes its time (whole seconds) first and checks the deadline later: between the
    two the deadline can pass. The run is then not failed yet, so it is queued again at once
    instead of waiting for an event that a stuck pod never sends."""
    cluster = Recorder()
    controller = Controller(cluster, Settings())
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    before = rfc3339(created + datetime.timedelta(seconds=4))  # the limit is 5 s
    monkeypatch.setattr(handlers, "rfc3339", lambda moment=None: before)
    monkeypatch.setattr(handlers, "clock", lambda: created + datetime.timedelta(seconds=5.5))
    cluster.pods_now = [SECRET]
    reconcile(controller, RUN, [job(rfc3339(created))], [SECRET])
    assert cluster.status["phase"] == "Pending"
    assert controller.timers == [1.0]
