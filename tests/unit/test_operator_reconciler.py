"""The run controller's order of work with a cluster that records calls: outcomes are written
before any finalizer comes off, refusals of the Job are named or final, and Events about a
run's Job or pod reach it whichever arrives first.

The API itself is exercised end to end in tests/e2e/test_run_problems.py.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Hashable, Mapping
from typing import Any

import pytest

from kubemill.operator import handlers
from kubemill.operator.cache import Cache
from kubemill.operator.client import KubernetesCluster
from kubemill.operator.errors import AlreadyExists, InvalidSpec, TransientError
from kubemill.operator.handlers import Reconciler
from kubemill.operator.meta import JOB_FINALIZER, POD_FINALIZER, job_name
from kubemill.operator.problems import Problems
from kubemill.operator.settings import Settings
from kubemill.operator.status import Problem

KEY = ("ns", "r")
RUN: dict[str, Any] = {
    "apiVersion": "kubemill.dev/v1alpha1",
    "kind": "NotebookRun",
    "metadata": {"name": "r", "namespace": "ns", "uid": "run-uid", "generation": 1},
    "spec": {"notebook": "s3://notebooks/n.ipynb", "output": "s3://results/"},
    "status": {},
}
JOB = job_name("r", "run-uid")
T0, T1 = "2026-11-28T10:00:00Z", "2026-11-28T10:00:05Z"


class Recorder:
    """A cluster whose calls are recorded; `refuse` makes Job creation fail."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.status: dict[str, Any] = {}
        self.refuse = refuse
        self.config_maps: list[dict[str, Any]] = []
        #: The pods the API server has now (the watch may not have shown them).
        self.pods_now: list[dict[str, Any]] = []
        #: The run as the API server has it (the runs' watch may not have shown it).
        self.run_now: dict[str, Any] | None = None

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> None:
        self.calls.append(("create", job["metadata"]["name"]))
        if self.refuse is not None:
            raise self.refuse

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        self.calls.append(("configmap", config_map["metadata"]["name"]))
        self.config_maps.append(dict(config_map))

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        self.calls.append(("release-job", job["metadata"]["name"]))

    def remove_pod_finalizer(self, pod: Mapping[str, Any]) -> None:
        self.calls.append(("release-pod", pod["metadata"]["name"]))

    def get_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get-run", name))
        return self.run_now

    def list_pods(self, namespace: str, run: str) -> list[dict[str, Any]]:
        self.calls.append(("list-pods", run))
        return self.pods_now

    def replace_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.calls.append(("status", str(status.get("phase"))))
        self.status = dict(status)


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        handlers.kopf, "event", lambda body, type, reason, message: posted.append((reason, message))
    )
    return posted


def job(*conditions: str, deleting: bool = False, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": JOB, "namespace": "ns", "uid": "job-uid", "finalizers": [JOB_FINALIZER],
        "ownerReferences": [{"kind": "NotebookRun", "uid": "run-uid", "controller": True}],
    }  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = T1
    conds = [
        {"type": c, "status": "True", "reason": c, "lastTransitionTime": T1} for c in conditions
    ]
    return {"metadata": meta, "status": {"startTime": T0, **status, "conditions": conds}}


def pod(name: str, owner: str = JOB, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
    phase = "Pending"
    if summary is not None:
        state = {"terminated": {"exitCode": 0, "message": json.dumps(summary)}}
        phase = "Succeeded"
    return {
        "metadata": {
            "name": name, "namespace": "ns", "uid": f"{name}-uid", "creationTimestamp": T0,
            "finalizers": [POD_FINALIZER, "batch.kubernetes.io/job-tracking"],
            "ownerReferences": [{"kind": "Job", "name": owner, "controller": True}],
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "runner", "state": state}]},
    }  # fmt: skip


def reconcile(
    reconciler: Reconciler, run: dict[str, Any] | None, jobs: list[Any], pods: list[Any]
) -> None:
    load(reconciler.runs, [run] if run else [])
    load(reconciler.jobs, jobs)
    load(reconciler.pods, pods)
    reconciler.reconcile(KEY)


