"""A node agent that runs pods from their images under runc and reports status like a kubelet.

It registers one Ready Node, binds every pending pod that asks for the default scheduler (and
whose nodeSelector the node satisfies), and runs each container from its image with runc 1.1
(``runtime.py``), under an OCI spec built the way containerd builds it (``ocispec.py``): the
image's root file system (an overlay over the shared, never-written image store), its
entrypoint, environment, user and working directory, the pod's volumes, environment and
security context, capabilities, seccomp ``RuntimeDefault``, memory and CPU limits in a cgroup per
container run. Probes (``probes.py``) decide ``started``/``ready`` and liveness restarts. Logs are
kept per container and served on a kubelet-style HTTPS endpoint, so ``kubectl logs`` works.

Images are never pulled: ``--images`` names a JSON file mapping image references to folders of
the local store (``rootfs/`` and the OCI image ``config.json``), written by ``make images``; any
other image waits in ``ErrImagePull``/``ImagePullBackOff``.
Not modelled: pod networking (no network namespace: pods share the host network, and the
``kubernetes`` Service is reached at the API server's loopback address), Services,
PersistentVolumeClaims, ``kubectl exec``/``attach``/``port-forward``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import queue
import shutil
import signal
import subprocess
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

from . import kube, ocispec, runtime
from .containerlogs import LogFile, parse_time, pump, read_log, serve_logs
from .kube import JSON
from .kubeconfig import api_client
from .podconfig import ContainerConfigError, PodSources, memory_bytes
from .probes import ContainerProbes

log = logging.getLogger("kubemill.nodeagent")

MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
BACKOFF_START = 10.0
BACKOFF_MAX = 300.0
# How long a failed image lookup shows as ErrImagePull before ImagePullBackOff, as the kubelet's
# next pod sync would switch it.
ERR_IMAGE_PULL_SECONDS = 1.0
# The kubelet's volume manager retries a failed mount after 0.5 s, doubling up to 2m2s
# (exponentialbackoff's initialDurationBeforeRetry and maxDurationBeforeRetry).
MOUNT_BACKOFF_START = 0.5
MOUNT_BACKOFF_MAX = 122.0
# containers-common's default profile: what containerd and CRI-O use for RuntimeDefault.
SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")
NO_IMAGES = "no images: run `make images`"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ImagePullError(ContainerConfigError):
    """The image is not in this node's store; the kubelet's image back-off applies."""


@dataclass(frozen=True)
class Image:
    ref: str
    id: str
    rootfs: Path
    config: JSON


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
    # Image reference -> store folder (``rootfs/`` + ``config.json``), from ``make images``.
    images: dict[str, str]
    # Names this agent's cgroup subtree and nothing else, so its watchdog kills only its own.
    agent_id: str


class Spawner:
    """Starts every runc process from one long-lived thread.

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


