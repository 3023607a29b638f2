"""The runtime-image contract on a real cluster: `kubemill image check IMAGE` says, in a pod like a
run's, what an image lacks; a run in an image without kubemill fails saying how to fix the image
(not `RunnerFailed`, exit code 128). The image without kubemill is the Debian base `make images`
builds the runner on: a Python, and nothing of kubemill's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes import client

from kubemill.runner import __version__
from kubemill_testenv import kube
from tests.e2e.conftest import RUNNER_IMAGE, Cluster
from tests.e2e.test_notebookrun import create_run, wait_run

pytestmark = pytest.mark.e2e

BARE_PYTHON = "localhost/kubemill-base:bookworm"


def _check(cluster: Cluster, namespace: str, image: str) -> subprocess.CompletedProcess[str]:
    kubemill = Path(sys.executable).parent / "kubemill"
    return subprocess.run(
        [str(kubemill), "image", "check", image, "-n", namespace,
         "--kubeconfig", str(cluster.kubeconfig), "--timeout", "120"],
        capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip


def _pods(api: client.ApiClient, namespace: str) -> list[str]:
    listed = kube.get(api, f"/api/v1/namespaces/{namespace}/pods")
    return [p["metadata"]["name"] for p in listed["items"]]


def test_image_check_names_what_a_bare_python_image_lacks(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    if not cluster.local:
        pytest.skip(f"{BARE_PYTHON} exists only on the local cluster's node")
    result = _check(cluster, namespace, BARE_PYTHON)

    print(result.stdout)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok: python 3.11")
    missing = [line for line in lines if line.startswith("missing: ")]
    assert [m.split(":")[1].strip().split(" (")[0] for m in missing] == [
        "the kubemill command on PATH",
        "the kubemill package in /usr",
        "the runner's modules",
        "kernel 'python3'",
    ]
    assert f"pip install 'kubemill=={__version__}'" in missing[0]
    # Run as a run is: uid 10001, /tmp its emptyDir.
    assert lines[-1] == "ok: /tmp is writable by uid 10001"
    assert _pods(api, namespace) == []


def test_image_check_passes_the_runner_image(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    result = _check(cluster, namespace, RUNNER_IMAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and all(line.startswith("ok: ") for line in lines), result.stdout
    assert f"ok: kubemill {__version__}" in lines
    assert _pods(api, namespace) == []


def test_an_image_that_cannot_be_pulled_is_said_in_one_line(
    cluster: Cluster, namespace: str
) -> None:
    result = _check(cluster, namespace, "registry.invalid/nobody/none:1")

    assert result.returncode == 1
    assert result.stdout.startswith(
        "missing: a container of registry.invalid/nobody/none:1 could not start: "
    )
    assert "ErrImagePull" in result.stdout or "ImagePullBackOff" in result.stdout


def test_a_run_in_an_image_without_kubemill_fails_saying_how_to_fix_the_image(
    cluster: Cluster, api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    if not cluster.local:
        pytest.skip(f"{BARE_PYTHON} exists only on the local cluster's node")
    create_run(
        api, run_namespace, "bare", image=BARE_PYTHON,
        notebook=f"s3://{results_bucket}/notebooks/values.ipynb",
    )  # fmt: skip
    run = wait_run(api, run_namespace, "bare", "Failed", timeout=120)

    status = run["status"]
    print(status["message"])
    assert status["reason"] == "RunnerNotInImage"
    assert status["message"].startswith(f"the image {BARE_PYTHON} has no kubemill runner (")
    assert "executable file not found" in status["message"]
    assert f"pip install 'kubemill=={__version__}'" in status["message"]
    assert "kubemill image check IMAGE" in status["message"]
