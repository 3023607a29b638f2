"""Parameters through Kubernetes: what Kubernetes would expand ($(VAR), $$) and what Linux
would refuse (a 128 KiB argument) reach the kernel unchanged, in ConfigMaps the operator makes.

Large runs are created with the API (as `kubectl create` would): `kubectl apply` without
--server-side keeps a copy of the object in an annotation capped at 256 KiB.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from kubemill_testenv import kube, wait
from tests.conftest import TRICKY_TEXT, large_parameters, parameter_digest
from tests.e2e.conftest import Cluster
from tests.e2e.test_notebookrun import create_run, wait_run

pytestmark = pytest.mark.e2e

NOTEBOOK = "notebooks/parameters_digest.ipynb"


def _succeeded(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    run = wait_run(api, namespace, name, "Succeeded", "Failed", timeout=300)
    status: dict[str, Any] = run["status"]
    assert status["phase"] == "Succeeded", status
    return status


def _runner_container(api: client.ApiClient, namespace: str, job: str) -> dict[str, Any]:
    body = kube.get(api, f"/apis/batch/v1/namespaces/{namespace}/jobs/{job}")
    container: dict[str, Any] = body["spec"]["template"]["spec"]["containers"][0]
    return container


def test_text_that_kubernetes_would_expand_reaches_the_notebook_unchanged(
    api: client.ApiClient, kubemill_installed: Cluster, run_namespace: str, results_bucket: str
) -> None:
    create_run(
        api,
        run_namespace,
        "dollars",
        notebook=f"s3://{results_bucket}/{NOTEBOOK}",
        parameters={"text": TRICKY_TEXT},
    )
    status = _succeeded(api, run_namespace, "dollars")
    assert status["results"]["text"] == TRICKY_TEXT
    assert status["results"]["digests"]["text"] == parameter_digest(TRICKY_TEXT)
    container = _runner_container(api, run_namespace, status["jobName"])
    assert "price" not in json.dumps([container["args"], container["env"]])


@pytest.mark.parametrize(
    ("names", "parts"),
    [(("items",), 1), (("text", "items", "blob"), 2)],
    ids=["170KB-list", "1.2MB-set"],
)
def test_large_parameters_reach_the_kernel_byte_for_byte(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    names: tuple[str, ...],
    parts: int,
) -> None:
    everything = large_parameters(1_200_000)
    parameters = {name: everything[name] for name in names}
    size = len(json.dumps(parameters, ensure_ascii=False).encode())
    assert size > 128 * 1024  # what one argument or environment string may hold
    create_run(
        api, run_namespace, "large", notebook=f"s3://{results_bucket}/{NOTEBOOK}",
        parameters=parameters,
    )  # fmt: skip
    status = _succeeded(api, run_namespace, "large")
    results = status["results"]
    for name in names:
        assert results["lengths"][name] == len(parameters[name])
        assert results["digests"][name] == parameter_digest(parameters[name])

    run = kube.get(
        api, f"/apis/kubemill.dev/v1alpha1/namespaces/{run_namespace}/notebookruns/large"
    )
    config_maps = kube.get(
        api, f"/api/v1/namespaces/{run_namespace}/configmaps",
        labelSelector="kubemill.dev/run=large",
    )["items"]  # fmt: skip
    assert sorted(cm["metadata"]["name"] for cm in config_maps) == [
        f"{status['jobName']}-parameters-{i}" for i in range(parts)
    ]
    for cm in config_maps:
        assert cm["immutable"] is True
        assert cm["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    container = _runner_container(api, run_namespace, status["jobName"])
    assert max(len(arg) for arg in container["args"]) < 200

    # Owned by the run, they go with it (the garbage collector follows their owner reference).
    kube.request(
        api, "DELETE", f"/apis/kubemill.dev/v1alpha1/namespaces/{run_namespace}/notebookruns/large"
    )
    for cm in config_maps:
        wait.wait_gone(
            api, f"/api/v1/namespaces/{run_namespace}/configmaps", cm["metadata"]["name"],
            timeout=60, what=f"ConfigMap {cm['metadata']['name']} deleted with its run",
        )  # fmt: skip
