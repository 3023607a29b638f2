"""The processes of a container run: ``runc run`` started from one long-lived thread, its output
pumped into the CRI log, its start confirmed by the poststart hook, its stop (containerd's
TERM, grace, KILL) and its end recorded with exit code, reason and termination message."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .. import runtime
from ..kube import JSON
from .logs import pump, read_log
from .model import (
    FALLBACK_LOG_BYTES,
    FALLBACK_LOG_LINES,
    MAX_TERMINATION_MESSAGE,
    ContainerRun,
    now,
)


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


def start_runc(spawner: Spawner, runc: runtime.Runc, run: ContainerRun, spec: JSON) -> bool:
    """Run the container of ``run`` (its root file system already mounted) under runc, pumping
    its output into the run's log; True once the poststart hook says it runs. A run that runc
    could not start is left with runc ended and nothing running: the caller reaps it."""
    bundle = run.dir / "bundle"
    fifo_read, fifo_write = runtime.make_start_fifo(run.dir / "started.fifo")
    (bundle / "config.json").write_text(json.dumps(spec, indent=1))
    argv = runc.run_argv(run.runc_id, bundle, run.dir / "runc.log")

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
        run.popen = spawner.run(spawn)
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
    if not started and popen.poll() is None:
        # The hook never came: treat it as a failed start, and make sure nothing runs.
        runc.kill(run.runc_id, "KILL", all_processes=True)
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # runc itself is stuck before a container exists to kill: end runc.
            popen.kill()
            popen.wait()
    return started


def reap(
    runc: runtime.Runc, run: ContainerRun, container: JSON | None, *, start_failed: bool = False
) -> bool:
    """Record the run's end if runc has exited; True when it just did. ``container`` is the
    container's spec (its termination message policy), None if the pod no longer names it."""
    assert run.popen is not None
    rc = run.popen.poll()
    if rc is None:
        return False
    if run.probes is not None:
        run.probes.stop()
    for t in run.readers:
        t.join(timeout=5)
    runc.delete(run.runc_id)
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
    run.message = termination_message(run, container)
    return True


def termination_message(run: ContainerRun, container: JSON | None) -> str | None:
    message = ""
    if run.termination_log is not None and run.termination_log.exists():
        message = run.termination_log.read_bytes()[:MAX_TERMINATION_MESSAGE].decode(
            errors="replace"
        )
    policy = container.get("terminationMessagePolicy", "File") if container else "File"
    if not message and policy == "FallbackToLogsOnError" and run.exit_code != 0:
        lines = [line for _, _, line in read_log(run.log_path)]
        tail = "".join(lines[-FALLBACK_LOG_LINES:]).encode()[-FALLBACK_LOG_BYTES:]
        message = tail.decode(errors="replace")
    return message or None


def stop(
    runc: runtime.Runc,
    runs: list[ContainerRun],
    grace: int,
    reaped: Callable[[ContainerRun], object] | None,
) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL to every process: containerd's stop.

    ``reaped`` records each run's end; a probe's kill runs on its own thread without it, since
    the pod worker records that exit, so a run is never reaped twice."""
    for r in runs:
        r.killing = True
        runc.kill(r.runc_id, "TERM")
    deadline = time.monotonic() + grace
    for r in runs:
        assert r.popen is not None
        remaining = max(0.0, deadline - time.monotonic())
        with contextlib.suppress(subprocess.TimeoutExpired):
            r.popen.wait(timeout=remaining)
    for r in runs:
        assert r.popen is not None
        if r.popen.poll() is None:
            runc.kill(r.runc_id, "KILL", all_processes=True)
            try:
                r.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # runc itself is stuck: its container is killed by the delete below.
                r.popen.kill()
                r.popen.wait()
        if reaped is not None:
            reaped(r)
