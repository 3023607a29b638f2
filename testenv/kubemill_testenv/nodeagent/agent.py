"""The node: registers itself Ready, binds pending pods that the default scheduler would give
it (and marks those whose nodeSelector it does not match Unschedulable, as the scheduler does),
and keeps one ``PodWorker`` per pod bound here, fed by a list-then-watch of every pod."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import threading
import uuid
from pathlib import Path

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from .. import kube, runtime
from ..kube import JSON
from ..podconfig import ContainerConfigError, memory_bytes
from .events import EventRecorder
from .images import Image, ImageStore
from .logs import LogFile
from .model import AgentConfig, ContainerRun, now
from .pod import PodWorker
from .spawning import Spawner

log = logging.getLogger("kubemill.nodeagent")

# containers-common's default profile: what containerd and CRI-O use for RuntimeDefault.
SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")


class NodeAgent:
    def __init__(self, config: AgentConfig, api: client.ApiClient) -> None:
        self.config = config
        self.api = api
        self.spawner = Spawner()
        self.runc = runtime.Runc(config.workdir / "runc")
        self.images = ImageStore(config.images)
        self.events = EventRecorder(api, config.node_name)
        self._seccomp: JSON | None = None
        self.watchdog: tuple[subprocess.Popen[bytes], int] | None = None
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.bound: set[str] = set()
        #: Pods told they are unschedulable (no node label matches their nodeSelector).
        self.refused: set[str] = set()
        self.finished: set[str] = set()
        self.stopping = threading.Event()
        self.node_labels: dict[str, str] = {}

    def image(self, ref: str) -> Image:
        """The store's image for ``ref``; ``ImagePullError`` when the store has none."""
        return self.images.image(ref)

    def prepare_rootfs(self, image: Image, run: ContainerRun) -> None:
        runtime.mount_overlay(image.rootfs, run.dir, run.rootfs)

    def seccomp_profile(self) -> JSON:
        if self._seccomp is None:
            if not SECCOMP_PROFILE.exists():
                raise ContainerConfigError(
                    f"seccomp RuntimeDefault needs {SECCOMP_PROFILE} (Debian package "
                    "golang-github-containers-common)"
                )
            self._seccomp = json.loads(SECCOMP_PROFILE.read_text())
        return self._seccomp

    def service_env(self) -> dict[str, str]:
        host, port = self.config.apiserver_host, self.config.apiserver_port
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }

    def event(self, pod: JSON, kind: str, reason: str, message: str) -> None:
        self.events.event(pod, kind, reason, message)

    # -- node -----------------------------------------------------------------------------

    def register(self) -> None:
        version = kube.get(self.api, "/version")["gitVersion"]
        name = self.config.node_name
        self.node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                platform.machine(), platform.machine()
            ),
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": self.node_labels},
        }
        try:
            kube.request(self.api, "POST", "/api/v1/nodes", body=node)
        except ApiException as e:
            if e.status != 409:
                raise
        cpu = str(os.cpu_count() or 1)
        memory = f"{memory_bytes() // 1024}Ki"
        resources = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        ts = now()

        def cond(kind: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": kind, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": ts, "lastTransitionTime": ts,
            }  # fmt: skip

        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "kubemill node agent is posting ready"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.config.log_port}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
                "bootID": boot_id,
                "kernelVersion": platform.release(),
                "osImage": "kubemill node agent (runc)",
                "containerRuntimeVersion": "runc://1.1.5",
                "kubeletVersion": version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": self.node_labels["kubernetes.io/arch"],
            },
        }
        kube.merge_patch(self.api, f"/api/v1/nodes/{name}/status", {"status": status})

    # -- pods -----------------------------------------------------------------------------

    def run(self) -> None:
        self.register()
        while not self.stopping.is_set():
            try:
                self._list_and_watch()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as e:
                # A kubelet survives an API server hiccup: relist and carry on; running pods
                # are unaffected. 410 only means the watch fell too far behind.
                if not (isinstance(e, ApiException) and e.status == 410):
                    log.warning("pod watch failed, relisting: %s", e)
                    self.stopping.wait(1.0)

    def _list_and_watch(self) -> None:
        listed = kube.get(self.api, "/api/v1/pods")
        seen = set()
        for pod in listed["items"]:
            seen.add(pod["metadata"]["uid"])
            self.handle("ADDED", pod)
        with self.lock:
            vanished = [w for uid, w in self.workers.items() if uid not in seen]
        for w in vanished:
            w.removed()
        version = listed["metadata"]["resourceVersion"]
        while not self.stopping.is_set():
            for event in kube.watch(self.api, "/api/v1/pods", version, timeout_seconds=60):
                version = event["object"]["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    self.handle(event["type"], event["object"])

    def handle(self, kind: str, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        if kind == "DELETED":
            with self.lock:
                worker = self.workers.get(uid)
            if worker is not None:
                worker.removed()
            return
        node = spec.get("nodeName")
        if not node:
            self._maybe_bind(pod)
            return
        if node != self.config.node_name:
            return
        with self.lock:
            if uid in self.finished:
                return
            worker = self.workers.get(uid)
            if worker is None:
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                worker.start()
                return
        worker.update(pod)

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)
            # Events still arrive for a pod that waits for finalizers after its final delete;
            # a second worker would overwrite its terminal status.
            self.finished.add(uid)
        self.events.forget(uid)

    def _maybe_bind(self, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if meta.get("deletionTimestamp") or meta["uid"] in self.bound:
            return
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            self._unschedulable(pod)
            return
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name},
        }
        try:
            kube.request(
                self.api,
                "POST",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding",
                body=binding,
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise
        self.bound.add(meta["uid"])
        self.event(pod, "Normal", "Scheduled", f"Successfully assigned "
                   f"{meta['namespace']}/{meta['name']} to {self.config.node_name}")  # fmt: skip

    def _unschedulable(self, pod: JSON) -> None:
        """Say why the pod stays unbound, once, as the default scheduler does: the condition
        PodScheduled False (reason Unschedulable) and a FailedScheduling Event."""
        meta = pod["metadata"]
        if meta["uid"] in self.refused:
            return
        message = "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        condition = {
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": now(),
        }  # fmt: skip
        try:
            kube.merge_patch(
                self.api, f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {"metadata": {"uid": meta["uid"]}, "status": {"conditions": [condition]}},
            )  # fmt: skip
        except ApiException as e:
            if e.status not in (404, 409, 422):
                raise
            return
        self.refused.add(meta["uid"])
        self.event(pod, "Warning", "FailedScheduling", message)

    def locate_log(
        self, namespace: str, pod: str, container: str, previous: bool
    ) -> LogFile | tuple[int, str]:
        with self.lock:
            worker = next(
                (w for w in self.workers.values() if (w.namespace, w.pod_name) == (namespace, pod)),
                None,
            )
        if worker is None:
            return 404, f"pod {namespace}/{pod} not found on node {self.config.node_name}"
        run = worker.containers.log_run(container, previous)
        if run is None:
            what = "previous terminated container" if previous else "container"
            return 400, f'{what} "{container}" in pod "{pod}" not found'
        return LogFile(run.log_path, lambda: run.running, run.log_written)

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.containers.kill_all(0)