def load(cache: Cache, objects: list[Any]) -> None:
    """Make `objects` what the watches delivered under KEY (the earlier ones deleted)."""
    for gone in cache.get(KEY):
        cache.apply(KEY, "DELETED", gone)
    for obj in objects:
        meta = obj["metadata"]
        cache.apply(KEY, "ADDED", {**obj, "metadata": {"uid": meta.get("name"), **meta}})


def test_the_outcome_is_written_before_pods_and_job_are_released() -> None:
    """TTL 0 and an operator that was down: the Job is being deleted and its pods too, both
    kept by our finalizers; the status is written from the pod's summary first."""
    cluster = Recorder()
    summary = {"exitCode": 0, "outputUrl": "s3://o/output.ipynb", "results": {"rows": 3}}
    # A first attempt that failed (retries: 1) is kept until the end too, and then let go.
    first = pod("p1", summary={"exitCode": 10, "failure": {"reason": "CellError"}})
    first["status"]["phase"] = "Failed"
    done = pod("p2", summary=summary)
    done["metadata"]["creationTimestamp"] = T1
    for p in (first, done):
        p["metadata"]["deletionTimestamp"] = T1
    reconcile(Reconciler(cluster, Settings()), RUN, [job("Complete", deleting=True)], [first, done])
    assert cluster.calls == [
        ("status", "Succeeded"), ("release-pod", "p1"), ("release-pod", "p2"), ("release-job", JOB)
    ]  # fmt: skip
    assert cluster.status["outputUrl"] == "s3://o/output.ipynb"
    assert cluster.status["results"] == {"rows": 3}


def test_a_pod_seen_running_after_its_job_ended_is_kept_until_its_summary_is_read() -> None:
    """The Job and pod watches are separate streams: the Job can say Complete while the pod
    index still shows the runner running. Releasing then (TTL 0 deletes the pod at once) would
    lose the outcome; the pod and the Job are kept until the pod's end is seen."""
    cluster = Recorder()
    reconciler = Reconciler(cluster, Settings())
    running = pod("p1")
    running["status"].update(
        phase="Running", containerStatuses=[{"name": "runner", "state": {"running": {}}}]
    )
    cluster.pods_now = [running]  # (the Job failing past its deadline, say: the kill is due)
    reconcile(reconciler, RUN, [job("Complete", deleting=True)], [running])
    assert cluster.calls == [("list-pods", "r"), ("status", "Succeeded")]
    summary = {"exitCode": 0, "outputUrl": "s3://o/output.ipynb", "results": {"rows": 3}}
    reconcile(reconciler, RUN, [job("Complete", deleting=True)], [pod("p1", summary=summary)])
    assert cluster.calls[2:] == [
        ("status", "Succeeded"),
        ("release-pod", "p1"),
        ("release-job", JOB),
    ]
    assert cluster.status["outputUrl"] == "s3://o/output.ipynb"
    assert cluster.status["results"] == {"rows": 3}


def test_a_job_seen_ended_before_its_pod_reads_the_pod_from_the_api_server() -> None:
    """After a restart (or in a burst) the Job watch can show Complete before the pod watch
    shows the pod at all. The run must not end without its results: a run taking a value from
    it would fail with MissingResult. The pods are read once, when the run ends."""
    cluster = Recorder()
    reconciler = Reconciler(cluster, Settings())
    summary = {"exitCode": 0, "outputUrl": "s3://o/output.ipynb", "results": {"rows": 3}}
    cluster.pods_now = [pod("p1", summary=summary), pod("other", owner="r-deadbeef")]
    reconcile(reconciler, RUN, [job("Complete")], [])
    assert cluster.calls == [
        ("list-pods", "r"), ("status", "Succeeded"), ("release-pod", "p1"), ("release-job", JOB),
    ]  # fmt: skip
    assert cluster.status["results"] == {"rows": 3}
    reconcile(reconciler, {**RUN, "status": cluster.status}, [job("Complete")], [])
    assert [c for c in cluster.calls if c[0] == "list-pods"] == [("list-pods", "r")]


