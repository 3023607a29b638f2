"""The operator as users install it: deploy/base applied as it is, the operator Deployment's pod
running Dockerfile.operator's image under its ServiceAccount, made Ready by its probes, and
turning a NotebookRun into a finished run.

It gets a control plane of its own: the session's operator (a host process, so other tests can
kill it at will) watches every namespace, and two operators must never act on the same runs.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubemill_testenv import kube
from kubemill_testenv.controlplane import REPO_ROOT as ROOT
from kubemill_testenv.operatorproc import NAMESPACE
from kubemill_testenv.s3server import WRITER_KEY
from tests.e2e.conftest import Cluster, create_namespace
from tests.e2e.test_notebookrun import create_run, wait_run

pytestmark = pytest.mark.e2e

# The image deploy/base installs, which `make images` builds under that name.
OPERATOR_IMAGE = next(
    doc["spec"]["template"]["spec"]["containers"][0]["image"]
    for doc in yaml.safe_load_all((ROOT / "deploy" / "base" / "deployment.yaml").read_text())
    if doc and doc.get("kind") == "Deployment"
)


def test_the_operator_deployment_runs_its_image_and_runs_notebooks(
    own_cluster: tuple[Cluster, client.ApiClient], s3_server: Any, results_bucket: str
) -> None:
    cluster, api = own_cluster

    def kubectl(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd/notebookruns.kubemill.dev")
    kubectl("apply", "--server-side", "-k", str(ROOT / "deploy" / "base"))
    settings = {
        "KUBEMILL_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "KUBEMILL_OUTPUT_PREFIX": f"s3://{results_bucket}/operator-image/",
    }
    kubectl(
        "-n", NAMESPACE, "patch", "configmap", "kubemill-operator", "--type", "merge",
        "-p", json.dumps({"data": settings}),
    )  # fmt: skip
    kubectl("-n", NAMESPACE, "rollout", "restart", "deployment/kubemill-operator")
    kubectl("-n", NAMESPACE, "rollout", "status", "deployment/kubemill-operator", "--timeout=150s")

    pods = kube.get(
        api,
        f"/api/v1/namespaces/{NAMESPACE}/pods",
        labelSelector="app.kubernetes.io/name=kubemill-operator",
    )["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1
    pod = live[0]
    (container,) = pod["status"]["containerStatuses"]
    assert container["image"] == OPERATOR_IMAGE
    assert container["imageID"].startswith("sha256:")
    # Ready only through its readiness probe on kopf's health endpoint.
    assert container["ready"] is True and container["started"] is True
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert pod["spec"]["serviceAccountName"] == "kubemill-operator"

    namespace = "operator-image"
    create_namespace(api, namespace)
    kubectl(
        "-n", namespace, "create", "secret", "generic", "kubemill-s3",
        f"--from-literal=AWS_ACCESS_KEY_ID={WRITER_KEY[0]}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={WRITER_KEY[1]}",
        "--from-literal=AWS_DEFAULT_REGION=us-east-1",
    )  # fmt: skip
    create_run(
        api,
        namespace,
        "params",
        notebook=f"s3://{results_bucket}/notebooks/params.ipynb",
        parameters={"alpha": 0.25, "region": "eu", "n": 2},
    )
    run = wait_run(api, namespace, "params", "Succeeded", "Failed", timeout=240)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["results"] == {"alpha": 0.25, "region": "eu", "n": 2}
    assert run["status"]["outputUrl"].startswith(f"s3://{results_bucket}/operator-image/")
