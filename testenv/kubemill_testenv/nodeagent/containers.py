"""The containers of one pod: each run started from its image (root file system, OCI spec,
runc, probes), its end recorded, and the runs stopped, by probe failure, deletion or deadline."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .. import ocispec, runtime
from ..kube import JSON
from ..podconfig import ContainerConfigError, PodSources, find_container
from ..probes import ContainerProbes
from . import spawning
from .model import ContainerRun, PodState, now
from .volumes import container_spec

if TYPE_CHECKING:
    from .agent import NodeAgent


class PodContainers:
    """The runs of one pod's containers: each started from its image under runc, reaped, and
    stopped. Used by the pod's worker thread, and by a probe's kill thread (``stop`` only)."""

    def __init__(
        self,
        agent: NodeAgent,
        state: PodState,
        *,
        pod_dir: Path,
        uid: str,
        pod_name: str,
        sources: PodSources,
        spec: Callable[[], JSON],
        grace: Callable[[], int],
        event: Callable[[str, str, str], None],
        probe_changed: Callable[[], None],
    ) -> None:
        self.agent = agent
        self.state = state
        self.pod_dir = pod_dir
        self.uid = uid
        self.pod_name = pod_name
        self.sources = sources
        # The pod's spec as last seen (the worker replaces the pod on every update).
        self.spec = spec
        # The pod's termination grace period, for a probe's kill that names none.
        self.grace = grace
        self.event = event
        self.probe_changed = probe_changed

    def start(self, c: JSON, *, is_init: bool) -> ContainerRun:
        """Start one run of ``c`` under runc; return once its process runs (or failed to start).

        Raises ``ImagePullError`` for an image not in the store and ``ContainerConfigError`` for
        a spec the kubelet would refuse (both leave the container waiting); a run that runc
        could not start is returned terminated with StartError and exit code 128."""
        name = c["name"]
        image = self.agent.image(str(c.get("image", "")))
        runs = self.state.runs.setdefault(name, [])
        restart = len(runs)
        cdir = self.pod_dir / "containers" / name / str(restart)
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
            spec = container_spec(
                c,
                image,
                run,
                pod_spec=self.spec(),
                pod_name=self.pod_name,
                pod_dir=self.pod_dir,
                sources=self.sources,
                seccomp_profile=self.agent.seccomp_profile,
            )
        except ContainerConfigError as e:
            if is_init:
                self.state.waiting[name] = ("CreateContainerConfigError", str(e))
            raise
        runs.append(run)
        try:
            self.agent.prepare_rootfs(image, run)
        except runtime.StartError as e:
            run.started_at = run.finished_at = now()
            run.exit_code, run.reason, run.message = 128, "StartError", str(e)
            self.event("Warning", "Failed", f"Error: {e}")
            return run
        if not spawning.start_runc(self.agent.spawner, self.agent.runc, run, spec):
            self.reap(run, start_failed=True)
            self.event("Warning", "Failed", f"Error: {run.message}")
            return run
        self.event("Normal", "Started", f"Started container {name}")
        run.probes = ContainerProbes(
            c,
            pod_ip="127.0.0.1",
            exec_probe=lambda argv, timeout: self.agent.runc.exec(runc_id, run.user, argv, timeout),
            on_change=self.probe_changed,
            on_event=self.event,
        )
        run.probes.start()
        return run

    def reap(self, run: ContainerRun, *, start_failed: bool = False) -> bool:
        """Record the run's end if runc has exited; True when it just did."""
        container = self._container(run.name)
        return spawning.reap(self.agent.runc, run, container, start_failed=start_failed)

    def _container(self, name: str) -> JSON | None:
        return find_container(self.spec(), name)

    def kill_all(self, grace: int) -> None:
        running = [r for runs in self.state.runs.values() for r in runs if r.running]
        self._kill(running, grace)
        self.state.killed = self.state.killed or bool(running)

    def _kill(self, runs: list[ContainerRun], grace: int, *, reap: bool = True) -> None:
        """Stop ``runs`` (``spawning.stop``). A probe's kill runs on its own thread with
        ``reap=False``: the pod worker records the exit, so a run is never reaped twice."""
        spawning.stop(self.agent.runc, runs, grace, self.reap if reap else None)

    def kill_if_probe_failed(self, run: ContainerRun) -> None:
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
            args=([run], grace if grace is not None else self.grace()),
            kwargs={"reap": False},
            name=f"kill-{run.runc_id[:12]}",
            daemon=True,
        ).start()

    def log_run(self, container: str, previous: bool) -> ContainerRun | None:
        runs = self.state.runs.get(container, [])
        if previous:
            return runs[-2] if len(runs) > 1 else None
        return runs[-1] if runs else None