def test_a_failed_job_seen_before_its_pod_keeps_the_runners_account() -> None:
    cluster = Recorder()
    failure = {"reason": "CellError", "message": "cell 3 raised ValueError: bad", "cell": 3}
    summary = {"exitCode": 1, "outputUrl": "s3://o/output.ipynb", "results": {}, "failure": failure}
    ended = pod("p1", summary=summary)
    ended["status"]["phase"] = "Failed"
    cluster.pods_now = [ended]
    reconcile(Reconciler(cluster, Settings()), RUN, [job("Failed")], [])
    assert (cluster.status["reason"], cluster.status["failure"]["cell"]) == ("CellError", 3)


def test_a_run_whose_output_a_viewer_serves_names_its_page() -> None:
    cluster = Recorder()
    settings = Settings(viewer_url="https://nb.example", viewer_root="s3://o/")
    done = pod("p1", summary={"exitCode": 0, "outputUrl": "s3://o/ns/r/output.ipynb"})
    reconcile(Reconciler(cluster, settings), RUN, [job("Complete")], [done])
    assert cluster.status["viewerUrl"] == "https://nb.example/view/ns/r/output.ipynb"
    elsewhere = pod("p1", summary={"exitCode": 0, "outputUrl": "s3://other/output.ipynb"})
    reconcile(Reconciler(cluster, settings), RUN, [job("Complete")], [elsewhere])
    assert "viewerUrl" not in cluster.status


def test_results_that_are_none_are_written_as_null_not_dropped() -> None:
    """A notebook may record None; the status is replaced whole, so None stays a value (a merge
    patch would read it as "delete this key" and the result would vanish)."""
    cluster = Recorder()
    results = {"nothing": None, "nested": {"a": None, "b": [None, 1]}, "rows": 3}
    done = pod("p1", summary={"exitCode": 0, "outputUrl": "s3://o/out.ipynb", "results": results})
    reconcile(Reconciler(cluster, Settings()), RUN, [job("Complete")], [done])
    assert cluster.status["results"] == results
    assert "nothing" in cluster.status["results"]


def test_a_running_run_keeps_its_pods_and_a_namesakes_pods_are_released() -> None:
    cluster = Recorder()
    stale = pod("old", owner="r-deadbeef")
    namesake = job()
    namesake["metadata"].update(
        name="r-deadbeef", uid="old-job-uid", ownerReferences=[{"uid": "old-run-uid"}]
    )
    reconcile(Reconciler(cluster, Settings()), RUN, [job(active=1), namesake], [pod("p1"), stale])
    assert ("release-pod", "old") in cluster.calls and (
        "release-job",
        "r-deadbeef",
    ) in cluster.calls
    assert ("release-pod", "p1") not in cluster.calls and ("release-job", JOB) not in cluster.calls


def test_a_deleted_run_releases_everything_it_had() -> None:
    cluster = Recorder()
    reconcile(Reconciler(cluster, Settings()), None, [job(active=1)], [pod("p1"), pod("p2")])
    assert cluster.calls == [
        ("get-run", "r"), ("release-pod", "p1"), ("release-pod", "p2"), ("release-job", JOB),
    ]  # fmt: skip


def test_a_run_the_watch_has_not_listed_yet_keeps_its_pods_and_job() -> None:
    """Just after a start, a pod's or Job's watch can deliver before the runs' watch lists the
    run. Absent from the cache is not deleted: the pod holds the outcome (a TTL of 0 has
    deleted it but for our finalizer), and releasing it would lose the results."""
    cluster = Recorder()
    cluster.run_now = RUN
    summary = {"exitCode": 0, "outputUrl": "s3://o/output.ipynb", "results": {"rows": 3}}
    reconcile(
        Reconciler(cluster, Settings()), None, [job("Complete")], [pod("p1", summary=summary)]
    )
    assert cluster.calls == [("get-run", "r")]


def test_a_job_refused_for_good_fails_the_run_at_once() -> None:
    cluster = Recorder(InvalidSpec("the Job was rejected: quantities must match ..."))
    reconcile(Reconciler(cluster, Settings()), RUN, [], [])
    assert cluster.status["phase"] == "Failed" and cluster.status["reason"] == "InvalidSpec"
    assert "quantities must match" in cluster.status["message"]


