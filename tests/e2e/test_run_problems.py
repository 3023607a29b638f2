"""Runs that cannot start name the cause within seconds and fail, naming it, once their start
limit passes (their Job deleted), a deadline passed before the notebook started says so, a Job
the API server refuses fails the run at once, and an outcome survives a TTL of 0 while the
operator is down."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from kubemill_testenv import kube, wait
from kubemill_testenv.operatorproc import RUNS
from tests.e2e.conftest import Cluster
from tests.e2e.test_notebookrun import create_run, wait_event, wait_run

pytestmark = pytest.mark.e2e

#: Seconds from applying a run to its status naming what keeps it from starting. The cause is
#: visible in the cluster about a second after the run is applied (the Job is created, the job
#: controller or the node agent tries and reports); the rest is the operator's reaction.
NAMED_WITHIN = 15.0


def wait_reason(
    api: client.ApiClient, namespace: str, name: str, reason: str, needle: str, timeout: float
) -> dict[str, Any]:
    def check(event: str, obj: dict[str, Any]) -> bool:
        status = obj.get("status") or {}
        return (
            event != "DELETED"
            and status.get("reason") == reason
            and needle in str(status.get("message"))
        )

    return wait.wait_for(
        api, RUNS.format(namespace), check, name=name, timeout=timeout,
        what=f"NotebookRun {namespace}/{name} with reason {reason} naming {needle}",
    )  # fmt: skip


def test_a_missing_service_account_is_named_within_seconds(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    started = time.monotonic()
    create_run(
        api, run_namespace, "no-sa", notebook=f"s3://{results_bucket}/notebooks/values.ipynb",
        serviceAccountName="nosuch",
    )  # fmt: skip
    run = wait_reason(api, run_namespace, "no-sa", "PodNotCreated", "nosuch", NAMED_WITHIN)
    took = time.monotonic() - started
    print(f"missing ServiceAccount named after {took:.1f}s: {run['status']['message']}")
    assert run["status"]["phase"] == "Pending"
    assert 'serviceaccount "nosuch" not found' in run["status"]["message"]
    event = wait_event(api, run_namespace, "no-sa", "PodNotCreated")
    assert event["type"] == "Warning" and "nosuch" in event["message"]


def test_a_missing_notebook_config_map_is_named_within_seconds(
    api: client.ApiClient, run_namespace: str
) -> None:
    started = time.monotonic()
    create_run(
        api, run_namespace, "no-cm",
        notebookFrom={"configMapKeyRef": {"name": "no-such-notebooks", "key": "n.ipynb"}},
    )  # fmt: skip
    run = wait_reason(
        api, run_namespace, "no-cm", "PodProblem", 'configmap "no-such-notebooks" not found',
        NAMED_WITHIN,
    )  # fmt: skip
    took = time.monotonic() - started
    print(f"missing ConfigMap named after {took:.1f}s: {run['status']['message']}")
    assert run["status"]["message"].startswith("FailedMount: MountVolume.SetUp failed")
    event = wait_event(api, run_namespace, "no-cm", "PodProblem")
    assert event["type"] == "Warning" and "no-such-notebooks" in event["message"]
    # The kubelet (our node agent) keeps the pod ContainerCreating and retries, counting the
    # repeats on one Event.
    pod = wait.wait_for(
        api, f"/api/v1/namespaces/{run_namespace}/pods", lambda e, o: e != "DELETED",
        label_selector="kubemill.dev/run=no-cm", timeout=30, what="the runner pod",
    )  # fmt: skip
    state = pod["status"]["containerStatuses"][0]["state"]
    assert state["waiting"]["reason"] == "ContainerCreating"
    mount = wait.wait_for(
        api, f"/api/v1/namespaces/{run_namespace}/events",
        lambda e, o: (
            e != "DELETED" and o.get("reason") == "FailedMount" and int(o.get("count", 1)) >= 2
        ),
        timeout=30, what="a repeated FailedMount Event",
    )  # fmt: skip
    assert mount["involvedObject"]["uid"] == pod["metadata"]["uid"]


def test_a_deadline_before_the_notebook_started_is_a_start_timeout(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    started = time.monotonic()
    create_run(
        api, run_namespace, "no-secret", notebook=f"s3://{results_bucket}/notebooks/values.ipynb",
        timeout="30s",
        parametersFrom=[{"name": "value", "secretKeyRef": {"name": "no-such-db", "key": "pw"}}],
    )  # fmt: skip
    pending = wait_reason(api, run_namespace, "no-secret", "PodProblem", "no-such-db", 30)
    assert 'secret "no-such-db" not found' in pending["status"]["message"]
    run = wait_run(api, run_namespace, "no-secret", "Failed", timeout=90)
    print(f"StartTimeout after {time.monotonic() - started:.1f}s: {run['status']['message']}")
    status = run["status"]
    assert status["reason"] == "StartTimeout", status
    assert "never started" in status["message"] and "(30s)" in status["message"]
    assert 'secret "no-such-db" not found' in status["message"]
    assert wait_event(api, run_namespace, "no-secret", "StartTimeout")["type"] == "Warning"


#: The start limit of the runs that never start: long enough for the cause to show first (it
#: shows within a second or so; on a loaded machine the node agent may take seconds to bind the
#: pod and report), so that the run fails naming it rather than as a plain StartTimeout.
START_TIMEOUT = "20s"

#: The missing Secret, the image that does not exist and the node label nobody has, each in
#: the field that names it; the reason the run ends with, and what its message must name.
NEVER_STARTS = {
    "secret": (
        {"envFrom": [{"secretRef": {"name": "no-such-env"}}]},
        "ConfigError", 'secret "no-such-env" not found',
    ),
    "parameter-secret": (
        {"parametersFrom": [{"name": "v", "secretKeyRef": {"name": "no-such-db", "key": "pw"}}]},
        "ConfigError", 'secret "no-such-db" not found',
    ),
    "configmap": (
        {"notebookFrom": {"configMapKeyRef": {"name": "no-such-notebooks", "key": "n.ipynb"}}},
        "ConfigError", 'configmap "no-such-notebooks" not found',
    ),
    "image": (
        {"image": "registry.invalid/kubemill/absent:1"},
        "ImagePullFailed", 'the image "registry.invalid/kubemill/absent:1" could not be pulled',
    ),
    "unschedulable": (
        {"nodeSelector": {"kubemill.dev/e2e-pool": "none-has-it"}},
        "Unschedulable", "didn't match Pod's node affinity/selector",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", NEVER_STARTS)
def test_a_pod_that_does_not_start_in_time_fails_the_run_and_its_job_goes(
    api: client.ApiClient, run_namespace: str, results_bucket: str, case: str
) -> None:
    extra, reason, names = NEVER_STARTS[case]
    name = f"never-{case}"
    jobs = f"/apis/batch/v1/namespaces/{run_namespace}/jobs"
    pods = f"/api/v1/namespaces/{run_namespace}/pods"
    started = time.monotonic()
    source = {} if "notebookFrom" in extra else {
        "notebook": f"s3://{results_bucket}/notebooks/values.ipynb"
    }  # fmt: skip
    create_run(api, run_namespace, name, startTimeout=START_TIMEOUT, **source, **extra)
    run = wait_run(api, run_namespace, name, "Failed", timeout=90)
    took = time.monotonic() - started
    print(f"{case}: {reason} after {took:.1f}s: {run['status']['message']}")
    status = run["status"]
    assert (status["reason"], status["failure"]["reason"]) == (reason, reason), status
    assert status["message"].startswith(
        f"the notebook never started: spec.startTimeout ({START_TIMEOUT}) passed while "
    ), status["message"]
    assert names in status["message"], status["message"]
    failed = wait.condition(run, "Failed")
    assert failed is not None and (failed["status"], failed["reason"]) == ("True", reason)
    event = wait_event(api, run_namespace, name, reason)
    assert event["type"] == "Warning" and names in event["message"]
    # The Job goes (and with it the pod), so the job controller and the kubelet stop trying;
    # a Job that is gone creates no pod, so none comes after.
    wait.wait_gone(api, jobs, status["jobName"], timeout=60, what="the run's Job to go")
    selector = f"kubemill.dev/run={name}"
    for pod in kube.get(api, pods, labelSelector=selector)["items"]:
        wait.wait_gone(api, pods, pod["metadata"]["name"], timeout=60, what="the run's pod to go")
    assert kube.get(api, pods, labelSelector=selector)["items"] == []
    assert kube.get(api, jobs, labelSelector=selector)["items"] == []
    after = kube.get(api, f"{RUNS.format(run_namespace)}/{name}")["status"]
    assert (after["phase"], after["reason"], after["attempts"]) == ("Failed", reason, 1)


@contextlib.contextmanager
def jobs_refused(api: client.ApiClient, namespace: str, reason: str) -> Iterator[str]:
    """A ValidatingAdmissionPolicy that refuses every Job in `namespace` with `reason`
    (Invalid: 422, RequestEntityTooLarge: 413, Forbidden: 403), as a cluster's policy engine
    may: a refusal of the Job as the operator builds it that no NotebookRun schema foresees."""
    name = f"e2e-refuse-jobs-{namespace}"[:63]
    message = f"Jobs are not allowed in {namespace} (e2e policy, {reason})"
    policies = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
    bindings = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    kube.request(api, "POST", policies, body={
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["jobs"],
            }]},
            "validations": [{"expression": "false", "message": message, "reason": reason}],
        },
    })  # fmt: skip
    kube.request(api, "POST", bindings, body={
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {
            "policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    })  # fmt: skip
    try:
        # The policy takes effect a moment after it is created: probe with a dry run.
        probe = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe"},
                 "spec": {"template": {"spec": {"restartPolicy": "Never",
                          "containers": [{"name": "c", "image": "x"}]}}}}  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                kube.request(api, "POST", f"/apis/batch/v1/namespaces/{namespace}/jobs",
                             body=probe, query={"dryRun": "All"})  # fmt: skip
            except ApiException as exc:
                if message in str(exc.body):
                    break
                raise
            assert time.monotonic() < deadline, "the e2e admission policy never took effect"
            time.sleep(0.5)  # the policy compiles asynchronously; nothing reports when it is done
        yield message
    finally:
        kube.request(api, "DELETE", f"{bindings}/{name}")
        kube.request(api, "DELETE", f"{policies}/{name}")


@pytest.mark.parametrize(("reason", "code"), [("Invalid", 422), ("RequestEntityTooLarge", 413)])
def test_a_job_the_api_server_refuses_fails_the_run_at_once(
    api: client.ApiClient, run_namespace: str, results_bucket: str, reason: str, code: int
) -> None:
    """Every refusal of the Job as built that will not pass by itself is InvalidSpec with the
    API server's message, never a retry. (A 400, such as a memory limit of "4 GB" got before
    the CRD refused it, cannot be provoked through an admission policy: the unit tests keep the
    operator's mapping of every status code.)"""
    with jobs_refused(api, run_namespace, reason) as message:
        started = time.monotonic()
        create_run(api, run_namespace, "refused",
                   notebook=f"s3://{results_bucket}/notebooks/values.ipynb")  # fmt: skip
        run = wait_run(api, run_namespace, "refused", "Failed", timeout=30)
    print(f"HTTP {code}: InvalidSpec after {time.monotonic() - started:.1f}s")
    status = run["status"]
    assert status["reason"] == "InvalidSpec", status
    assert status["message"].startswith("the Job was rejected: ") and message in status["message"]
    assert "jobName" not in status


