"""What only a real image and a real runtime can show: the notebook runs inside the runner image
that Dockerfile.runner builds, as its non-root user under the restricted pod the operator asks
for, and the memory limit is enforced by the kernel and reported the way Kubernetes reports it."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kubemill_testenv import kube
from kubemill_testenv.operatorproc import RUNS
from tests.e2e.conftest import RUNNER_IMAGE, Cluster
from tests.e2e.test_notebookrun import create_run, s3_json, wait_event, wait_run

pytestmark = pytest.mark.e2e


def _runner_status(api: client.ApiClient, namespace: str, run: str) -> dict[str, Any]:
    pods = kube.get(
        api, f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"kubemill.dev/run={run}"
    )
    statuses = pods["items"][-1]["status"]["containerStatuses"]
    status: dict[str, Any] = next(s for s in statuses if s["name"] == "runner")
    return status


def test_a_notebook_runs_inside_the_runner_image_as_its_user_with_a_read_only_root(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
) -> None:
    if not kubemill_installed.local:
        pytest.skip("checks the image the local node agent runs")
    create_run(
        api,
        run_namespace,
        "facts",
        notebook=f"s3://{results_bucket}/notebooks/container_facts.ipynb",
    )
    run = wait_run(api, run_namespace, "facts", "Succeeded", "Failed")
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    facts = status["results"]
    # Dockerfile.runner's user, interpreter and package, not anything of the host or the clone.
    assert (facts["uid"], facts["gid"]) == (10001, 10001)
    assert facts["executable"].startswith("/opt/kubemill/")
    assert facts["kubemill_file"].startswith("/opt/kubemill/lib/")
    assert facts["os_release"].startswith("Debian GNU/Linux 12")
    # readOnlyRootFilesystem, the /tmp emptyDir, capabilities dropped, no privilege escalation,
    # seccomp RuntimeDefault (2 = filter mode): the restricted pod the operator builds.
    assert facts["root_write"] == "EROFS"
    assert facts["tmp_write"] == "writable"
    assert int(facts["cap_eff"], 16) == 0
    assert facts["no_new_privs"] == "1"
    assert facts["seccomp"] == "2"

    runner = _runner_status(api, run_namespace, "facts")
    assert runner["image"] == RUNNER_IMAGE
    assert runner["imageID"].startswith("sha256:")


def test_a_notebook_past_its_memory_limit_fails_as_oomkilled_and_keeps_its_output(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    if not kubemill_installed.local:
        pytest.skip("the memory a cluster's runner needs differs; checked on the local node")
    create_run(
        api,
        run_namespace,
        "hog",
        notebook=f"s3://{results_bucket}/notebooks/memory_hog.ipynb",
        parameters={"megabytes": 1024},
        resources={"limits": {"memory": "384Mi"}},
    )
    run = wait_run(api, run_namespace, "hog", "Succeeded", "Failed")
    status = run["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "OOMKilled"), status
    assert "(384Mi)" in status["message"] and "limits.memory" in status["message"]
    assert _runner_status(api, run_namespace, "hog")["state"]["terminated"]["reason"] == "OOMKilled"
    wait_event(api, run_namespace, "hog", "OOMKilled")
    # The kernel was the process the cgroup killed; the runner lived to save how far it got.
    nb = s3_json(s3_admin, status["outputUrl"])
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "allocating 1024 MB" in printed and "allocated 1073741824" not in printed
    assert kube.get(api, f"{RUNS.format(run_namespace)}/hog")["status"]["failure"]["reason"] == (
        "OOMKilled"
    )
