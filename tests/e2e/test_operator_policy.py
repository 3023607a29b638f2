"""The operator's `patch` on pods and Jobs serves one purpose, taking kubemill's finalizer off;
deploy/base/operator-policy.yaml holds its ServiceAccount to that, since RBAC cannot. Acting as
that ServiceAccount (impersonated from the admin's credentials) on a pod kubemill never made:
removing a finalizer passes, changing labels, the image or owners, or adding a finalizer, is
refused. The finalizer removals of every other e2e test go through the same policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubemill.operator.meta import POD_FINALIZER
from kubemill_testenv import kube, procs
from kubemill_testenv.kubeconfig import api_client

from .conftest import Cluster

pytestmark = pytest.mark.e2e

OPERATOR = "system:serviceaccount:kubemill-system:kubemill-operator"
# Admission policies are enforced a moment after they are created (the API server's informer).
POLICY_TIMEOUT = 30


@pytest.fixture
def as_operator(kubemill_installed: Cluster) -> Iterator[client.ApiClient]:
    """The admin's credentials, impersonating the operator's ServiceAccount (kubectl patch
    would first GET the pod, which the operator may not)."""
    with api_client(kubemill_installed.kubeconfig) as c:
        c.set_default_header("Impersonate-User", OPERATOR)
        yield c


def patch_as_operator(
    api: client.ApiClient,
    namespace: str,
    name: str,
    patch: list[dict[str, Any]],
    *,
    dry_run: bool = False,
) -> tuple[bool, str]:
    try:
        kube.request(
            api, "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", body=patch,
            query={"dryRun": "All"} if dry_run else None,
            content_type="application/json-patch+json",
        )  # fmt: skip
    except ApiException as exc:
        return False, f"{exc.status}: {exc.body}"
    return True, ""


@pytest.fixture
def bystander(api: client.ApiClient, kubemill_installed: Cluster, namespace: str) -> Iterator[str]:
    """A pod that is none of kubemill's, bound to a node that does not exist so nothing runs it,
    with kubemill's finalizer on it (as a runner pod would have)."""
    kube.request(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        body={
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bystander", "labels": {"app": "web"},
                         "finalizers": [POD_FINALIZER, "example.com/keep"]},
            "spec": {"nodeName": "nowhere",
                     "containers": [{"name": "web", "image": "example.com/web:1"}]},
        },
    )  # fmt: skip
    yield "bystander"
    # The admin clears what is left, so the namespace can go.
    kube.request(
        api,
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/bystander",
        body={"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )


def test_the_operator_may_remove_finalizers_and_change_nothing_else(
    kubemill_installed: Cluster, as_operator: client.ApiClient, namespace: str, bystander: str
) -> None:
    relabel = [{"op": "replace", "path": "/metadata/labels/app", "value": "stolen"}]
    # Enforcement starts a moment after the policy is created: wait until it refuses (dry run).
    procs.wait_until(
        lambda: not patch_as_operator(as_operator, namespace, bystander, relabel, dry_run=True)[0],
        POLICY_TIMEOUT,
        "the operator policy to refuse a label change",
        interval=0.5,
    )
    refused = {
        "labels": relabel,
        "image": [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil:1"}],
        "owners": [{"op": "add", "path": "/metadata/ownerReferences", "value": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "0"}]}],
        "added finalizer": [{"op": "add", "path": "/metadata/finalizers/-", "value": "a.b/c"}],
    }  # fmt: skip
    for what, patch in refused.items():
        ok, stderr = patch_as_operator(as_operator, namespace, bystander, patch)
        assert not ok, f"the operator could change {what}"
        assert stderr.startswith("403:") and "kubemill-operator-finalizers-only" in stderr, stderr
    # Its own job: the finalizer comes off, the way operator/main.py removes it.
    remove = [
        {"op": "test", "path": "/metadata/finalizers/0", "value": POD_FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    ok, stderr = patch_as_operator(as_operator, namespace, bystander, remove)
    assert ok, stderr
    pod = kubemill_installed.kubectl("-n", namespace, "get", "pod", bystander, "-o", "json")
    meta = json.loads(pod.stdout)["metadata"]
    assert meta["finalizers"] == ["example.com/keep"]
    assert meta["labels"] == {"app": "web"}


def test_the_operator_may_delete_only_the_jobs_it_made_for_runs(
    api: client.ApiClient, as_operator: client.ApiClient, namespace: str
) -> None:
    """It deletes a run's Job when the run's pod did not start in time; RBAC cannot narrow
    `delete` to those Jobs, deploy/base/operator-policy.yaml does (dry runs: nothing goes)."""
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    for name, labels in (("web-migrate", {"app": "web"}), ("a-runs", {"kubemill.dev/run": "a"})):
        kube.request(api, "POST", jobs, body={
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": labels},
            "spec": {"suspend": True, "template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "x:1"}]}}},
        })  # fmt: skip

    def delete(name: str) -> tuple[bool, str]:
        try:
            kube.request(as_operator, "DELETE", f"{jobs}/{name}", query={"dryRun": "All"})
        except ApiException as exc:
            return False, f"{exc.status}: {exc.body}"
        return True, ""

    procs.wait_until(
        lambda: not delete("web-migrate")[0], POLICY_TIMEOUT,
        "the operator policy to refuse deleting another Job", interval=0.5,
    )  # fmt: skip
    ok, said = delete("web-migrate")
    assert not ok and said.startswith("403:") and "deletes-run-jobs-only" in said, said
    ok, said = delete("a-runs")
    assert ok, said