def test_a_refusal_that_may_pass_is_named_on_the_run_and_retried(
    events: list[tuple[str, str]],
) -> None:
    cluster = Recorder(
        TransientError("exceeded quota: jobs, requested: count/jobs.batch=1 (HTTP 403)")
    )
    reconciler = Reconciler(cluster, Settings())
    with pytest.raises(TransientError):  # the queue retries it with backoff
        reconcile(reconciler, RUN, [], [])
    assert (cluster.status["phase"], cluster.status["reason"]) == ("Pending", "JobNotCreated")
    assert "exceeded quota" in cluster.status["message"]
    assert events == [("JobNotCreated", cluster.status["message"])]
    # The same refusal again changes nothing on the run.
    with pytest.raises(TransientError):
        reconcile(reconciler, RUN, [], [])
    assert [c for c in cluster.calls if c[0] == "status"] == [("status", "Pending")]
    # Once the Job exists, the run waits for its pod.
    cluster.refuse = AlreadyExists(JOB)
    reconcile(reconciler, RUN, [], [])
    assert cluster.status["reason"] == "Pending"


def test_an_event_reaches_its_run_whether_it_comes_before_or_after_the_job() -> None:
    cluster = Recorder()
    reconciler = Reconciler(cluster, Settings())
    create = Problem("job-uid", "Job", "FailedCreate", 'serviceaccount "sa" not found', T1)
    reconciler.problems.report(create)  # before the reconciler has seen the Job
    reconcile(reconciler, RUN, [job(active=0)], [])
    assert cluster.status["reason"] == "PodNotCreated"


def test_problems_queue_the_run_once_its_uids_are_claimed() -> None:
    queued: list[Hashable] = []
    problems = Problems(queued.append)
    early = Problem("job-uid", "Job", "FailedCreate", "m1", T0)
    problems.report(early)
    assert queued == []  # nobody claimed the uid yet
    assert problems.observe(KEY, ["job-uid"]) == [early]
    late = Problem("job-uid", "Job", "FailedCreate", "m2", T1)
    problems.report(late)
    assert queued == [KEY]
    assert problems.observe(KEY, ["job-uid"]) == [late]
    # A relisted older Event does not replace the newer one.
    problems.report(early)
    assert problems.observe(KEY, ["job-uid"]) == [late]
    # A uid the run no longer has (a deleted pod), and a released run, are forgotten.
    problems.report(Problem("pod-uid", "Pod", "FailedMount", "m", T1))
    assert len(problems.observe(KEY, ["job-uid", "pod-uid"])) == 2
    assert problems.observe(KEY, ["job-uid"]) == [late]
    problems.release(KEY)
    assert len(problems) == 0


def test_events_nobody_claims_expire() -> None:
    clock = [0.0]
    problems = Problems(lambda key: None, unclaimed_seconds=300, clock=lambda: clock[0])
    problems.report(Problem("a", "Job", "FailedCreate", "m", T0))
    clock[0] = 301.0
    problems.report(Problem("b", "Job", "FailedCreate", "m", T0))
    assert len(problems) == 1 and problems.observe(KEY, ["a", "b"])[0].uid == "b"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = "reason"
        self.body = json.dumps({"message": message})


class Batch:
    def __init__(self, error: ApiError) -> None:
        self.error = error

    def create_namespaced_job(self, namespace: str, job: Any, **_: Any) -> None:
        raise self.error


def cluster_answering(status: int, message: str) -> KubernetesCluster:
    cluster = object.__new__(KubernetesCluster)
    cluster._batch = Batch(ApiError(status, message))  # type: ignore[assignment]
    cluster._error = ApiError  # type: ignore[assignment]
    return cluster


@pytest.mark.parametrize("code", [400, 413, 422])
def test_every_rejection_of_the_job_as_built_is_invalid_spec(code: int) -> None:
    """A 400 is what a memory limit of "4 GB" gets: the Job does not even decode."""
    message = 'quantities must match the regular expression (spec.template...memory: "4 GB")'
    with pytest.raises(InvalidSpec, match="quantities must match"):
        cluster_answering(code, message).create_job("ns", {"metadata": {"name": JOB}})


