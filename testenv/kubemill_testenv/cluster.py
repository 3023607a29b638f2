"""A whole local cluster: the control plane plus the node agent that runs its pods."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from . import kube, procs
from .controlplane import REPO_ROOT, ControlPlane, binary_dir, free_port
from .kubeconfig import api_client

NODE_NAME = "kubemill-node"
# The node agent's image store index, written by `make images`; the variable points elsewhere
# (another clone's build, a hand-made store) without rebuilding.
IMAGES_ENV = "KUBEMILL_IMAGES"


class NoImagesError(RuntimeError):
    """The node agent cannot run any pod without the image store index."""


def images_path() -> Path:
    """The images index the node agent is given; fails fast when it does not exist."""
    path = Path(os.environ.get(IMAGES_ENV) or REPO_ROOT / "build" / "images.json")
    if not path.is_file():
        raise NoImagesError(f"no images: run `make images` ({path} does not exist)")
    return path


# `-P`: the installed package is found without the working directory on the import path, where
# a kubemill checkout's `operator/` folder would shadow the standard library's `operator`.
_AGENT = ("-P", "-m", "kubemill_testenv.nodeagent")


@dataclass
class LocalCluster:
    control_plane: ControlPlane
    agent: procs.Managed
    startup_seconds: float

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def kubectl_path(self) -> Path:
        return self.control_plane.bin_dir / "kubectl"

    def stop(self) -> None:
        self.agent.stop(grace=15)
        self.control_plane.stop()


def start_local_cluster(workdir: Path, timeout: float = 60.0) -> LocalCluster:
    """Start etcd, kube-apiserver, kube-controller-manager and the node agent under ``workdir``."""
    images_path()
    began = time.monotonic()
    cp = ControlPlane(workdir=workdir, bin_dir=binary_dir())
    cp.start(timeout=timeout)
    try:
        agent = start_node_agent(cp, workdir / "node", timeout=timeout)
    except BaseException:
        cp.stop()
        raise
    return LocalCluster(cp, agent, time.monotonic() - began)


def start_node_agent(cp: ControlPlane, workdir: Path, timeout: float = 60.0) -> procs.Managed:
    assert cp.creds is not None
    port = free_port()
    agent = procs.spawn(
        "node-agent",
        [
            sys.executable,
            *_AGENT,
            f"--kubeconfig={cp.kubeconfig}",
            f"--node-name={NODE_NAME}",
            f"--workdir={workdir}",
            f"--serving-cert={cp.creds.kubelet_serving.cert}",
            f"--serving-key={cp.creds.kubelet_serving.key}",
            f"--client-ca={cp.creds.ca.cert}",
            f"--log-port={port}",
            "--apiserver-host=127.0.0.1",
            f"--apiserver-port={cp.apiserver_port}",
            f"--images={images_path()}",
        ],
        log_path=cp.log_dir / "node-agent.log",
    )
    cp.processes.append(agent)
    api = api_client(cp.kubeconfig)
    try:
        procs.wait_until(lambda: _node_ready(api), timeout, f"node {NODE_NAME} Ready", check=agent)
    finally:
        api.close()
    return agent


def _node_ready(api: client.ApiClient) -> bool:
    node = kube.get_or_none(api, f"/api/v1/nodes/{NODE_NAME}")
    if node is None:
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in node.get("status", {}).get("conditions") or []
    )
