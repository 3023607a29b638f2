"""Fixtures for end-to-end tests against a real Kubernetes API.

By default one local cluster (etcd, kube-apiserver, kube-controller-manager built from the
Kubernetes Go modules, plus the node agent) is started per test session. With
``KUBEMILL_TEST_KUBECONFIG`` naming a kubeconfig, the same tests run against that cluster
instead (kind, minikube, a cloud cluster) and no local process is started.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from tests.harness import kube, wait
from tests.harness.cluster import start_local_cluster
from tests.harness.kubeconfig import api_client, mint_service_account_kubeconfig

# Containers run `python`; on a real cluster it needs an image that has it. The local node agent
# ignores the image and runs the project's own interpreter.
TEST_IMAGE_ENV = "KUBEMILL_TEST_IMAGE"
DEFAULT_TEST_IMAGE = "python:3.11-slim"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl_path: str
    # True when our node agent runs the pods, so a test may look at host processes and files.
    local: bool
    image: str
    startup_seconds: float | None

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig), *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    image = os.environ.get(TEST_IMAGE_ENV, DEFAULT_TEST_IMAGE)
    external = os.environ.get("KUBEMILL_TEST_KUBECONFIG")
    if external:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.fail("KUBEMILL_TEST_KUBECONFIG is set but no kubectl is on PATH")
        yield Cluster(Path(external), kubectl, local=False, image=image, startup_seconds=None)
        return
    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps, which would
    # pull the etcd data directory out from under this session.
    keep = os.environ.get("KUBEMILL_TEST_WORKDIR")
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="kubemill-cluster-"))
    local = start_local_cluster(workdir)
    try:
        yield Cluster(
            local.kubeconfig,
            str(local.kubectl_path),
            local=True,
            image=image,
            startup_seconds=local.startup_seconds,
        )
    finally:
        local.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    """An admin client bound to the test cluster (never the process-wide default)."""
    with api_client(cluster.kubeconfig) as c:
        yield c


@pytest.fixture
def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default ServiceAccount exists)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"e2e-{base}-{secrets.token_hex(3)}"
    kube.request(
        api,
        "POST",
        "/api/v1/namespaces",
        body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    wait.wait_for(
        api,
        f"/api/v1/namespaces/{name}/serviceaccounts",
        lambda event, _obj: event != "DELETED",
        name="default",
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    kube.request(
        api,
        "DELETE",
        f"/api/v1/namespaces/{name}",
        body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
    )


@pytest.fixture
def service_account_kubeconfig(
    api: client.ApiClient, cluster: Cluster, tmp_path: Path
) -> Callable[[str, str], Path]:
    """Mint a kubeconfig for ``(namespace, service_account)``: the identity a pod would have."""

    def mint(namespace: str, service_account: str) -> Path:
        return mint_service_account_kubeconfig(
            api,
            cluster.kubeconfig,
            namespace,
            service_account,
            tmp_path / f"{namespace}-{service_account}.kubeconfig",
        )

    return mint