def test_a_refusal_that_may_pass_leaves_the_run_pending_and_named_until_it_passes(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    with jobs_refused(api, run_namespace, "Forbidden") as message:
        create_run(api, run_namespace, "forbidden",
                   notebook=f"s3://{results_bucket}/notebooks/values.ipynb")  # fmt: skip
        run = wait_reason(api, run_namespace, "forbidden", "JobNotCreated", message, NAMED_WITHIN)
        assert "(HTTP 403)" in run["status"]["message"]
    # Once the policy is gone, a retry (1 s doubling, at most 60 s apart) creates the Job.
    run = wait_run(api, run_namespace, "forbidden", "Succeeded", "Failed", timeout=120)
    assert run["status"]["phase"] == "Succeeded", run["status"]


def test_an_outcome_survives_ttl_zero_while_the_operator_is_down(
    api: client.ApiClient, operator: Any, run_namespace: str, results_bucket: str
) -> None:
    jobs = f"/apis/batch/v1/namespaces/{run_namespace}/jobs"
    pods = f"/api/v1/namespaces/{run_namespace}/pods"
    version = wait.resource_version(api, jobs)
    create_run(
        api, run_namespace, "ttl0", notebook=f"s3://{results_bucket}/notebooks/values.ipynb",
        parameters={"value": 42}, ttlSecondsAfterFinished=0,
    )  # fmt: skip
    job = wait.wait_for(
        api, jobs, lambda e, o: e == "ADDED", since=version, timeout=30, what="the run's Job"
    )
    operator.kill()
    try:
        seen = kube.get(api, f"{RUNS.format(run_namespace)}/ttl0").get("status") or {}
        assert seen.get("phase") not in ("Succeeded", "Failed"), "finished before the kill"
        # The Job finishes and its TTL of 0 deletes it at once (foreground: the pods first).
        name = job["metadata"]["name"]
        wait.wait_for(
            api, jobs, lambda e, o: bool(o["metadata"].get("deletionTimestamp")), name=name,
            timeout=120, what="the TTL controller to delete the Job",
        )  # fmt: skip
        # Kept by our finalizer alone (the job controller has let go of it), with the summary
        # in its termination message.
        pod = wait.wait_for(
            api, pods,
            lambda e, o: (
                e != "DELETED" and bool(o["metadata"].get("deletionTimestamp"))
                and o["metadata"].get("finalizers") == ["kubemill.dev/status-recorded"]
            ),
            label_selector="kubemill.dev/run=ttl0", timeout=60,
            what="the garbage collector to delete the runner pod",
        )  # fmt: skip
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert '"outputUrl"' in terminated["message"]
    finally:
        operator.start()
    back = time.monotonic()
    run = wait_run(api, run_namespace, "ttl0", "Succeeded", "Failed", timeout=60)
    print(f"TTL 0: outcome recorded {time.monotonic() - back:.1f}s after the operator was ready")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["outputUrl"] == f"s3://{results_bucket}/runs/{run_namespace}/ttl0/output.ipynb"
    assert status["results"] == {"repr": "42", "type": "int"}
    # Released: nothing is left behind.
    wait.wait_gone(api, pods, pod["metadata"]["name"], timeout=60, what="the runner pod to go")
    wait.wait_gone(api, jobs, name, timeout=60, what="the Job to go")
    print(f"TTL 0: pod and Job gone {time.monotonic() - back:.1f}s after the operator was ready")


def quota(api: client.ApiClient, namespace: str, name: str, resource: str) -> None:
    """A ResourceQuota of 0 for `resource`, with the status the quota controller writes, so
    that admission (which reads only the status) enforces it without waiting for a sync."""
    path = f"/api/v1/namespaces/{namespace}/resourcequotas"
    kube.request(
        api, "POST", path,
        body={"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
              "spec": {"hard": {resource: "0"}}},
    )  # fmt: skip
    kube.merge_patch(
        api, f"{path}/{name}/status", {"status": {"hard": {resource: "0"}, "used": {resource: "0"}}}
    )


def test_quotas_are_named_and_a_refused_job_is_retried(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    """A quota on Jobs refuses the Job itself (403 from the API server: it may pass, so the run
    stays Pending, says so, and is retried); a quota on pods refuses the Job's pod."""
    quota(api, run_namespace, "no-jobs", "count/jobs.batch")
    started = time.monotonic()
    create_run(
        api, run_namespace, "quota", notebook=f"s3://{results_bucket}/notebooks/values.ipynb"
    )
    run = wait_reason(api, run_namespace, "quota", "JobNotCreated", "exceeded quota", NAMED_WITHIN)
    print(f"Job quota named after {time.monotonic() - started:.1f}s: {run['status']['message']}")
    assert run["status"]["phase"] == "Pending" and "no-jobs" in run["status"]["message"]
    assert wait_event(api, run_namespace, "quota", "JobNotCreated")["type"] == "Warning"
    # The quota moves from Jobs to pods: the retry creates the Job, whose pod is refused.
    quota(api, run_namespace, "no-pods", "pods")
    kube.request(api, "DELETE", f"/api/v1/namespaces/{run_namespace}/resourcequotas/no-jobs")
    run = wait_reason(api, run_namespace, "quota", "PodNotCreated", "exceeded quota", 90)
    print(f"pod quota named: {run['status']['message']}")
    assert "no-pods" in run["status"]["message"] and run["status"]["jobName"]


def test_an_evicted_attempt_is_kept_until_the_run_ends_then_released(
    api: client.ApiClient, kubemill_installed: Cluster, run_namespace: str, results_bucket: str
) -> None:
    pods = f"/api/v1/namespaces/{run_namespace}/pods"
    create_run(
        api, run_namespace, "evicted", notebook=f"s3://{results_bucket}/notebooks/sleep.ipynb",
        parameters={"seconds": 6},
    )  # fmt: skip
    wait_run(api, run_namespace, "evicted", "Running", timeout=60)
    first = kube.get(api, pods, labelSelector="kubemill.dev/run=evicted")["items"][0]
    name = first["metadata"]["name"]
    # Evicted while a cell runs, so the run has something to save.
    kubemill_installed.await_log_line(run_namespace, name, "started sleeping")
    kube.request(
        api, "POST", f"{pods}/{name}/eviction",
        body={"apiVersion": "policy/v1", "kind": "Eviction",
              "metadata": {"name": name, "namespace": run_namespace}},
    )  # fmt: skip
    # Not counted as a failure (podFailurePolicy Ignore): a second attempt runs, while the
    # evicted pod stays, stopped, under our finalizer.
    second = wait.wait_for(
        api, pods, lambda e, o: e != "DELETED" and o["metadata"]["name"] != name,
        label_selector="kubemill.dev/run=evicted", timeout=60, what="a second attempt",
    )  # fmt: skip
    evicted = wait.wait_for(
        api, pods, wait.pod_phase("Failed"), name=name, timeout=60, what="the evicted pod stopped"
    )
    assert evicted["metadata"].get("deletionTimestamp")
    assert "kubemill.dev/status-recorded" in evicted["metadata"]["finalizers"]
    run = wait_run(api, run_namespace, "evicted", "Succeeded", "Failed", timeout=120)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["attempts"] == 2
    wait.wait_gone(api, pods, name, timeout=30, what="the evicted pod, once released")
    # The attempt that succeeded stays with its Job (until the Job's TTL), released.
    wait.wait_for(
        api, pods,
        lambda e, o: "kubemill.dev/status-recorded" not in (o["metadata"].get("finalizers") or []),
        name=second["metadata"]["name"], timeout=30, what="the second attempt released",
    )  # fmt: skip
