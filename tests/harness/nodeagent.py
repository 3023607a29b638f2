"""A node agent that runs pods as local processes and reports their status like a kubelet.

It registers one Ready Node, binds every pending pod that asks for the default scheduler (and
whose nodeSelector the node satisfies), and runs each container's command in its own PID, mount
and UTS namespace (see ``podinit.py``) with volumes at their ``mountPath``s, the environment the
kubelet would build, ``runAsUser``/``runAsGroup`` and ``readOnlyRootFilesystem``. Logs are kept
per container and served on a kubelet-style HTTPS endpoint, so ``kubectl logs`` works through the
API server.

How an image maps to a process (no image is pulled):
  * the container's ``command`` is run as given, resolved on the container's ``PATH``;
  * without a ``command``, the image's entrypoint comes from ``--image-entrypoints`` (JSON: image
    name without registry, tag or digest -> argv); by default ``kubemill-runner`` -> ``kubemill``;
  * the "image's" environment is ``PATH=<agent's venv>/bin:<system paths>`` and ``HOME``, so
    ``python``, ``kubemill`` and the project's dependencies are those of the project's venv;
  * the file system is the host's; a non-root user sees ``/root`` replaced by the toolchain only.
Not modelled: images, resource limits, probes, networking (pods share the host network; the
``kubernetes`` Service is reached at the API server's loopback address), PersistentVolumeClaims.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import pwd
import queue
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from . import kube
from .containerlogs import LogFile, parse_time, pump, read_log, serve_logs
from .kube import JSON
from .kubeconfig import api_client
from .podconfig import ContainerConfigError, PodSources, expand, memory_bytes

log = logging.getLogger("kubemill.nodeagent")

PODINIT = Path(__file__).with_name("podinit.py")
DEFAULT_IMAGE_ENTRYPOINTS: dict[str, list[str]] = {"kubemill-runner": ["kubemill"]}
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
BACKOFF_START = 10.0
BACKOFF_MAX = 300.0


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent needs, read once from the command line."""

    node_name: str
    workdir: Path
    kubeconfig: Path
    serving_cert: Path
    serving_key: Path
    client_ca: Path
    log_port: int
    # Where pods find the API server: the kubernetes Service's address is not routable here.
    apiserver_host: str
    apiserver_port: int
    image_entrypoints: dict[str, list[str]]
    # Interpreter and venv that non-root containers must still reach under the masked /root.
    toolchain_paths: tuple[str, ...]
    image_path: str


class Spawner:
    """Starts every container process from one long-lived thread.

    The parent-death signal fires when the *thread* that forked a child exits; pod workers come
    and go, so children are forked here, and die only with the agent.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        threading.Thread(target=self._loop, name="spawner", daemon=True).start()

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

    def run(self, fn: Callable[[], Any]) -> Any:
        fut: Future[Any] = Future()
        self._jobs.put((fn, fut))
        return fut.result()


class MountPoints:
    """Mount points that are missing on the host: made for containers, removed after the last.

    A runtime creates a volume's mount point inside the image's root file system; here the root
    is the host's, so the agent creates it on the host, counts the containers using it, and takes
    it away once none does. Paths are only removed while empty.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}

    def acquire(self, targets: list[tuple[str, bool]]) -> list[str]:
        held: list[str] = []
        with self._lock:
            for target, is_file in targets:
                target = os.path.normpath(target)
                missing = []
                path = target
                while not os.path.lexists(path):
                    missing.append(path)
                    path = os.path.dirname(path)
                for path in reversed(missing):
                    if path == target and is_file:
                        with open(path, "a"):
                            pass
                    else:
                        os.mkdir(path, 0o755)
                    self._users[path] = 0
                path = target
                while True:
                    if path in self._users:
                        self._users[path] += 1
                        held.append(path)
                    parent = os.path.dirname(path)
                    if parent == path:
                        break
                    path = parent
        return held

    def release(self, held: list[str]) -> None:
        with self._lock:
            for path in held:
                self._users[path] -= 1
            unused = [p for p, n in self._users.items() if n <= 0]
            # Deepest first, so a parent is empty by the time its turn comes.
            for path in sorted(unused, key=len, reverse=True):
                del self._users[path]
                with contextlib.suppress(OSError):
                    if os.path.isdir(path) and not os.path.islink(path):
                        os.rmdir(path)
                    elif os.path.isfile(path) and os.path.getsize(path) == 0:
                        os.unlink(path)


