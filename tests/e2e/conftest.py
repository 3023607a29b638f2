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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubemill.operator.settings import Settings
from kubemill_testenv import kube, wait
from kubemill_testenv.cluster import start_local_cluster
from kubemill_testenv.kubeconfig import api_client, mint_service_account_kubeconfig
from tests.conftest import NOTEBOOKS
from tests.integration.helpers import wait_for_line

# Containers run `python`, so they need an image that has it. The local node agent runs images
# from the store `make images` fills, and the runner image has python on its PATH; on an
# existing cluster any image with Python does.
TEST_IMAGE_ENV = "KUBEMILL_TEST_IMAGE"
DEFAULT_TEST_IMAGE = "python:3.11-slim"
# The operator's default runner image, which `make images` builds under that name.
RUNNER_IMAGE = Settings().runner_image


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

    def await_log_line(self, namespace: str, pod: str, line: str, timeout: float = 120) -> None:
        """Follow the pod's log (`kubectl logs -f`, as a user would) until `line` appears."""
        follow = subprocess.Popen(
            [self.kubectl_path, "--kubeconfig", str(self.kubeconfig),
             "-n", namespace, "logs", "-f", pod],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert follow.stdout is not None
            wait_for_line(follow.stdout, line, timeout=timeout)
        finally:
            follow.kill()
            follow.communicate()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("KUBEMILL_TEST_KUBECONFIG")
    image = os.environ.get(TEST_IMAGE_ENV, DEFAULT_TEST_IMAGE if external else RUNNER_IMAGE)
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


@pytest.fixture
def own_cluster(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Cluster, client.ApiClient]]:
    """A local control plane of the test's own, for a test that installs the operator as a pod:
    the session's operator (a host process) watches every namespace, and two operators must
    never act on the same runs."""
    if not cluster.local:
        pytest.skip("starts a second local control plane")
    local = start_local_cluster(tmp_path / "cluster")
    try:
        mine = Cluster(
            local.kubeconfig, str(local.kubectl_path), local=True, image=cluster.image,
            startup_seconds=local.startup_seconds,
        )  # fmt: skip
        with api_client(local.kubeconfig) as api:
            yield mine, api
    finally:
        local.stop()


@pytest.fixture(scope="session")
def api(cluster: Cluster) -> Iterator[client.ApiClient]:
    """An admin client bound to the test cluster (never the process-wide default)."""
    with api_client(cluster.kubeconfig) as c:
        yield c


def create_namespace(api: client.ApiClient, name: str) -> None:
    """Create a namespace and return once it is ready for pods (its default ServiceAccount)."""
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


@pytest.fixture
def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, ready for pods (its default ServiceAccount exists)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"e2e-{base}-{secrets.token_hex(3)}"
    create_namespace(api, name)
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


# --- kubemill on the cluster --------------------------------------------------------------------

RESULTS_BUCKET = "kubemill-e2e"


@pytest.fixture(scope="session")
def kubemill_installed(cluster: Cluster) -> Cluster:
    """The CRDs and the operator's RBAC, applied from crds/ and deploy/ as a user would."""
    from kubemill_testenv.controlplane import REPO_ROOT as ROOT
    from kubemill_testenv.operatorproc import manifests_without_deployment

    cluster.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/notebookruns.kubemill.dev", "crd/notebookschedules.kubemill.dev",
        "crd/notebookworkflows.kubemill.dev",
    )  # fmt: skip
    _await_parameters_policy(cluster)
    manifests = manifests_without_deployment(cluster.kubectl)
    subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "apply",
         "--server-side", "--force-conflicts", "-f", "-"],
        input=manifests, text=True, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return cluster


