"""`kubemill image check` by someone who may not run pods: one line saying what was refused and
exit 1, no traceback, and nothing left behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kubernetes import client

from kubemill_testenv import kube
from tests.e2e.conftest import RUNNER_IMAGE

pytestmark = pytest.mark.e2e


def test_a_user_who_may_not_create_pods_is_told_in_one_line(
    api: client.ApiClient,
    namespace: str,
    service_account_kubeconfig: Callable[[str, str], Path],
) -> None:
    # The namespace's default ServiceAccount has no rights at all.
    kubeconfig = service_account_kubeconfig(namespace, "default")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubemill"), "image", "check", RUNNER_IMAGE,
         "-n", namespace, "--kubeconfig", str(kubeconfig), "--timeout", "30"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip

    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"kubemill image check: pod {namespace}/kubemill-image-check-")
    assert "forbidden" in line.lower() and "pods" in line
    assert kube.get(api, f"/api/v1/namespaces/{namespace}/pods")["items"] == []