@dataclass
class ContainerRun:
    """One start of one container (a restart is a new run)."""

    name: str
    restart_count: int
    log_path: Path
    dir: Path
    runc_id: str
    cgroup: str
    user: str = "0:0"
    popen: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    termination_log: Path | None = None
    container_id: str = ""
    image_id: str = ""
    probes: ContainerProbes | None = None
    # Set by a failed liveness/startup probe or deletion: the kill the agent has begun.
    killing: bool = False
    readers: list[threading.Thread] = field(default_factory=list)
    log_written: threading.Condition = field(default_factory=threading.Condition)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.exit_code is None

    @property
    def rootfs(self) -> Path:
        return self.dir / "bundle" / "rootfs"


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
        # Set when a probe changed started/ready: the status must be written again.
        self.status_dirty = threading.Event()
        self.gone = threading.Event()
        self.lock = threading.Lock()
        self.runs: dict[str, list[ContainerRun]] = {}
        self.waiting: dict[str, tuple[str, str]] = {}
        self.next_start: dict[str, float] = {}
        # Image lookups that failed per container, and until when each shows ErrImagePull.
        self.pull_failures: dict[str, int] = {}
        self.pull_error_until: dict[str, float] = {}
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
            # Never remove through a mounted overlay: that would only be slow, but a bind of a
            # hostPath left mounted would lose the host's files.
            for point in runtime.mounts_under(self.dir):
                runtime.unmount(Path(point))
            shutil.rmtree(self.dir, ignore_errors=True)
            runtime.remove_cgroups(ocispec.pod_cgroup(self.agent.config.agent_id, self.uid))

    def _run(self) -> None:
        if self.pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            # Terminal before we saw it (an agent restart): nothing is left to run, and its
            # recorded status is the truth.
            self.phase = self.pod["status"]["phase"]
            self.adopted = True
            self._await_deletion()
            return
        if self.deletion_requested():
            # Deleted before it ever ran here: there is nothing to stop, but the kubelet still
            # reports a terminal phase, which a Job's podFailurePolicy waits for before it
            # counts the pod (it may linger with a finalizer, never reaching Failed otherwise).
            self.phase = "Failed"
            self._report()
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

        delay = MOUNT_BACKOFF_START
        while not self.volumes_ready:
            if self._should_stop():
                return self._terminate()
            try:
                self.sources.prepare_volumes()
                self.volumes_ready = True
            except ContainerConfigError as e:
                # The pod stays ContainerCreating, and the Event repeats (aggregated into one
                # with a count, as the kubelet's recorder does) at each retry.
                self._event("Warning", "FailedMount", str(e))
                self._report()
                if self._sleep(delay):
                    return self._terminate()
                delay = min(delay * 2, MOUNT_BACKOFF_MAX)
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
                    self.pull_failures.pop(name, None)
                except ImagePullError as e:
                    delay = self._pull_failed(c, e)
                    if self._sleep(ERR_IMAGE_PULL_SECONDS):
                        return False
                    self._pull_backing_off(name, c)
                    if self._sleep(delay - ERR_IMAGE_PULL_SECONDS):
                        return False
                    continue
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
                    self._kill_if_probe_failed(run)
                    self._reap(run)
                    if self.status_dirty.is_set():
                        self.status_dirty.clear()
                        self._report()
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
                    self._kill_if_probe_failed(current)
                    if self._reap(current):
                        changed = True
                        self._exited(name, policy)
                    continue
                changed = self._pull_backing_off(name, c) or changed
                start_at = self.next_start.get(name)
                if start_at is not None and time.monotonic() >= start_at:
                    self.next_start.pop(name)
                    try:
                        run = self._start(c, is_init=False)
                        self.waiting.pop(name, None)
                        self.pull_failures.pop(name, None)
                        if not run.running:
                            # It never started (StartError): restarted like any other exit.
                            self._exited(name, policy)
                    except ImagePullError as e:
                        self.next_start[name] = time.monotonic() + self._pull_failed(c, e)
                    except ContainerConfigError as e:
                        self.waiting[name] = ("CreateContainerConfigError", str(e))
                        self.next_start[name] = time.monotonic() + 1.0
                    changed = True
            if changed or self.status_dirty.is_set():
                self.status_dirty.clear()
                self._report()
            if self._all_done():
                self._report()
                return self._await_deletion()
            if self.wake.wait(0.1):
                self.wake.clear()

    def _exited(self, name: str, policy: str) -> None:
        """Schedule the restart of a run that just ended, with the kubelet's back-off."""
        runs = self.runs[name]
        if not self._restart_wanted(policy, runs[-1]):
            self.next_start.pop(name, None)
            return
        delay = min(BACKOFF_START * 2 ** (len(runs) - 1), BACKOFF_MAX)
        self.next_start[name] = time.monotonic() + delay
        self.waiting[name] = (
            "CrashLoopBackOff",
            f"back-off {delay:.0f}s restarting failed container={name} "
            f"pod={self.pod_name}_{self.namespace}({self.uid})",
        )

    def _pull_failed(self, c: JSON, error: ImagePullError) -> float:
        """Show ErrImagePull and a Failed event; return the back-off before the next attempt."""
        name = c["name"]
        attempts = self.pull_failures.get(name, 0) + 1
        self.pull_failures[name] = attempts
        self.waiting[name] = ("ErrImagePull", str(error))
        self.pull_error_until[name] = time.monotonic() + ERR_IMAGE_PULL_SECONDS
        self._event("Warning", "Failed", f'Failed to pull image "{c.get("image")}": {error}')
        self._event("Warning", "Failed", "Error: ErrImagePull")
        self._report()
        return float(min(BACKOFF_START * 2 ** (attempts - 1), BACKOFF_MAX))

    def _pull_backing_off(self, name: str, c: JSON) -> bool:
        """After a moment in ErrImagePull, the kubelet's next sync shows ImagePullBackOff."""
        until = self.pull_error_until.get(name)
        if until is None or time.monotonic() < until:
            return False
        del self.pull_error_until[name]
        reason, message = self.waiting.get(name, ("", ""))
        if reason != "ErrImagePull":
            return False
        image = c.get("image")
        self.waiting[name] = (
            "ImagePullBackOff",
            f'Back-off pulling image "{image}": ErrImagePull: {message}',
        )
        self._event("Normal", "BackOff", f'Back-off pulling image "{image}"')
        self._event("Warning", "Failed", "Error: ImagePullBackOff")
        self._report()
        return True

    def _probe_changed(self) -> None:
        """Called from a probe thread: the worker reports the new ``ready``/``started``."""
        self.status_dirty.set()
        self.wake.set()

    def _kill_if_probe_failed(self, run: ContainerRun) -> None:
        """A failed liveness or startup probe kills the container with the probe's grace (or
        the pod's); its exit is then an ordinary one, restarted per restartPolicy."""
        probes = run.probes
        if probes is None or run.killing or probes.kill_reason is None:
            return
        grace = probes.kill_grace
        # Marked here, not on the kill's thread: the worker wakes again before that thread runs,
        # and must not start a second kill. The probes posted the Killing event themselves.
        run.killing = True
        threading.Thread(
            target=self._kill,
            args=([run], grace if grace is not None else self._grace()),
            kwargs={"reap": False},
            name=f"kill-{run.runc_id[:12]}",
            daemon=True,
        ).start()

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
        if self._compute_phase() not in ("Succeeded", "Failed"):
            # Stopped before its containers ended by themselves: the kubelet reports Failed.
            self.phase = "Failed"
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
        """Start one run of ``c`` under runc; return once its process runs (or failed to start).

        Raises ``ImagePullError`` for an image not in the store and ``ContainerConfigError`` for
        a spec the kubelet would refuse (both leave the container waiting); a run that runc
        could not start is returned terminated with StartError and exit code 128."""
        name = c["name"]
        image = self.agent.image(str(c.get("image", "")))
        runs = self.runs.setdefault(name, [])
        restart = len(runs)
        cdir = self.dir / "containers" / name / str(restart)
        cdir.mkdir(parents=True, exist_ok=True)
        runc_id = uuid.uuid4().hex
        run = ContainerRun(
            name=name,
            restart_count=restart,
            log_path=cdir / "container.log",
            dir=cdir,
            runc_id=runc_id,
            cgroup=ocispec.cgroups_path(self.agent.config.agent_id, self.uid, name, restart),
            container_id=f"containerd://{runc_id}",
            image_id=f"sha256:{image.id}",
        )
        run.log_path.touch()
        try:
            spec = self._container_spec(c, image, run)
        except ContainerConfigError as e:
            if is_init:
                self.waiting[name] = ("CreateContainerConfigError", str(e))
            raise
        runs.append(run)
        try:
            self.agent.prepare_rootfs(image, run)
        except runtime.StartError as e:
            run.started_at = run.finished_at = now()
            run.exit_code, run.reason, run.message = 128, "StartError", str(e)
            self._event("Warning", "Failed", f"Error: {e}")
            return run
        fifo_read, fifo_write = runtime.make_start_fifo(run.dir / "started.fifo")
        (cdir / "bundle" / "config.json").write_text(json.dumps(spec, indent=1))
        argv = self.agent.runc.run_argv(runc_id, cdir / "bundle", cdir / "runc.log")

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                ["setpriv", "--pdeathsig", "KILL", "--", *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                env=runtime.runc_env(),
            )

        try:
            run.popen = self.agent.spawner.run(spawn)
            for stream, pipe in (("stdout", run.popen.stdout), ("stderr", run.popen.stderr)):
                assert pipe is not None
                t = threading.Thread(
                    target=pump, args=(pipe, stream, run.log_path, run.log_written), daemon=True
                )
                t.start()
                run.readers.append(t)
            popen = run.popen
            started = runtime.await_start(fifo_read, lambda: popen.poll() is not None)
        finally:
            os.close(fifo_read)
            os.close(fifo_write)
        run.started_at = now()
        if not started:
            if popen.poll() is None:
                # The hook never came: treat it as a failed start, and make sure nothing runs.
                self.agent.runc.kill(runc_id, "KILL", all_processes=True)
                try:
                    popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    # runc itself is stuck before a container exists to kill: end runc.
                    popen.kill()
                    popen.wait()
            self._reap(run, start_failed=True)
            self._event("Warning", "Failed", f"Error: {run.message}")
            return run
        self._event("Normal", "Started", f"Started container {name}")
        run.probes = ContainerProbes(
            c,
            pod_ip="127.0.0.1",
            exec_probe=lambda argv, timeout: self.agent.runc.exec(runc_id, run.user, argv, timeout),
            on_change=self._probe_changed,
            on_event=self._event,
        )
        run.probes.start()
        return run

    def _reap(self, run: ContainerRun, *, start_failed: bool = False) -> bool:
        """Record the run's end if runc has exited; True when it just did."""
        assert run.popen is not None
        rc = run.popen.poll()
        if rc is None:
            return False
        if run.probes is not None:
            run.probes.stop()
        for t in run.readers:
            t.join(timeout=5)
        self.agent.runc.delete(run.runc_id)
        runtime.unmount(run.rootfs)
        run.finished_at = now()
        if start_failed:
            run.exit_code = 128
            run.reason = "StartError"
            run.message = runtime.runc_error(run.dir / "runc.log")
            return True
        run.exit_code = rc if rc >= 0 else 128 - rc
        # Like containerd: an OOM kill anywhere in the container's cgroup names the exit, even
        # when the kernel picked a child and the main process ended otherwise.
        if run.exit_code != 0 and runtime.oom_killed(run.cgroup):
            run.reason = "OOMKilled"
        else:
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
        self._kill(running, grace)
        self.killed = self.killed or bool(running)

    def _kill(self, runs: list[ContainerRun], grace: int, *, reap: bool = True) -> None:
        """SIGTERM, then after ``grace`` seconds SIGKILL to every process: containerd's stop.

        A probe's kill runs on its own thread with ``reap=False``: the pod worker records the
        exit, so a run is never reaped twice."""
        for r in runs:
            r.killing = True
            self.agent.runc.kill(r.runc_id, "TERM")
        deadline = time.monotonic() + grace
        for r in runs:
            assert r.popen is not None
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.popen.wait(timeout=remaining)
        for r in runs:
            assert r.popen is not None
            if r.popen.poll() is None:
                self.agent.runc.kill(r.runc_id, "KILL", all_processes=True)
                try:
                    r.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    # runc itself is stuck: its container is killed by the delete below.
                    r.popen.kill()
                    r.popen.wait()
            if reap:
                self._reap(r)

    # -- container configuration ----------------------------------------------------------

    def _container_spec(self, c: JSON, image: Image, run: ContainerRun) -> JSON:
        passwd = _read_image_file(image.rootfs, "etc/passwd")
        group = _read_image_file(image.rootfs, "etc/group")
        user = ocispec.resolve_user(self.spec, c, image.config, passwd, group)
        run.user = f"{user.uid}:{user.gid}"
        caps = ocispec.capability_set(c)
        seccomp = None
        if ocispec.seccomp_type(self.spec, c) == "RuntimeDefault":
            seccomp = ocispec.seccomp_to_oci(self.agent.seccomp_profile(), caps)
        env = self.sources.environment(c)
        hostname = self._hostname()
        tl = run.dir / "termination-log"
        tl.touch()
        tl.chmod(0o666)
        run.termination_log = tl
        pod_files = self._pod_files()
        mounts = [
            ocispec.Mount(str(pod_files / "hosts"), "/etc/hosts"),
            ocispec.Mount(str(pod_files / "hostname"), "/etc/hostname"),
            ocispec.Mount(str(pod_files / "resolv.conf"), "/etc/resolv.conf"),
            ocispec.Mount(str(tl), c.get("terminationMessagePath", "/dev/termination-log")),
        ]
        mounts += [self._mount(vm) for vm in c.get("volumeMounts") or []]
        inputs = ocispec.SpecInputs(
            container=c,
            pod_spec=self.spec,
            image_config=image.config,
            rootfs=str(run.rootfs),
            env=env,
            hostname=hostname,
            user=user,
            mounts=tuple(mounts),
            cgroups_path=run.cgroup,
            seccomp=seccomp,
            poststart=runtime.poststart_hook(run.dir / "started.fifo"),
        )
        return ocispec.build_spec(inputs)

    def _hostname(self) -> str:
        return str(self.spec.get("hostname") or self.pod_name)[:63]

    def _pod_files(self) -> Path:
        """``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` for the pod's containers,
        as the kubelet writes them for a host-network pod."""
        files = self.dir / "etc"
        if not files.exists():
            files.mkdir(parents=True)
            hostname = self._hostname()
            (files / "hosts").write_text(
                "# Kubernetes-managed hosts file (host network).\n"
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"127.0.0.1\t{hostname}\n"
            )
            (files / "hostname").write_text(f"{hostname}\n")
            resolv = Path("/etc/resolv.conf")
            (files / "resolv.conf").write_text(resolv.read_text() if resolv.exists() else "")
        return files

    def _mount(self, vm: JSON) -> ocispec.Mount:
        name = vm["name"]
        volume = next((v for v in self.spec.get("volumes") or [] if v["name"] == name), None)
        if volume is None:
            raise ContainerConfigError(f"volume {name!r} not found")
        source = self.sources.volume_path(volume)
        read_only = bool(vm.get("readOnly"))
        if any(k in volume for k in ("configMap", "secret", "downwardAPI", "projected")):
            read_only = True
        if vm.get("subPath"):
            source = source / vm["subPath"]
            if not source.exists():
                source.mkdir(parents=True, mode=0o777)
        return ocispec.Mount(str(source), vm["mountPath"], read_only)

    # -- status ---------------------------------------------------------------------------

    def _container_status(self, c: JSON) -> JSON:
        name = c["name"]
        runs = self.runs.get(name, [])
        current = runs[-1] if runs else None
        previous = runs[-2] if len(runs) > 1 else None
        probes = current.probes if current is not None and current.running else None
        status: JSON = {
            "name": name,
            "image": c.get("image", ""),
            "imageID": current.image_id if current is not None else "",
            "restartCount": max(0, len(runs) - 1),
            "ready": probes is not None and probes.ready,
            "started": probes is not None and probes.started,
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
        elif self.phase in ("Succeeded", "Failed"):
            # Never started, and the pod is over: what the kubelet reports for such a container.
            status["state"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                }
            }
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
            # The watch may have delivered a newer pod while this write was on its way (a
            # deletion, most importantly): an older answer must not hide it.
            if _version(updated) >= _version(self.pod):
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


