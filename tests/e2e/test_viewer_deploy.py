"""The viewer's kustomize component (deploy/components/viewer) is accepted by a real API server:
everything it holds applies (server-side dry run), its Deployment in a namespace that enforces
the restricted Pod Security level, as kubemill-system does."""

from __future__ import annotations

import copy
import json
import secrets
import subprocess
from typing import Any

import pytest
import yaml

from kubemill_testenv import kube
from kubemill_testenv.controlplane import REPO_ROOT
from kubemill_testenv.kubeconfig import api_client

from .conftest import Cluster

pytestmark = pytest.mark.e2e


def _built(cluster: Cluster, overlay: str = "viewer") -> list[dict[str, Any]]:
    out = subprocess.run(
        [cluster.kubectl_path, "kustomize", str(REPO_ROOT / "deploy/overlays" / overlay)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def _dry_run(cluster: Cluster, documents: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "apply",
         "--server-side", "--dry-run=server", "-f", "-"],
        input="\n".join(json.dumps(d) for d in documents), text=True, capture_output=True,
        timeout=120,
    )  # fmt: skip


def _viewer(documents: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The component's namespaced objects, moved into `namespace`."""
    found = []
    for document in documents:
        labels = document["metadata"].get("labels", {})
        if labels.get("app.kubernetes.io/name") != "kubemill-viewer":
            continue
        if "namespace" in document["metadata"]:
            document = copy.deepcopy(document)
            document["metadata"]["namespace"] = namespace
        found.append(document)
    return found


def _pod(deployment: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A pod of the Deployment's template, as its ReplicaSet would create it."""
    template = copy.deepcopy(deployment["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "name": "kubemill-viewer-0", "namespace": namespace},
        "spec": template["spec"],
    }


def test_the_viewer_component_applies_and_passes_restricted_pod_security(
    cluster: Cluster,
) -> None:
    documents = _built(cluster)
    kinds = sorted(
        d["kind"]
        for d in documents
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "kubemill-viewer"
    )
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service",
        "ServiceAccount",
    ]  # fmt: skip
    role = next(
        d
        for d in documents
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "kubemill-viewer"
    )
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
         "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"],
         "verbs": ["create"]},
    ]  # fmt: skip

    namespace = f"e2e-viewer-psa-{secrets.token_hex(3)}"
    with api_client(cluster.kubeconfig) as api:
        kube.request(
            api, "POST", "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace,
                  "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                             "pod-security.kubernetes.io/enforce-version": "latest"}}},
        )  # fmt: skip
        try:
            viewer = _viewer(documents, namespace)
            accepted = _dry_run(cluster, viewer)
            assert accepted.returncode == 0, accepted.stderr
            assert "deployment.apps/kubemill-viewer serverside-applied (server dry run)" in (
                accepted.stdout
            )
            # For a Deployment, Pod Security only warns; its pods are what it enforces on.
            assert "PodSecurity" not in accepted.stderr, accepted.stderr
            deployment = next(d for d in viewer if d["kind"] == "Deployment")
            pod = _pod(deployment, namespace)
            # A pod's ServiceAccount must exist even for a dry run.
            kube.request(
                api, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                body=next(d for d in viewer if d["kind"] == "ServiceAccount"),
            )  # fmt: skip
            admitted = _dry_run(cluster, [pod])
            assert admitted.returncode == 0, admitted.stderr
            # The same pod without its non-root setting is refused: the namespace does enforce
            # the level, so the pass above means something.
            weakened = copy.deepcopy(pod)
            del weakened["spec"]["securityContext"]["runAsNonRoot"]
            weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
            refused = _dry_run(cluster, [weakened])
            assert refused.returncode != 0
            assert "violates PodSecurity" in refused.stderr, refused.stderr
        finally:
            kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}")


def test_the_oauth2_proxy_example_passes_restricted_pod_security(cluster: Cluster) -> None:
    """deploy/overlays/viewer-oauth2-proxy, the README's example: the proxy as a sidecar."""
    documents = _built(cluster, "viewer-oauth2-proxy")
    settings = next(
        d
        for d in documents
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kubemill-viewer"
    )
    assert settings["data"]["KUBEMILL_VIEWER_AUTH"] == "proxy"
    assert settings["data"]["KUBEMILL_VIEWER_TRUSTED_PROXIES"] == "127.0.0.1/32"
    assert settings["data"]["KUBEMILL_VIEWER_LISTEN"] == "127.0.0.1"
    namespace = f"e2e-viewer-psa-{secrets.token_hex(3)}"
    with api_client(cluster.kubeconfig) as api:
        kube.request(
            api, "POST", "/api/v1/namespaces",
            body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace,
                  "labels": {"pod-security.kubernetes.io/enforce": "restricted",
                             "pod-security.kubernetes.io/enforce-version": "latest"}}},
        )  # fmt: skip
        try:
            viewer = _viewer(documents, namespace)
            kube.request(
                api, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                body=next(d for d in viewer if d["kind"] == "ServiceAccount"),
            )  # fmt: skip
            deployment = next(d for d in viewer if d["kind"] == "Deployment")
            names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
            assert names == ["viewer", "oauth2-proxy"]
            admitted = _dry_run(cluster, [_pod(deployment, namespace), *viewer])
            assert admitted.returncode == 0, admitted.stderr
            assert "PodSecurity" not in admitted.stderr, admitted.stderr
        finally:
            kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}")
