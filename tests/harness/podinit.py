"""First process of a container started by the node agent: sets up its mounts, then execs.

The agent runs this file (standard library only, by path, in isolated mode) as PID 1 of a new
PID and mount namespace made by ``unshare --mount --pid --fork --kill-child --mount-proc``:

1. take ``O_PATH`` handles on every mount source first, so hiding ``/root`` below cannot hide them;
2. (the agent has already created mount points missing on the host; see ``MountPoints``)
3. for a non-root user, replace ``/root`` (mode 0700 on the host) by a tmpfs holding only the
   toolchain directories, the way an image exposes its interpreter to any user;
4. with ``readOnlyRootFilesystem``, remount every host mount read-only (``/proc``, ``/sys`` and
   ``/dev`` stay as a runtime leaves them);
5. bind every volume and the termination-message file at its path, read-only where asked;
6. drop to ``runAsUser``/``runAsGroup``, change to ``workingDir`` and exec the command.

Being PID 1 of its own PID namespace means that when the container's main process ends, or the
agent dies (``--kill-child`` and the parent-death signal re-armed after the uid change), the
kernel kills every process the container started: no orphan survives its pod.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    rc = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} -> {target}: {os.strerror(err)}")


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.append(line.split()[4].replace("\\040", " "))
    return points


_error_fd = -1


def _fail(message: str) -> None:
    # The agent reads this pipe to report the container as not started (reason StartError). A
    # pipe, not a file: an open writable file would make the read-only remount fail with EBUSY.
    os.write(_error_fd, message.encode())
    os._exit(128)


def _bind(fd: int, target: str, read_only: bool) -> None:
    source = f"/proc/self/fd/{fd}"
    _mount(source, target, None, MS_BIND | MS_REC)
    # A bind mount copies the flags of the mount its source lives on, which may already be the
    # read-only root: set the volume's own access explicitly either way.
    _mount(None, target, None, MS_REMOUNT | MS_BIND | (MS_RDONLY if read_only else 0))


def setup_and_exec(spec: dict[str, Any], hostname: str | None) -> None:
    if hostname:
        # The pod's own UTS namespace, so the container sees its pod name as its hostname.
        name = hostname.encode()
        if _libc.sethostname(name, len(name)) != 0:
            raise OSError(ctypes.get_errno(), "sethostname")
    mounts: list[dict[str, Any]] = spec["mounts"]
    keep: list[str] = spec.get("keepUnderPrivateHome", [])
    handles = [os.open(m["source"], os.O_PATH) for m in mounts]
    keep_handles = [(p, os.open(p, os.O_PATH)) for p in keep if os.path.exists(p)]

    uid = spec.get("uid")
    if uid not in (None, 0) and spec.get("privateHome"):
        home = spec["privateHome"]
        _mount("tmpfs", home, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        for path, fd in keep_handles:
            os.makedirs(path, exist_ok=True)
            _bind(fd, path, read_only=True)

    if spec.get("readOnlyRoot"):
        for point in _mount_points():
            if point.startswith(("/proc", "/sys", "/dev")):
                continue
            try:
                _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            except OSError:
                # Mounts stacked on the same point: the top one is what processes see.
                continue

    for m, fd in zip(mounts, handles, strict=True):
        _bind(fd, m["target"], bool(m.get("readOnly")))
        os.close(fd)
    for _, fd in keep_handles:
        os.close(fd)

    gid = spec.get("gid")
    groups: list[int] = spec.get("supplementalGroups", [])
    if uid is not None or gid is not None:
        os.setgroups(groups)
        if gid is not None:
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
    # A change of credentials clears the parent-death signal; without it an agent killed with
    # SIGKILL would leave this namespace running.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    working_dir = spec.get("workingDir") or "/"
    try:
        # A runtime creates a missing working directory, typically inside a volume.
        os.makedirs(working_dir, exist_ok=True)
        os.chdir(working_dir)
    except OSError as e:
        _fail(f"cannot change to workingDir {spec.get('workingDir')}: {e.strerror}")
    # Tells the agent that setup is done and the command starts now; an exec error follows it.
    os.write(_error_fd, b"\0")
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        _fail(f'exec: "{argv[0]}": {e.strerror}')


def main() -> None:
    global _error_fd
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    _error_fd = int(spec["errorFd"])
    # Close-on-exec: the container never inherits it, and the agent sees EOF once exec succeeded.
    os.set_inheritable(_error_fd, False)
    try:
        setup_and_exec(spec, sys.argv[2] if len(sys.argv) > 2 else None)
    except OSError as e:
        _fail(f"container setup failed: {e}")


if __name__ == "__main__":
    main()
