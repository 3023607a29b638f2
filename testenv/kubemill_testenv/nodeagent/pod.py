"""One pod on this node, from first sight until its final deletion: volumes, init containers in
order, containers started, restarted with the kubelet's back-offs and stopped, deadline and
deletion, with the status reported after every change. A ``PodWorker`` thread owns its
``PodState`` and decides; ``containers`` starts, reaps and stops the runs, ``status`` says what
is reported, ``images`` the pull back-off."""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from .. import ocispec, runtime
from ..kube import JSON
from ..podconfig import ContainerConfigError, PodSources
from .containers import PodContainers
from .images import ImagePullError, PullBackoff
from .logs import parse_time
from .model import (
    BACKOFF_MAX,
    BACKOFF_START,
    ERR_IMAGE_PULL_SECONDS,
    MOUNT_BACKOFF_MAX,
    MOUNT_BACKOFF_START,
    ContainerRun,
    PodState,
    now,
)
from .status import compute_phase, final_delete, pod_status, resource_version, write_status

if TYPE_CHECKING:
    from .agent import NodeAgent

log = logging.getLogger("kubemill.nodeagent")


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
        self.state = PodState(start_time=pod.get("status", {}).get("startTime"))
        self.pulls = PullBackoff()
        self._last_status: JSON | None = None
        self.adopted = False
        self.containers = PodContainers(
            agent,
            self.state,
            pod_dir=self.dir,
            uid=self.uid,
            pod_name=self.pod_name,
            sources=self.sources,
            spec=lambda: self.spec,
            grace=self._grace,
            event=self._event,
            probe_changed=self._probe_changed,
        )

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
            self.containers.kill_all(0)
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
            self.state.phase = self.pod["status"]["phase"]
            self.adopted = True
            self._await_deletion()
            return
        if self.deletion_requested():
            # Deleted before it ever ran here: there is nothing to stop, but the kubelet still
            # reports a terminal phase, which a Job's podFailurePolicy waits for before it
            # counts the pod (it may linger with a finalizer, never reaching Failed otherwise).
            self.state.phase = "Failed"
            self._report()
            self._final_delete()
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.state.start_time is None:
            self.state.start_time = now()
        for c in self.spec.get("initContainers") or []:
            self.state.waiting[c["name"]] = ("PodInitializing", "")
        for c in self.spec["containers"]:
            self.state.waiting[c["name"]] = ("ContainerCreating", "")
        self._report()

        delay = MOUNT_BACKOFF_START
        while not self.state.volumes_ready:
            if self._should_stop():
                return self._terminate()
            try:
                self.sources.prepare_volumes()
                self.state.volumes_ready = True
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
        self.state.init_done = True
        for c in self.spec["containers"]:
            self.state.next_start[c["name"]] = 0.0
        self._supervise()

    def _should_stop(self) -> bool:
        return self.gone.is_set() or self.deletion_requested() or self._past_deadline()

    def _past_deadline(self) -> bool:
        deadline = self.spec.get("activeDeadlineSeconds")
        if deadline is None or self.state.start_time is None:
            return False
        return time.time() - parse_time(self.state.start_time) >= int(deadline)

    def _run_init_containers(self) -> bool:
        policy = self.spec.get("restartPolicy", "Always")
        for c in self.spec.get("initContainers") or []:
            name = c["name"]
            attempts = 0
            while True:
                if self._should_stop():
                    return False
                try:
                    run = self.containers.start(c, is_init=True)
                    self.pulls.pulled(name)
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
                self.state.waiting.pop(name, None)
                self._report()
                while run.running:
                    if self._should_stop():
                        return False
                    self.containers.kill_if_probe_failed(run)
                    self.containers.reap(run)
                    if self.status_dirty.is_set():
                        self.status_dirty.clear()
                        self._report()
                    if run.running and self.wake.wait(0.1):
                        self.wake.clear()
                self._report()
                if run.exit_code == 0:
                    break
                if policy == "Never":
                    self.state.phase = "Failed"
                    self._report()
                    self._await_deletion()
                    return False
                attempts += 1
                delay = min(BACKOFF_START * 2 ** (attempts - 1), BACKOFF_MAX)
                self.state.waiting[name] = ("CrashLoopBackOff", f"back-off {delay:.0f}s restarting")
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
                runs = self.state.runs.get(name, [])
                current = runs[-1] if runs else None
                if current is not None and current.running:
                    self.containers.kill_if_probe_failed(current)
                    if self.containers.reap(current):
                        changed = True
                        self._exited(name, policy)
                    continue
                changed = self._pull_backing_off(name, c) or changed
                start_at = self.state.next_start.get(name)
                if start_at is not None and time.monotonic() >= start_at:
                    self.state.next_start.pop(name)
                    try:
                        run = self.containers.start(c, is_init=False)
                        self.state.waiting.pop(name, None)
                        self.pulls.pulled(name)
                        if not run.running:
                            # It never started (StartError): restarted like any other exit.
                            self._exited(name, policy)
                    except ImagePullError as e:
                        self.state.next_start[name] = time.monotonic() + self._pull_failed(c, e)
                    except ContainerConfigError as e:
                        self.state.waiting[name] = ("CreateContainerConfigError", str(e))
                        self.state.next_start[name] = time.monotonic() + 1.0
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
        runs = self.state.runs[name]
        if not self._restart_wanted(policy, runs[-1]):
            self.state.next_start.pop(name, None)
            return
        delay = min(BACKOFF_START * 2 ** (len(runs) - 1), BACKOFF_MAX)
        self.state.next_start[name] = time.monotonic() + delay
        self.state.waiting[name] = (
            "CrashLoopBackOff",
            f"back-off {delay:.0f}s restarting failed container={name} "
            f"pod={self.pod_name}_{self.namespace}({self.uid})",
        )

    def _pull_failed(self, c: JSON, error: ImagePullError) -> float:
        """Show ErrImagePull and a Failed event; return the back-off before the next attempt."""
        name = c["name"]
        delay = self.pulls.failed(name)
        self.state.waiting[name] = ("ErrImagePull", str(error))
        self._event("Warning", "Failed", f'Failed to pull image "{c.get("image")}": {error}')
        self._event("Warning", "Failed", "Error: ErrImagePull")
        self._report()
        return delay

    def _pull_backing_off(self, name: str, c: JSON) -> bool:
        """After a moment in ErrImagePull, the kubelet's next sync shows ImagePullBackOff."""
        if not self.pulls.error_shown(name):
            return False
        reason, message = self.state.waiting.get(name, ("", ""))
        if reason != "ErrImagePull":
            return False
        image = c.get("image")
        self.state.waiting[name] = (
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

    @staticmethod
    def _restart_wanted(policy: str, run: ContainerRun) -> bool:
        return policy == "Always" or (policy == "OnFailure" and run.exit_code != 0)

    def _all_done(self) -> bool:
        if self.state.next_start:
            return False
        return all(
            self.state.runs.get(c["name"]) and not self.state.runs[c["name"]][-1].running
            for c in self.spec["containers"]
        )

    def _terminate(self) -> None:
        """Stop for deletion or deadline; report the terminal status; delete when asked."""
        if self.gone.is_set():
            self.containers.kill_all(0)
            return
        if self._past_deadline() and not self.deletion_requested():
            self.containers.kill_all(self._grace())
            self.state.phase = "Failed"
            self.state.reason = "DeadlineExceeded"
            self.state.message = "Pod was active on the node longer than the specified deadline"
            self.state.waiting.clear()
            self.state.next_start.clear()
            self._report()
            return self._await_deletion()
        self.containers.kill_all(self._grace())
        self.state.waiting.clear()
        self.state.next_start.clear()
        if compute_phase(self.state, self.spec) not in ("Succeeded", "Failed"):
            # Stopped before its containers ended by themselves: the kubelet reports Failed.
            self.state.phase = "Failed"
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
        final_delete(self.agent.api, self.namespace, self.pod_name, self.uid)

    # -- status ---------------------------------------------------------------------------

    def _report(self) -> None:
        if self.adopted:
            return
        self.state.phase = compute_phase(self.state, self.spec)
        status, comparable = pod_status(self.state, self.pod, now())
        if comparable == self._last_status:
            return
        updated = write_status(self.agent.api, self.pod, status)
        if updated is None:
            return
        self._last_status = comparable
        with self.lock:
            # The watch may have delivered a newer pod while this write was on its way (a
            # deletion, most importantly): an older answer must not hide it.
            if resource_version(updated) >= resource_version(self.pod):
                self.pod = updated
                self.sources.pod = updated

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.agent.event(self.pod, kind, reason, message)
