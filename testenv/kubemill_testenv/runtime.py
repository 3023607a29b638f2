"""The node agent's container runtime: runc 1.1 driven the way containerd's shim drives it.

* Root file systems: an overlay per container run (lower = the image's shared, read-only
  ``rootfs``, upper/work in the run's own directory), mounted at ``<bundle>/rootfs`` and
  unmounted after the run; ``readOnlyRootFilesystem`` sets ``root.readonly`` on that overlay, so
  the mount points runc creates before it remounts the root read-only land in the upper layer and
  the image store is never written.
* ``runc run`` in the foreground as the agent's child: its exit status is the container's (a
  signal death is 128+signal). A ``poststart`` hook writes to a FIFO the agent waits on. runc
  1.1 runs it on the host once ``runc start`` has released the container's init, which is in
  the container's cgroup and namespaces and has already checked that the executable exists, a
  moment before it execs it (opencontainers/runc#4347): "Running" is a fact of the runtime, not
  a guess, and a missing executable is a StartError that never looked Running.
* OOM kills: runc destroys the cgroup on exit, so ``memory.oom_control`` is gone by the time the
  exit is seen; the kernel's own record in ``/dev/kmsg`` (``oom-kill:...,oom_memcg=<path>,
  task_memcg=<path>``, what cadvisor's oomparser reads) is written before the victim is killed,
  so scanning it when a run ends with SIGKILL is race-free.
* No orphans: a watchdog process, started in its own session, holds the read end of a pipe whose
  write end only the agent has. When the agent dies, however it dies, the watchdog sees EOF and
  kills and deletes every container under the agent's runc root, kills whatever is left in the
  agent's cgroup subtree and unmounts its overlays.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RUNC = "/usr/sbin/runc"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# How long runc may take from `run` to the poststart hook before the start counts as failed.
# Longer than the hook's own timeout (ocispec.HOOK_TIMEOUT), so runc gives up on a stuck hook first
# and reports why.
START_TIMEOUT = 75.0
CGROUP_ROOT = "/sys/fs/cgroup"

_OOM_RECORD = re.compile(r"oom-kill:.*?oom_memcg=([^,]*),task_memcg=([^,]*),")


class StartError(Exception):
    """runc could not start the container process (containerd's StartError, exit code 128)."""


def runc_env() -> dict[str, str]:
    return {"PATH": SYSTEM_PATH}


@dataclass
class Runc:
    """runc with one state directory (``--root``) per agent."""

    root: Path

    def _cmd(self, *args: str) -> list[str]:
        return [RUNC, "--root", str(self.root), *args]

    def _call(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self._cmd(*args), capture_output=True, timeout=timeout, env=runc_env(), check=False
        )

    def run_argv(self, container_id: str, bundle: Path, log: Path) -> list[str]:
        return [
            RUNC, "--root", str(self.root), "--log", str(log), "--log-format", "json",
            "run", "--bundle", str(bundle), container_id,
        ]  # fmt: skip

    def kill(self, container_id: str, signal: str, *, all_processes: bool = False) -> None:
        self._call("kill", *(["--all"] if all_processes else []), container_id, signal)

    def delete(self, container_id: str) -> None:
        self._call("delete", "--force", container_id)

    def containers(self) -> list[str]:
        result = self._call("list", "--quiet")
        return result.stdout.decode().split() if result.returncode == 0 else []

    def exec(
        self, container_id: str, user: str, argv: list[str], timeout: float
    ) -> tuple[int, str]:
        """Run ``argv`` in the container (an exec probe): exit code and combined output; on a
        timeout the exec'd process is killed and TimeoutError raised (a failure, as the kubelet
        counts it)."""
        proc = subprocess.Popen(
            self._cmd("exec", "--user", user, container_id, *argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=runc_env(),
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.communicate()
            # ContainerProbes words a timeout as the kubelet does.
            raise TimeoutError(f"command timed out after {timeout:g}s") from None
        return proc.returncode, out.decode(errors="replace")

    def clean_all(self) -> None:
        """Kill and delete every container left under this root (an agent that died)."""
        for container_id in self.containers():
            self.kill(container_id, "KILL", all_processes=True)
            self.delete(container_id)


# -- root file systems ---------------------------------------------------------------------------


def mount_overlay(lower: Path, run_dir: Path, target: Path) -> None:
    upper, work = run_dir / "upper", run_dir / "work"
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
        capture_output=True,
        env=runc_env(),
        check=False,
    )
    if result.returncode != 0:
        raise StartError(f"overlay mount failed: {result.stderr.decode(errors='replace').strip()}")


def unmount(target: Path) -> None:
    if os.path.ismount(target):
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def mounts_under(prefix: Path) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(f"{prefix}/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


# -- start and exit ------------------------------------------------------------------------------


def make_start_fifo(path: Path) -> tuple[int, int]:
    """A FIFO for the poststart hook, with the agent holding both ends: the write end keeps a
    read from seeing EOF before the hook has written."""
    os.mkfifo(path, 0o600)
    read_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    write_fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    return read_fd, write_fd


def poststart_hook(fifo: Path) -> tuple[str, ...]:
    return ("/bin/sh", "sh", "-c", 'echo started >"$0"', str(fifo))


def await_start(fifo_fd: int, exited: Callable[[], bool], timeout: float = START_TIMEOUT) -> bool:
    """True once the hook reported the process started; False if runc exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fifo_fd], [], [], 0.05)
        if ready:
            with contextlib.suppress(BlockingIOError):
                if os.read(fifo_fd, 64):
                    return True
        if exited():
            # The hook may have fired just before a very short-lived process ended.
            with contextlib.suppress(BlockingIOError):
                return bool(os.read(fifo_fd, 64))
            return False
    return False


def runc_error(log: Path) -> str:
    """runc's last error message from its JSON log (what containerd reports for StartError)."""
    message = ""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    return message or "runc exited before the container process started"


def oom_killed(cgroup: str) -> bool:
    """Whether the kernel logged an OOM kill in ``cgroup`` (a memcg path, as in cgroupsPath)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False
            except OSError as e:
                if e.errno == errno.EPIPE:
                    # Records were overwritten while reading: continue with the next one.
                    continue
                return False
            if not record:
                return False
            m = _OOM_RECORD.search(record.decode(errors="replace"))
            if m and cgroup in (m.group(1), m.group(2)):
                return True
    finally:
        os.close(fd)


def remove_cgroups(subtree: str) -> None:
    """Remove ``subtree`` (empty by now: its containers have ended) in every v1 hierarchy,
    deepest first; runc removes only the cgroups it created, not their parents."""
    for controller in os.listdir(CGROUP_ROOT):
        base = os.path.join(CGROUP_ROOT, controller, subtree.lstrip("/"))
        for folder, _, _ in sorted(os.walk(base), key=lambda w: len(w[0]), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


# -- watchdog ------------------------------------------------------------------------------------

_WATCHDOG = r"""
import os, select, signal, subprocess, sys
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
runc, root, subtree, workdir = sys.argv[1:5]
while os.read(0, 4096):
    pass
env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
def call(*args):
    subprocess.run([runc, "--root", root, *args], capture_output=True, env=env, timeout=30)
listed = subprocess.run([runc, "--root", root, "list", "-q"], capture_output=True, env=env)
ids = listed.stdout.decode().split()
for cid in ids:
    call("kill", "--all", cid, "KILL")
for _ in range(50):
    pids = set()
    for ctl in os.listdir("/sys/fs/cgroup"):
        base = os.path.join("/sys/fs/cgroup", ctl, subtree.lstrip("/"))
        for d, _, files in os.walk(base):
            if "cgroup.procs" in files:
                try:
                    text = open(os.path.join(d, "cgroup.procs")).read()
                    pids.update(int(p) for p in text.split())
                except OSError:
                    pass
    if not pids:
        break
    # Wait on each victim's pidfd for its exit (not a fixed sleep), then look again for any
    # process forked meanwhile; a process that cannot be waited on has already gone.
    fds = []
    for pid in pids:
        try:
            fds.append(os.pidfd_open(pid))
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for fd in fds:
        select.select([fd], [], [], 1.0)
        os.close(fd)
for cid in ids:
    call("delete", "--force", cid)
points = []
for line in open("/proc/self/mountinfo"):
    p = line.split()[4].replace("\\040", " ")
    if p.startswith(workdir.rstrip("/") + "/"):
        points.append(p)
for p in sorted(points, key=len, reverse=True):
    subprocess.run(["umount", "-l", p], capture_output=True, env=env)
for ctl in os.listdir("/sys/fs/cgroup"):
    base = os.path.join("/sys/fs/cgroup", ctl, subtree.lstrip("/"))
    for d, _, _ in sorted(os.walk(base), key=lambda w: len(w[0]), reverse=True):
        try:
            os.rmdir(d)
        except OSError:
            pass
"""


def start_watchdog(
    runc: Runc, cgroup_subtree: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the watchdog; return the pipe's write end, which the agent holds until it dies.

    Its own session, so a signal to the agent's process group does not stop it before its
    cleanup; it ignores SIGTERM/SIGINT/SIGHUP and exits right after cleaning up."""
    read_fd, write_fd = os.pipe()
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-c", _WATCHDOG, RUNC, str(runc.root), cgroup_subtree,
         str(workdir)],
        stdin=read_fd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=runc_env(),
    )  # fmt: skip
    os.close(read_fd)
    return watchdog, write_fd