@dataclass
class ContainerRun:
    """One start of one container (a restart is a new run)."""

    name: str
    restart_count: int
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    pid1: int | None = None
    start_error: bytes = b""
    error_fd: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    termination_log: Path | None = None
    container_id: str = ""
    mount_points: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)
    log_written: threading.Condition = field(default_factory=threading.Condition)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.exit_code is None


class PodWorker(threading.Thread):
    """Owns one pod on this node from first sight until its final deletion."""

    def __init__(self, agent: NodeAgent, pod: JSON) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}-{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir: Path = agent.config.workdir / "pods" / self.uid
        self.sources = PodSources(
            agent.api,
            pod,
            node_name=agent.config.node_name,
            volumes_dir=self.dir / "volumes",
            service_env=agent.service_env(),
        )
        self.wake = threading.Event()
        self.gone = threading.Event()
        self.lock = threading.Lock()
        self.runs: dict[str, list[ContainerRun]] = {}
        self.waiting: dict[str, tuple[str, str]] = {}
        self.next_start: dict[str, float] = {}
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time: str | None = pod.get("status", {}).get("startTime")
        self.volumes_ready = False
        self.init_done = False
        self.killed = False
        self._last_status: JSON | None = None
        self.adopted = False

    # -- events from the watch ------------------------------------------------------------

    def update(self, pod: JSON) -> None:
        with self.lock:
            self.pod = pod
            self.sources.pod = pod
        self.wake.set()

    def removed(self) -> None:
        self.gone.set()
        self.wake.set()

    @property
    def spec(self) -> JSON:
        spec: JSON = self.pod["spec"]
        return spec

    def deletion_requested(self) -> bool:
        return bool(self.pod["metadata"].get("deletionTimestamp"))

    # -- main loop ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.error("pod %s/%s: %s", self.namespace, self.pod_name, traceback.format_exc())
            self._kill_all(0)
        finally:
            self.agent.forget(self.uid)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self) -> None:
        if self.pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            # Terminal before we saw it (an agent restart): nothing is left to run, and its
            # recorded status is the truth.
            self.phase = self.pod["status"]["phase"]
            self.adopted = True
            self._await_deletion()
            return
        if self.deletion_requested():
            # Deleted before it ever ran here: there is nothing to stop.
            self._final_delete()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.start_time is None:
            self.start_time = now()
        for c in self.spec.get("initContainers") or []:
            self.waiting[c["name"]] = ("PodInitializing", "")
        for c in self.spec["containers"]:
            self.waiting[c["name"]] = ("ContainerCreating", "")
        self._report()

        while not self.volumes_ready:
            if self._should_stop():
                return self._terminate()
            try:
                self.sources.prepare_volumes()
                self.volumes_ready = True
            except ContainerConfigError as e:
                self._event("Warning", "FailedMount", str(e))
                self._report()
                if self.wake.wait(1.0):
                    self.wake.clear()
        self._report()

        if not self._run_init_containers():
            return self._terminate()
        self.init_done = True
        for c in self.spec["containers"]:
            self.next_start[c["name"]] = 0.0
        self._supervise()

    def _should_stop(self) -> bool:
        return self.gone.is_set() or self.deletion_requested() or self._past_deadline()

    def _past_deadline(self) -> bool:
        deadline = self.spec.get("activeDeadlineSeconds")
        if deadline is None or self.start_time is None:
            return False
        return time.time() - parse_time(self.start_time) >= int(deadline)

    def _run_init_containers(self) -> bool:
        policy = self.spec.get("restartPolicy", "Always")
        for c in self.spec.get("initContainers") or []:
            name = c["name"]
            attempts = 0
            while True:
                if self._should_stop():
                    return False
                try:
                    run = self._start(c, is_init=True)
                except ContainerConfigError:
                    self._report()
                    if self._sleep(1.0):
                        return False
                    continue
                self.waiting.pop(name, None)
                self._report()
                while run.running:
                    if self._should_stop():
                        return False
                    self._reap(run)
                    if run.running and self.wake.wait(0.1):
                        self.wake.clear()
                self._report()
                if run.exit_code == 0:
                    break
                if policy == "Never":
                    self.phase = "Failed"
                    self._report()
                    self._await_deletion()
                    return False
                attempts += 1
                delay = min(BACKOFF_START * 2 ** (attempts - 1), BACKOFF_MAX)
                self.waiting[name] = ("CrashLoopBackOff", f"back-off {delay:.0f}s restarting")
                self._report()
                if self._sleep(delay):
                    return False
        return True

    def _sleep(self, seconds: float) -> bool:
        """Wait, but wake for deletion or deadline; True if the pod must stop."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self._should_stop():
                return True
            if self.wake.wait(min(0.2, end - time.monotonic())):
                self.wake.clear()
        return self._should_stop()

    def _supervise(self) -> None:
        policy = self.spec.get("restartPolicy", "Always")
        containers = {c["name"]: c for c in self.spec["containers"]}
        while True:
            if self._should_stop():
                return self._terminate()
            changed = False
            for name, c in containers.items():
                runs = self.runs.get(name, [])
                current = runs[-1] if runs else None
                if current is not None and current.running:
                    if self._reap(current):
                        changed = True
                        if self._restart_wanted(policy, current):
                            restarts = len(runs)
                            delay = min(BACKOFF_START * 2 ** (restarts - 1), BACKOFF_MAX)
                            self.next_start[name] = time.monotonic() + delay
                            self.waiting[name] = (
                                "CrashLoopBackOff",
                                f"back-off {delay:.0f}s restarting failed container={name} "
                                f"pod={self.pod_name}_{self.namespace}({self.uid})",
                            )
                        else:
                            self.next_start.pop(name, None)
                    continue
                start_at = self.next_start.get(name)
                if start_at is not None and time.monotonic() >= start_at:
                    self.next_start.pop(name)
                    try:
                        self._start(c, is_init=False)
                        self.waiting.pop(name, None)
                    except ContainerConfigError as e:
                        self.waiting[name] = ("CreateContainerConfigError", str(e))
                        self.next_start[name] = time.monotonic() + 1.0
                    changed = True
            if changed:
                self._report()
            if self._all_done():
                self._report()
                return self._await_deletion()
            if self.wake.wait(0.1):
                self.wake.clear()

    @staticmethod
    def _restart_wanted(policy: str, run: ContainerRun) -> bool:
        return policy == "Always" or (policy == "OnFailure" and run.exit_code != 0)

    def _all_done(self) -> bool:
        if self.next_start:
            return False
        return all(
            self.runs.get(c["name"]) and not self.runs[c["name"]][-1].running
            for c in self.spec["containers"]
        )

    def _terminate(self) -> None:
        """Stop for deletion or deadline; report the terminal status; delete when asked."""
        if self.gone.is_set():
            self._kill_all(0)
            return
        if self._past_deadline() and not self.deletion_requested():
            self._kill_all(self._grace())
            self.phase = "Failed"
            self.reason = "DeadlineExceeded"
            self.message = "Pod was active on the node longer than the specified deadline"
            self.waiting.clear()
            self.next_start.clear()
            self._report()
            return self._await_deletion()
        self._kill_all(self._grace())
        self.waiting.clear()
        self.next_start.clear()
        self._report()
        self._final_delete()

    def _grace(self) -> int:
        meta_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if meta_grace is not None:
            return int(meta_grace)
        return int(self.spec.get("terminationGracePeriodSeconds", 30))

    def _await_deletion(self) -> None:
        while not self.gone.is_set() and not self.deletion_requested():
            # A no-op unless an earlier status write failed.
            self._report()
            if self.wake.wait(1.0):
                self.wake.clear()
        if not self.gone.is_set():
            self._final_delete()

    def _final_delete(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        try:
            kube.request(
                self.agent.api,
                "DELETE",
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}",
                body=body,
            )
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    # -- containers -----------------------------------------------------------------------

    def _start(self, c: JSON, *, is_init: bool) -> ContainerRun:
        name = c["name"]
        runs = self.runs.setdefault(name, [])
        restart = len(runs)
        cdir = self.dir / "containers" / name / str(restart)
        cdir.mkdir(parents=True, exist_ok=True)
        run = ContainerRun(name=name, restart_count=restart, log_path=cdir / "container.log")
        run.log_path.touch()
        run.container_id = f"kubemill://{uuid.uuid4().hex}"
        try:
            spec = self._container_spec(c, cdir, run)
        except ContainerConfigError as e:
            if is_init:
                self.waiting[name] = ("CreateContainerConfigError", str(e))
            raise
        runs.append(run)
        run.mount_points = self.agent.mount_points.acquire(
            [(m["target"], bool(m["file"])) for m in spec["mounts"]]
        )
        read_fd, write_fd = os.pipe()
        spec["errorFd"] = write_fd
        spec_path = cdir / "podinit.json"
        spec_path.write_text(json.dumps(spec))
        hostname = (self.spec.get("hostname") or self.pod_name)[:63]
        argv = [
            "setpriv", "--pdeathsig", "KILL", "--",
            "unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child=SIGKILL",
            "--mount-proc", "--propagation", "private",
            sys.executable, "-I", str(PODINIT), str(spec_path), hostname,
        ]  # fmt: skip

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_fd,),
                start_new_session=True,
                env={"PATH": SYSTEM_PATH},
            )

        try:
            run.popen = self.agent.spawner.run(spawn)
        finally:
            os.close(write_fd)
        run.pid1 = _first_child(run.popen.pid)
        for stream, pipe in (("stdout", run.popen.stdout), ("stderr", run.popen.stderr)):
            assert pipe is not None
            t = threading.Thread(
                target=pump, args=(pipe, stream, run.log_path, run.log_written), daemon=True
            )
            t.start()
            run.readers.append(t)
        # Like a runtime's start, return only once the command is about to run (or failed to).
        run.error_fd = read_fd
        run.start_error = _await_exec(read_fd)
        run.started_at = now()
        if not run.start_error:
            self._event("Normal", "Started", f"Started container {name}")
        return run

    def _reap(self, run: ContainerRun) -> bool:
        """Record the run's end if its process has exited; True when it just did."""
        assert run.popen is not None
        rc = run.popen.poll()
        if rc is None:
            return False
        for t in run.readers:
            t.join(timeout=5)
        self.agent.mount_points.release(run.mount_points)
        run.mount_points = []
        run.finished_at = now()
        if run.error_fd is not None:
            run.start_error += _read_to_eof(run.error_fd, timeout=2.0)
            os.close(run.error_fd)
            run.error_fd = None
        if run.start_error:
            run.exit_code = 128
            run.reason = "StartError"
            run.message = run.start_error.decode(errors="replace")
            return True
        run.exit_code = rc if rc >= 0 else 128 - rc
        run.reason = "Completed" if run.exit_code == 0 else "Error"
        run.message = self._termination_message(run)
        return True

    def _termination_message(self, run: ContainerRun) -> str | None:
        message = ""
        if run.termination_log is not None and run.termination_log.exists():
            message = run.termination_log.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(
                errors="replace"
            )
        c = self._container(run.name)
        policy = c.get("terminationMessagePolicy", "File") if c else "File"
        if not message and policy == "FallbackToLogsOnError" and run.exit_code != 0:
            lines = [line for _, _, line in read_log(run.log_path)]
            tail = "".join(lines[-FALLBACK_LOG_LINES:]).encode()[-FALLBACK_LOG_BYTES:]
            message = tail.decode(errors="replace")
        return message or None

    def _container(self, name: str) -> JSON | None:
        for c in (self.spec.get("initContainers") or []) + self.spec["containers"]:
            if c["name"] == name:
                return dict(c)
        return None

    def _kill_all(self, grace: int) -> None:
        running = [r for runs in self.runs.values() for r in runs if r.running]
        for r in running:
            if r.pid1 is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(r.pid1, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for r in running:
            assert r.popen is not None
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.popen.wait(timeout=remaining)
        for r in running:
            assert r.popen is not None
            if r.popen.poll() is None:
                if r.pid1 is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(r.pid1, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(r.popen.pid, signal.SIGKILL)
                r.popen.wait()
            self._reap(r)
        self.killed = self.killed or bool(running)

    # -- container configuration ----------------------------------------------------------

    def _container_spec(self, c: JSON, cdir: Path, run: ContainerRun) -> JSON:
        pod_sc = self.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and not uid:
            if uid is None:
                raise ContainerConfigError(
                    "container has runAsNonRoot and image will run as root "
                    f"(pod: {self.pod_name}_{self.namespace}({self.uid}), container: {c['name']})"
                )
            raise ContainerConfigError(
                "container's runAsUser breaks non-root policy "
                f"(pod: {self.pod_name}_{self.namespace}({self.uid}), container: {c['name']})"
            )
        user = _passwd(uid if uid is not None else 0)
        if gid is None and uid is not None:
            gid = user.pw_gid if user is not None else 0
        groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
        if pod_sc.get("fsGroup") is not None:
            groups.append(int(pod_sc["fsGroup"]))

        env = self.sources.environment(c)
        home = user.pw_dir if user is not None else "/"
        image_env = {"PATH": self.agent.config.image_path, "HOME": home}
        hostname = (self.spec.get("hostname") or self.pod_name)[:63]
        merged = {**image_env, "HOSTNAME": hostname, **env}
        argv = self._argv(c, merged)

        tl = cdir / "termination-log"
        tl.touch()
        tl.chmod(0o666)
        run.termination_log = tl
        mounts = [
            {"source": str(tl), "target": c.get("terminationMessagePath", "/dev/termination-log"),
             "file": True},
        ]  # fmt: skip
        for vm in c.get("volumeMounts") or []:
            mounts.append(self._mount(vm))
        return {
            "mounts": mounts,
            "privateHome": "/root",
            "keepUnderPrivateHome": list(self.agent.config.toolchain_paths),
            "uid": uid,
            "gid": gid,
            "supplementalGroups": groups,
            "readOnlyRoot": bool(sc.get("readOnlyRootFilesystem")),
            "workingDir": c.get("workingDir"),
            "env": merged,
            "argv": argv,
        }

    def _argv(self, c: JSON, env: dict[str, str]) -> list[str]:
        command = c.get("command") or []
        args = c.get("args") or []
        if not command:
            image = _image_name(c.get("image", ""))
            entry = self.agent.config.image_entrypoints.get(image)
            if entry is None:
                raise ContainerConfigError(
                    f"image {c.get('image')!r} has no known entrypoint on this node: set the "
                    "container's command, or map the image with --image-entrypoints"
                )
            command = entry
        argv = [expand(a, env) for a in [*command, *args]]
        return argv

    def _mount(self, vm: JSON) -> JSON:
        name = vm["name"]
        volume = next((v for v in self.spec.get("volumes") or [] if v["name"] == name), None)
        if volume is None:
            raise ContainerConfigError(f"volume {name!r} not found")
        source = self.sources.volume_path(volume)
        read_only = bool(vm.get("readOnly"))
        if any(k in volume for k in ("configMap", "secret", "downwardAPI", "projected")):
            read_only = True
        is_file = source.is_file()
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if not source.exists():
                source.mkdir(parents=True, mode=0o777)
            is_file = source.is_file()
        return {
            "source": str(source),
            "target": vm["mountPath"],
            "readOnly": read_only,
            "file": is_file,
        }

    # -- status ---------------------------------------------------------------------------

    def _container_status(self, c: JSON) -> JSON:
        name = c["name"]
        runs = self.runs.get(name, [])
        current = runs[-1] if runs else None
        previous = runs[-2] if len(runs) > 1 else None
        status: JSON = {
            "name": name,
            "image": c.get("image", ""),
            "imageID": "",
            "restartCount": max(0, len(runs) - 1),
            "ready": bool(current and current.running),
            "started": bool(current and current.running),
        }
        if name in self.waiting and (current is None or not current.running):
            reason, message = self.waiting[name]
            state: JSON = {"waiting": {"reason": reason}}
            if message:
                state["waiting"]["message"] = message
            status["state"] = state
            if current is not None:
                status["lastState"] = {"terminated": _terminated(current)}
                status["containerID"] = current.container_id
        elif current is not None:
            status["containerID"] = current.container_id
            if current.running:
                status["state"] = {"running": {"startedAt": current.started_at}}
            else:
                status["state"] = {"terminated": _terminated(current)}
            if previous is not None:
                status["lastState"] = {"terminated": _terminated(previous)}
            else:
                status["lastState"] = {}
        else:
            status["state"] = {"waiting": {"reason": "PodInitializing"}}
        return status

    def _compute_phase(self) -> str:
        if self.phase == "Failed":
            return "Failed"
        if not self.init_done:
            return "Pending"
        policy = self.spec.get("restartPolicy", "Always")
        latest = [self.runs.get(c["name"], []) for c in self.spec["containers"]]
        if any(not r for r in latest):
            return "Pending"
        finals = [r[-1] for r in latest]
        if any(r.running for r in finals) or self.next_start:
            return "Running"
        if policy == "Always" and not self.killed:
            return "Running"
        if all(r.exit_code == 0 for r in finals):
            return "Succeeded"
        return "Failed"

    def _report(self) -> None:
        if self.adopted:
            return
        self.phase = self._compute_phase()
        terminal = self.phase in ("Succeeded", "Failed")
        containers = [self._container_status(c) for c in self.spec["containers"]]
        inits = [self._container_status(c) for c in self.spec.get("initContainers") or []]
        all_running = all(s.get("ready") for s in containers)
        ts = now()

        def cond(kind: str, ok: bool, reason: str | None = None) -> JSON:
            c: JSON = {"type": kind, "status": "True" if ok else "False"}
            if reason and not ok:
                c["reason"] = reason
            return c

        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        conditions = [
            cond("PodReadyToStartContainers", self.volumes_ready and not terminal),
            cond("Initialized", self.init_done or terminal, "ContainersNotInitialized"),
            cond("Ready", all_running and not terminal, not_ready),
            cond("ContainersReady", all_running and not terminal, not_ready),
        ]
        previous = {c["type"]: c for c in self.pod.get("status", {}).get("conditions") or []}
        for c in conditions:
            old = previous.get(c["type"])
            same = old is not None and old.get("status") == c["status"]
            c["lastTransitionTime"] = old.get("lastTransitionTime", ts) if same and old else ts
            c["lastProbeTime"] = None
        managed = {c["type"] for c in conditions}
        conditions += [c for t, c in previous.items() if t not in managed]
        status: JSON = {
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": containers,
            "qosClass": self.pod.get("status", {}).get("qosClass"),
        }
        if inits:
            status["initContainerStatuses"] = inits
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        comparable = {
            **status,
            "conditions": [{**c, "lastTransitionTime": None} for c in conditions],
        }
        if comparable == self._last_status:
            return
        try:
            updated = kube.merge_patch(
                self.agent.api,
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status",
                {"metadata": {"uid": self.uid}, "status": status},
            )
        except ApiException as e:
            if e.status in (404, 409, 422):
                log.info("status of %s/%s not written: %s", self.namespace, self.pod_name, e.reason)
                return
            raise
        except (urllib3.exceptions.HTTPError, OSError) as e:
            # The next change reports the whole status again.
            log.warning("status of %s/%s not written: %s", self.namespace, self.pod_name, e)
            return
        self._last_status = comparable
        with self.lock:
            self.pod = updated
            self.sources.pod = updated

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.agent.event(self.pod, kind, reason, message)

    # -- logs -----------------------------------------------------------------------------

    def log_run(self, container: str, previous: bool) -> ContainerRun | None:
        runs = self.runs.get(container, [])
        if previous:
            return runs[-2] if len(runs) > 1 else None
        return runs[-1] if runs else None


def _terminated(run: ContainerRun) -> JSON:
    t: JSON = {
        "exitCode": run.exit_code,
        "reason": run.reason,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "containerID": run.container_id,
    }
    if run.message:
        t["message"] = run.message
    return t


def _await_exec(fd: int, timeout: float = 60.0) -> bytes:
    """Wait for podinit's "about to exec" byte; return the error it wrote instead, if any.

    The pipe is also held open by unshare's parent process for the container's whole life, so
    EOF cannot signal success; podinit writes a NUL byte just before exec instead.
    """
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data or b"container setup did not finish in time"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1)
        if chunk in (b"", b"\0"):
            return data
        data += chunk


def _read_to_eof(fd: int, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _first_child(pid: int, timeout: float = 2.0) -> int | None:
    """The PID (in our namespace) of unshare's forked child: the container's PID 1."""
    deadline = time.monotonic() + timeout
    path = Path(f"/proc/{pid}/task/{pid}/children")
    while time.monotonic() < deadline:
        try:
            children = path.read_text().split()
        except OSError:
            return None
        if children:
            return int(children[0])
        time.sleep(0.005)
    return None


def _image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def _passwd(uid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


class NodeAgent:
    def __init__(self, config: AgentConfig, api: client.ApiClient) -> None:
        self.config = config
        self.api = api
        self.spawner = Spawner()
        self.mount_points = MountPoints()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.bound: set[str] = set()
        self.finished: set[str] = set()
        self.stopping = threading.Event()
        self.node_labels: dict[str, str] = {}

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
                "osImage": "kubemill node agent (processes)",
                "containerRuntimeVersion": "kubemill://0.1.0",
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

    def _maybe_bind(self, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        if meta.get("deletionTimestamp") or meta["uid"] in self.bound:
            return
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
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

    def event(self, pod: JSON, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        ts = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.config.node_name},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            kube.request(self.api, "POST", f"/api/v1/namespaces/{meta['namespace']}/events",
                         body=body)  # fmt: skip
        except ApiException as e:
            log.info("event not recorded: %s", e.reason)

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
        run = worker.log_run(container, previous)
        if run is None:
            what = "previous terminated container" if previous else "container"
            return 400, f'{what} "{container}" in pod "{pod}" not found'
        return LogFile(run.log_path, lambda: run.running, run.log_written)

    def shutdown(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w._kill_all(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node-name", default="kubemill-node")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--serving-cert", type=Path, required=True)
    parser.add_argument("--serving-key", type=Path, required=True)
    parser.add_argument("--client-ca", type=Path, required=True)
    parser.add_argument("--log-port", type=int, required=True)
    parser.add_argument("--apiserver-host", default="127.0.0.1")
    parser.add_argument("--apiserver-port", type=int, required=True)
    parser.add_argument(
        "--image-entrypoints",
        type=json.loads,
        default=DEFAULT_IMAGE_ENTRYPOINTS,
        help="JSON object: image name (no registry, tag or digest) -> entrypoint argv",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    venv = Path(sys.prefix)
    toolchain = tuple(dict.fromkeys([sys.prefix, sys.base_prefix, str(venv.resolve())]))
    config = AgentConfig(
        node_name=args.node_name,
        workdir=args.workdir,
        kubeconfig=args.kubeconfig,
        serving_cert=args.serving_cert,
        serving_key=args.serving_key,
        client_ca=args.client_ca,
        log_port=args.log_port,
        apiserver_host=args.apiserver_host,
        apiserver_port=args.apiserver_port,
        image_entrypoints={**DEFAULT_IMAGE_ENTRYPOINTS, **args.image_entrypoints},
        toolchain_paths=toolchain,
        image_path=f"{venv / 'bin'}:{SYSTEM_PATH}",
    )
    config.workdir.mkdir(parents=True, exist_ok=True)
    agent = NodeAgent(config, api_client(args.kubeconfig))

    def stop(signum: int, _frame: Any) -> None:
        agent.shutdown()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve_logs(
        config.log_port, config.serving_cert, config.serving_key, config.client_ca, agent.locate_log
    )
    agent.run()
