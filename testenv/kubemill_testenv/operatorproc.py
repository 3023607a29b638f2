"""The kubemill operator in e2e tests and benchmarks: installed with the manifests users apply,
run as a local process under its own ServiceAccount's kubeconfig, so a missing RBAC permission
fails a test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .controlplane import REPO_ROOT, ControlPlane

OPERATOR = str(Path(sys.executable).with_name("kubemill-operator"))
NAMESPACE = "kubemill-system"
SERVICE_ACCOUNT = "kubemill-operator"
RUNS = "/apis/kubemill.dev/v1alpha1/namespaces/{}/notebookruns"


def manifests_without_deployment(kubectl: Any) -> str:
    """deploy/base as kustomize renders it, minus the operator Deployment: the tests run the
    operator themselves, so they can kill and restart it at will."""
    rendered = kubectl("kustomize", str(REPO_ROOT / "deploy" / "base")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") != "Deployment"]
    return yaml.safe_dump_all(docs, sort_keys=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class OperatorProcess:
    """`kubemill-operator` as a child process that dies with the test run."""

    def __init__(self, kubeconfig: Path, settings: Mapping[str, str], log: Path) -> None:
        self.log = log
        self.port = _free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KUBEMILL_", "AWS_"))},
            **settings,
            "KUBECONFIG": str(kubeconfig),
            "KUBEMILL_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.port}/healthz",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts + 1} ---\n".encode())
            self.process = subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", OPERATOR],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd="/",
            )
        self.starts += 1
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """kopf answers its liveness endpoint once it has started watching."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/healthz"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the operator exited: {self.log_tail()}")
            with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
                urllib.request.urlopen(url, timeout=1).close()
                return
            time.sleep(0.2)  # polling a port that is not bound yet; nothing to watch
        raise AssertionError(f"the operator was not ready within {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as an OOM kill or a node failure would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def terminate(self, grace: float) -> tuple[int, float]:
        """SIGTERM, as a rollout or a node drain sends it; the exit code and the seconds it
        took. A process still running after `grace` (the pod's grace period) is SIGKILLed, as
        the kubelet would, and reported as -9."""
        assert self.process is not None and self.process.poll() is None
        began = time.monotonic()
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
            code = -signal.SIGKILL
        return code, time.monotonic() - began

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, size: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-size:]


#: The CRDs crds/ installs, each waited for until the API server serves it.
CRDS = ("notebookruns", "notebookschedules", "notebookworkflows")


def install(cp: ControlPlane) -> None:
    """crds/ and deploy/base's manifests but the Deployment, as the benchmarks need them: the
    benchmark runs the operator itself (`start_operator`)."""
    cp.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds"))
    cp.kubectl("wait", "--for=condition=Established", *(f"crd/{c}.kubemill.dev" for c in CRDS))
    subprocess.run(
        [str(cp.bin_dir / "kubectl"), "--kubeconfig", str(cp.kubeconfig), "apply",
         "--server-side", "-f", "-"],
        input=manifests_without_deployment(cp.kubectl), text=True, check=True,
        capture_output=True,
    )  # fmt: skip


#: The operator's settings in the benchmarks. No node agent runs their pods: without a start
#: limit, runs are never failed for it, and the operator does only the work measured, however
#: long a round takes.
BENCH_SETTINGS = {
    "KUBEMILL_OUTPUT_PREFIX": "s3://bench/",
    "KUBEMILL_LOG_LEVEL": "WARNING",
    "KUBEMILL_START_TIMEOUT": "0",
}


def start_operator(
    cp: ControlPlane, api: Any, work: Path, settings: Mapping[str, str]
) -> OperatorProcess:
    """The operator as a local process under its own ServiceAccount's token, started."""
    from .kubeconfig import mint_service_account_kubeconfig

    kubeconfig = mint_service_account_kubeconfig(
        api, cp.kubeconfig, NAMESPACE, SERVICE_ACCOUNT, work / "operator.kubeconfig"
    )
    operator = OperatorProcess(kubeconfig, settings, work / "operator.log")
    operator.start()
    return operator
