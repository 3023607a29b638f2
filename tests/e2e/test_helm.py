"""The Helm chart installed as the README says, on a control plane of its own: `helm install`
creates every object the chart renders, its operator pod (Dockerfile.operator's image, built by
`make images`) turns a NotebookRun into a finished run, and `helm upgrade` with a changed setting
replaces the operator while runs are in flight, losing none of them; the new operator acts on
the new setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubemill_testenv import kube
from kubemill_testenv.helm import CHART, helm_binary
from kubemill_testenv.s3server import WRITER_KEY
from tests import hack_scripts
from tests.e2e.conftest import Cluster, create_namespace
from tests.e2e.test_notebookrun import create_run, wait_run

pytestmark = pytest.mark.e2e

NAMESPACE = "kubemill-system"
OPERATOR_PODS = "app.kubernetes.io/name=kubemill-operator"
#: Runs in flight during the upgrade, and how long each one's notebook sleeps.
IN_FLIGHT = 3
SLEEP_SECONDS = 20


class Helm:
    """helm and kubectl against one cluster, with helm's own folders kept in the test's."""

    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.binary = str(helm_binary())
        self.cluster = cluster
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str) -> str:
        argv = [self.binary, "--kubeconfig", str(self.cluster.kubeconfig), *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=600, check=False, env=self.env
        )
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [self.cluster.kubectl_path, "--kubeconfig", str(self.cluster.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout


def operator_pod(api: client.ApiClient) -> dict[str, Any]:
    pods = kube.get(api, f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=OPERATOR_PODS)
    (pod,) = [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]
    return pod


def jobs_of(api: client.ApiClient, namespace: str, run: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = kube.get(
        api, f"/apis/batch/v1/namespaces/{namespace}/jobs", labelSelector=f"kubemill.dev/run={run}"
    )["items"]
    return jobs


def release_namespace(helm: Helm) -> None:
    """As the README installs the chart: the namespace first, with restricted Pod Security."""
    helm.kubectl("create", "namespace", NAMESPACE)
    helm.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted")


def run_namespace(helm: Helm, api: client.ApiClient, namespace: str) -> None:
    """A namespace for runs, with the S3 credentials Secret their pods read."""
    create_namespace(api, namespace)
    helm.kubectl(
        "-n", namespace, "create", "secret", "generic", "kubemill-s3",
        f"--from-literal=AWS_ACCESS_KEY_ID={WRITER_KEY[0]}",
        f"--from-literal=AWS_SECRET_ACCESS_KEY={WRITER_KEY[1]}",
        "--from-literal=AWS_DEFAULT_REGION=us-east-1",
    )  # fmt: skip


def s3_values(s3_server: Any, results_bucket: str) -> list[str]:
    return [
        "--set", f"settings.s3EndpointUrl={s3_server.endpoint_url}",
        "--set", f"settings.outputPrefix=s3://{results_bucket}/helm/",
    ]  # fmt: skip


def test_helm_install_runs_notebooks_and_an_upgrade_loses_no_run(
    own_cluster: tuple[Cluster, client.ApiClient],
    s3_server: Any,
    results_bucket: str,
    tmp_path: Path,
) -> None:
    cluster, api = own_cluster
    helm = Helm(cluster, tmp_path / "helm")
    values = [*s3_values(s3_server, results_bucket), "--set", "settings.defaultTtlSeconds=3600"]

    release_namespace(helm)
    began = time.monotonic()
    helm("install", "kubemill", str(CHART), "--namespace", NAMESPACE, *values, "--wait",
         "--timeout", "5m")  # fmt: skip
    print(f"helm install --wait: {time.monotonic() - began:.1f} s")

    # Every object the release rendered exists (kubectl get fails on a missing one).
    manifest = helm("get", "manifest", "kubemill", "--namespace", NAMESPACE)
    rendered = [d for d in yaml.safe_load_all(manifest) if d]
    found = json.loads(helm.kubectl("get", "-f", "-", "-o", "json", stdin=manifest))["items"]
    assert [(o["kind"], o["metadata"]["name"]) for o in found] == [
        (o["kind"], o["metadata"]["name"]) for o in rendered
    ]
    kinds = {o["kind"] for o in found}
    assert {"CustomResourceDefinition", "ValidatingAdmissionPolicy", "ClusterRole",
            "ClusterRoleBinding", "ServiceAccount", "ConfigMap", "Deployment"} <= kinds  # fmt: skip
    helm.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/notebookruns.kubemill.dev", "crd/notebookschedules.kubemill.dev",
        "crd/notebookworkflows.kubemill.dev",
    )  # fmt: skip

    first = operator_pod(api)
    (container,) = first["status"]["containerStatuses"]
    # The chart's appVersion, which hack/release.py keeps equal to pyproject.toml's version.
    version = hack_scripts.load("release").source_version()
    assert container["image"] == f"ghcr.io/kubemill/kubemill-operator:{version}"
    assert container["ready"] is True

    namespace = "helm-runs"
    run_namespace(helm, api, namespace)
    create_run(
        api, namespace, "params",
        notebook=f"s3://{results_bucket}/notebooks/params.ipynb",
        parameters={"alpha": 0.25, "region": "eu", "n": 2},
    )  # fmt: skip
    run = wait_run(api, namespace, "params", "Succeeded", "Failed", timeout=240)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["results"] == {"alpha": 0.25, "region": "eu", "n": 2}
    assert run["status"]["outputUrl"].startswith(f"s3://{results_bucket}/helm/")

    # Runs whose notebooks are executing when the upgrade begins.
    flying = [f"flying-{i}" for i in range(IN_FLIGHT)]
    for name in flying:
        create_run(
            api, namespace, name,
            notebook=f"s3://{results_bucket}/notebooks/sleep.ipynb",
            parameters={"seconds": SLEEP_SECONDS},
        )  # fmt: skip
    for name in flying:
        wait_run(api, namespace, name, "Running", timeout=240)

    began = time.monotonic()
    helm("upgrade", "kubemill", str(CHART), "--namespace", NAMESPACE, *values,
         "--set", "settings.defaultTtlSeconds=7200", "--wait", "--timeout", "5m")  # fmt: skip
    print(f"helm upgrade --wait: {time.monotonic() - began:.1f} s")
    history = json.loads(helm("history", "kubemill", "--namespace", NAMESPACE, "-o", "json"))
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]
    settings = kube.get(api, f"/api/v1/namespaces/{NAMESPACE}/configmaps/kubemill-operator")
    assert settings["data"]["KUBEMILL_DEFAULT_TTL_SECONDS"] == "7200"
    # The changed setting replaced the operator (its pod template carries the settings' hash).
    second = operator_pod(api)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]

    # None lost: each in-flight run succeeds, with the one Job the first operator made.
    runs = kube.get(api, f"/apis/kubemill.dev/v1alpha1/namespaces/{namespace}/notebookruns")
    phases = {r["metadata"]["name"]: r["status"]["phase"] for r in runs["items"]}
    still_running = sum(phases[name] == "Running" for name in flying)
    print(f"{still_running} of {IN_FLIGHT} runs were still running when the upgrade ended")
    for name in flying:
        run = wait_run(api, namespace, name, "Succeeded", "Failed", timeout=240)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        (job,) = jobs_of(api, namespace, name)
        assert job["metadata"]["name"] == run["status"]["jobName"]
        assert job["spec"]["ttlSecondsAfterFinished"] == 3600

    # The new operator acts on the new setting.
    create_run(
        api, namespace, "after",
        notebook=f"s3://{results_bucket}/notebooks/params.ipynb",
        parameters={"alpha": 0.5, "region": "us", "n": 1},
    )  # fmt: skip
    run = wait_run(api, namespace, "after", "Succeeded", "Failed", timeout=240)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    (job,) = jobs_of(api, namespace, "after")
    assert job["spec"]["ttlSecondsAfterFinished"] == 7200


def test_a_namespaced_helm_install_acts_only_in_its_namespaces(
    own_cluster: tuple[Cluster, client.ApiClient],
    s3_server: Any,
    results_bucket: str,
    tmp_path: Path,
) -> None:
    """rbac.namespaced: the operator's rights are Roles in watchNamespaces, no ClusterRole; a
    run there succeeds, and a run in another namespace is left alone. Uninstalled, the CRDs
    and the runs stay."""
    cluster, api = own_cluster
    helm = Helm(cluster, tmp_path / "helm")
    release_namespace(helm)
    for namespace in ("team-a", "team-b"):
        run_namespace(helm, api, namespace)
    helm("install", "kubemill", str(CHART), "--namespace", NAMESPACE,
         *s3_values(s3_server, results_bucket), "--set", "rbac.namespaced=true",
         "--set", "watchNamespaces={team-a}", "--wait", "--timeout", "5m")  # fmt: skip

    roles = kube.get(api, "/apis/rbac.authorization.k8s.io/v1/clusterroles")["items"]
    assert "kubemill-operator" not in {r["metadata"]["name"] for r in roles}
    operator = f"system:serviceaccount:{NAMESPACE}:kubemill-operator"
    for namespace, allowed in (("team-a", "yes"), ("team-b", "no")):
        done = subprocess.run(
            [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "auth", "can-i",
             "create", "jobs.batch", "--namespace", namespace, "--as", operator],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.stdout.strip() == allowed, (namespace, done.stdout, done.stderr)

    # The run outside goes first: had the operator watched team-b, it would have made its Job
    # before it finished the run in team-a.
    notebook = f"s3://{results_bucket}/notebooks/params.ipynb"
    create_run(api, "team-b", "outside", notebook=notebook, parameters={"n": 1})
    create_run(api, "team-a", "inside", notebook=notebook, parameters={"n": 1})
    run = wait_run(api, "team-a", "inside", "Succeeded", "Failed", timeout=240)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    outside = kube.get(api, "/apis/kubemill.dev/v1alpha1/namespaces/team-b/notebookruns/outside")
    assert not outside.get("status"), outside["status"]
    assert jobs_of(api, "team-b", "outside") == []

    # helm uninstall takes the operator and its rights, and keeps the CRDs, so no run goes.
    helm("uninstall", "kubemill", "--namespace", NAMESPACE, "--wait")
    gone = [
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/kubemill-operator",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/kubemill-operator",
    ]
    assert [path for path in gone if kube.get_or_none(api, path) is not None] == []
    kept = [
        *(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{kind}.kubemill.dev"
          for kind in ("notebookruns", "notebookschedules", "notebookworkflows")),
        "/apis/kubemill.dev/v1alpha1/namespaces/team-a/notebookruns/inside",
    ]  # fmt: skip
    assert [path for path in kept if kube.get_or_none(api, path) is None] == []