def _await_parameters_policy(cluster: Cluster, timeout: float = 30) -> None:
    """The admission policies in crds/ take effect a moment after they are created; probe them
    with a server-side dry run until they reject what they must."""
    probes = [
        "apiVersion: kubemill.dev/v1alpha1\nkind: NotebookRun\n"
        "metadata: {name: policy-probe, namespace: default}\n"
        'spec: {notebook: "s3://b/n.ipynb", parameters: {"2x": 1}}\n',
        "apiVersion: kubemill.dev/v1alpha1\nkind: NotebookSchedule\n"
        "metadata: {name: policy-probe, namespace: default}\n"
        'spec: {schedule: "@daily", runTemplate: {spec: {notebook: "s3://b/n.ipynb", '
        'parameters: {"2x": 1}}}}\n',
        "apiVersion: kubemill.dev/v1alpha1\nkind: NotebookWorkflow\n"
        "metadata: {name: policy-probe, namespace: default}\n"
        'spec: {steps: [{name: a, runTemplate: {spec: {notebook: "s3://b/n.ipynb", '
        'parameters: {"2x": 1}}}}]}\n',
    ]
    deadline = time.monotonic() + timeout
    while probes and time.monotonic() < deadline:
        result = subprocess.run(
            [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "create",
             "--dry-run=server", "-f", "-"],
            input=probes[0], text=True, capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        if "is not a Python identifier" in result.stderr:
            probes.pop(0)
            continue
        time.sleep(0.5)  # the policy compiles asynchronously; no object reports when it is done
    if probes:
        raise AssertionError(f"an admission policy in crds/ never took effect: {probes[0]}")


@pytest.fixture(scope="session")
def results_bucket(s3_server: Any) -> str:
    from tests.conftest import s3_client

    client_ = s3_client(s3_server)
    client_.create_bucket(Bucket=RESULTS_BUCKET)
    for notebook in NOTEBOOKS.glob("*.ipynb"):
        client_.upload_file(str(notebook), RESULTS_BUCKET, f"notebooks/{notebook.name}")
    return RESULTS_BUCKET


#: The viewer the session's operator is told of (no viewer answers there; the status names it).
VIEWER_URL = "https://viewer.e2e.test/kubemill"


@pytest.fixture(scope="session")
def operator(
    kubemill_installed: Cluster,
    api: client.ApiClient,
    s3_server: Any,
    results_bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """One operator for the session, with exactly the RBAC deploy/ grants it."""
    from kubemill_testenv.operatorproc import NAMESPACE, SERVICE_ACCOUNT, OperatorProcess

    workdir = tmp_path_factory.mktemp("operator")
    kubeconfig = mint_service_account_kubeconfig(
        api, kubemill_installed.kubeconfig, NAMESPACE, SERVICE_ACCOUNT,
        workdir / "operator.kubeconfig", expiration_seconds=6 * 3600,
    )  # fmt: skip
    process = OperatorProcess(
        kubeconfig,
        {
            "KUBEMILL_OUTPUT_PREFIX": f"s3://{results_bucket}/runs/",
            "KUBEMILL_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "KUBEMILL_S3_CREDENTIALS_SECRET": "kubemill-s3",
            "KUBEMILL_RUNNER_IMAGE": RUNNER_IMAGE,
            "KUBEMILL_DEFAULT_TTL_SECONDS": "3600",
            "KUBEMILL_TERMINATION_GRACE_SECONDS": "30",
            "KUBEMILL_VIEWER_URL": VIEWER_URL,
            "KUBEMILL_VIEWER_ROOT": f"s3://{results_bucket}/runs/",
        },
        workdir / "operator.log",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def run_namespace(namespace: str, api: client.ApiClient, operator: Any, s3_server: Any) -> str:
    """A test namespace with the S3 credentials Secret runner pods read (the writer identity)."""
    from kubemill_testenv.s3server import WRITER_KEY

    kube.request(
        api,
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        body={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "kubemill-s3"},
            "stringData": {
                "AWS_ACCESS_KEY_ID": WRITER_KEY[0],
                "AWS_SECRET_ACCESS_KEY": WRITER_KEY[1],
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        },
    )
    return namespace