def _version(pod: JSON) -> int:
    """The pod's resourceVersion as a number, to tell which of two copies is newer. Opaque by
    contract, but an etcd revision on every API server this agent talks to."""
    try:
        return int(pod["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


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


def _read_image_file(rootfs: Path, relative: str) -> str:
    """A file of the image, never following a symlink out of it onto the host's file."""
    path = rootfs / relative
    if path.is_symlink() or not path.is_file():
        return ""
    return path.read_text(errors="replace")


class NodeAgent:
    def __init__(self, config: AgentConfig, api: client.ApiClient) -> None:
        self.config = config
        self.api = api
        self.spawner = Spawner()
        self.runc = runtime.Runc(config.workdir / "runc")
        self._images: dict[str, Image] = {}
        self._seccomp: JSON | None = None
        self.watchdog: tuple[subprocess.Popen[bytes], int] | None = None
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.bound: set[str] = set()
        self.finished: set[str] = set()
        # Events posted per pod uid: (type, reason, message) -> (Event name, count), so that a
        # repeated one is counted on the first, as the kubelet's event correlator does.
        self.posted: dict[str, dict[tuple[str, str, str], tuple[str, int]]] = {}
        self.stopping = threading.Event()
        self.node_labels: dict[str, str] = {}

    def image(self, ref: str) -> Image:
        """The store's image for ``ref`` (read once; the store never changes under an image)."""
        folder = ocispec.find_image(ref, self.config.images)
        if folder is None:
            raise ImagePullError(
                f'failed to pull and unpack image "{ref}": not found in this node\'s local image '
                "store (this node pulls nothing; build it with make images)"
            )
        with self.lock:
            cached = self._images.get(folder)
        if cached is None:
            path = Path(folder)
            config = json.loads((path / "config.json").read_text())
            cached = Image(ref, path.name, path / "rootfs", dict(config.get("config") or {}))
            with self.lock:
                self._images[folder] = cached
        return cached

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
            self.posted.pop(uid, None)
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
        with self.lock:
            seen = self.posted.setdefault(meta["uid"], {}).get((kind, reason, message))
        if seen is not None:
            name, count = seen
            try:
                kube.merge_patch(
                    self.api,
                    f"/api/v1/namespaces/{meta['namespace']}/events/{name}",
                    {"count": count + 1, "lastTimestamp": ts},
                )
            except ApiException as e:
                log.info("event not recorded: %s", e.reason)
                return
            with self.lock:
                self.posted.setdefault(meta["uid"], {})[(kind, reason, message)] = (name, count + 1)
            return
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
            created = kube.request(self.api, "POST",
                                   f"/api/v1/namespaces/{meta['namespace']}/events",
                                   body=body)  # fmt: skip
        except ApiException as e:
            log.info("event not recorded: %s", e.reason)
            return
        with self.lock:
            self.posted.setdefault(meta["uid"], {})[(kind, reason, message)] = (
                created["metadata"]["name"], 1,
            )  # fmt: skip

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


def load_images(path: Path) -> dict[str, str]:
    """The ``make images`` index: image reference -> store folder."""
    if not path.is_file():
        raise SystemExit(f"{NO_IMAGES} ({path} is missing)")
    images: dict[str, str] = dict(json.loads(path.read_text())["images"])
    return images


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
        "--images", type=Path, required=True, help="build/images.json written by make images"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = AgentConfig(
        node_name=args.node_name,
        workdir=args.workdir.resolve(),
        kubeconfig=args.kubeconfig,
        serving_cert=args.serving_cert,
        serving_key=args.serving_key,
        client_ca=args.client_ca,
        log_port=args.log_port,
        apiserver_host=args.apiserver_host,
        apiserver_port=args.apiserver_port,
        images=load_images(args.images),
        agent_id=uuid.uuid4().hex[:12],
    )
    config.workdir.mkdir(parents=True, exist_ok=True)
    agent = NodeAgent(config, api_client(args.kubeconfig))
    # Containers an earlier agent left behind (it was killed before its watchdog finished).
    agent.runc.clean_all()
    for point in runtime.mounts_under(config.workdir):
        runtime.unmount(Path(point))
    # Held for the agent's life and never inherited: its EOF tells the watchdog we are gone.
    agent.watchdog = runtime.start_watchdog(
        agent.runc, f"/kubemill/{config.agent_id}", config.workdir
    )

    def stop(signum: int, _frame: Any) -> None:
        agent.shutdown()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    serve_logs(
        config.log_port, config.serving_cert, config.serving_key, config.client_ca, agent.locate_log
    )
    agent.run()


if __name__ == "__main__":
    main()