@pytest.mark.parametrize("code", [403, 404, 429, 500, 503])
def test_refusals_that_may_pass_are_transient_with_the_api_servers_message(code: int) -> None:
    with pytest.raises(TransientError, match=rf"exceeded quota: jobs \(HTTP {code}\)"):
        cluster_answering(code, "exceeded quota: jobs").create_job(
            "ns", {"metadata": {"name": JOB}}
        )
    with pytest.raises(AlreadyExists):
        cluster_answering(409, "exists").create_job("ns", {"metadata": {"name": JOB}})


def test_an_event_from_the_client_becomes_a_problem() -> None:
    from types import SimpleNamespace as NS

    from kubemill.operator.problems import problem_from_event

    moment = datetime.datetime(2026, 11, 28, 10, 0, 5, tzinfo=datetime.UTC)
    event = NS(
        involved_object=NS(uid="job-uid", kind="Job"), reason="FailedCreate",
        message="Error creating: quota\n", last_timestamp=moment, series=None, event_time=None,
        first_timestamp=None, metadata=NS(creation_timestamp=None),
    )  # fmt: skip
    assert problem_from_event(event) == Problem(
        "job-uid", "Job", "FailedCreate", "Error creating: quota", T1
    )
    # An events.k8s.io Event seen through core/v1: no lastTimestamp, its series says when.
    event.last_timestamp, event.series = None, NS(last_observed_time=moment)
    assert problem_from_event(event).seen == T1  # type: ignore[union-attr]
    event.involved_object = NS(uid="", kind="Job")
    assert problem_from_event(event) is None


def test_a_run_waits_without_a_job_then_starts_when_its_upstream_succeeds(
    events: list[tuple[str, str]],
) -> None:
    cluster = Recorder()
    reconciler = Reconciler(cluster, Settings())
    downstream = {
        **RUN,
        "spec": {
            **RUN["spec"],
            "parametersFrom": [{"name": "rows", "notebookRunRef": {"name": "up", "result": "n"}}],
        },
    }
    reconcile(reconciler, downstream, [], [])
    assert cluster.calls == [("status", "Waiting")]
    assert cluster.status["message"] == "waiting for run up (it does not exist yet)"
    assert events == [("Waiting", "waiting for run up (it does not exist yet)")]
    # The upstream appears, and later succeeds: each of its events queues the waiting run.
    queued: list[Any] = []
    reconciler.enqueue = queued.append  # type: ignore[method-assign]
    upstream = {
        "metadata": {"name": "up", "namespace": "ns", "uid": "up-uid"},
        "spec": {},
        "status": {"phase": "Succeeded", "outputUrl": "s3://results/ns/up/output.ipynb",
                   "results": {"n": [1, None]}},
    }  # fmt: skip
    reconciler.run_seen(KEY, "ADDED", downstream)
    reconciler.run_seen(("ns", "up"), "MODIFIED", upstream)
    assert ("ns", "r") in queued
    reconciler.runs.apply(KEY, "MODIFIED", {**downstream, "status": cluster.status})
    reconciler.reconcile(KEY)
    assert cluster.calls[1:] == [
        ("configmap", f"{JOB}-parameters-0"),  # the upstream file rides along
        ("create", JOB),  # (the Job's watch event writes the status that names it)
    ]
    (data,) = (c["data"] for c in cluster.config_maps)
    assert json.loads(data["parameters.json"]) == {"rows": [1, None]}
    assert json.loads(data["upstream.json"])["upstream"][0]["uid"] == "up-uid"


def test_a_run_whose_upstream_failed_fails_without_a_job() -> None:
    cluster = Recorder()
    reconciler = Reconciler(cluster, Settings())
    refs = [{"name": "rows", "notebookRunRef": {"name": "up", "output": "folder"}}]
    upstream = {
        "metadata": {"name": "up", "namespace": "ns", "uid": "up-uid"},
        "spec": {},
        "status": {"phase": "Failed", "reason": "CellError", "message": "cell 2 raised"},
    }
    reconciler.runs.apply(("ns", "up"), "ADDED", upstream)
    reconcile(reconciler, {**RUN, "spec": {**RUN["spec"], "parametersFrom": refs}}, [], [])
    assert cluster.calls == [("status", "Failed")]
    assert cluster.status["reason"] == "UpstreamFailed"
    assert cluster.status["message"] == "run up failed (CellError): cell 2 raised"
    assert cluster.status["completionTime"]
