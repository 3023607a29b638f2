"""A local sandbox: control plane, node agent and S3, left running for kubectl and an S3 client.

``up`` starts a detached supervisor (``serve``) and returns once everything answers; ``down``
asks the supervisor to stop, which stops every process it started. The supervisor's children die
with it even if it is killed (see ``procs``), so ``down`` never leaves anything behind.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from . import procs
from .cluster import NoImagesError, images_path, start_local_cluster
from .controlplane import REPO_ROOT

DEFAULT_DIR = (
    Path(os.environ.get("KUBEMILL_CACHE", Path.home() / ".cache" / "kubemill")) / "sandbox"
)


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_file(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def serve(state_dir: Path, ready_fd: int | None = None) -> None:
    """Run everything in this process's care until SIGTERM; write a line to `ready_fd` once
    the state file is in place, so `up` waits on that instead of polling for the file."""
    from .s3server import start_s3

    procs.install_exit_hooks()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Each start gets a new CA and new signing keys, so old etcd data would hold dead tokens.
    shutil.rmtree(state_dir / "cluster", ignore_errors=True)
    cluster = start_local_cluster(state_dir / "cluster")
    try:
        s3 = start_s3(state_dir / "s3")
    except BaseException:
        cluster.stop()
        raise
    try:
        state = {
            "pid": os.getpid(),
            "origin": _origin(),
            "kubeconfig": str(cluster.kubeconfig),
            "kubectl": str(cluster.kubectl_path),
            "startup_seconds": round(cluster.startup_seconds, 1),
            "s3": {
                # s3server starts weed without a parent-death signal, so `down` must be
                # able to stop it itself if this supervisor was killed.
                "pid": s3.process.pid,
                "endpoint_url": s3.endpoint_url,
                "access_key": s3.access_key,
                "secret_key": s3.secret_key,
            },
        }
        tmp = _state_file(state_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(_state_file(state_dir))
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        while not stop.wait(1.0):
            if not cluster.agent.alive() or any(
                not p.alive() for p in cluster.control_plane.processes
            ):
                print("sandbox: a component exited; stopping everything", file=sys.stderr)
                break
    finally:
        _state_file(state_dir).unlink(missing_ok=True)
        s3.stop()
        cluster.stop()


def _stop_leftover_s3(state: dict[str, Any]) -> None:
    pid = state.get("s3", {}).get("pid")
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pid), signal.SIGKILL)


def _origin() -> dict[str, str]:
    """What a running sandbox was started from: the checkout (whose harness code it runs) and
    the image index with its content (which images its node agent runs)."""
    images = images_path()
    return {
        "checkout": str(REPO_ROOT),
        "images": str(images),
        "imagesDigest": hashlib.sha256(images.read_bytes()).hexdigest(),
    }


def up(state_dir: Path, timeout: float) -> int:
    try:
        # Before any process starts: without images the node agent cannot run a single pod.
        wanted = _origin()
    except NoImagesError as e:
        print(f"sandbox: {e}", file=sys.stderr)
        return 1
    state = _read_state(state_dir)
    if state is not None and _alive(int(state["pid"])):
        if state.get("origin") == wanted:
            print_instructions(state)
            return 0
        # The sandbox is shared by every clone on the machine (one cache), but its node agent
        # runs the images one checkout built: keeping it would run another clone's code, or
        # this clone's code from before `make images` rebuilt it.
        started = (state.get("origin") or {}).get("checkout")
        why = (
            "this checkout's images were rebuilt since it started"
            if started == wanted["checkout"]
            else f"it was started from {started or 'an older kubemill'}"
        )
        print(f"sandbox: restarting it for {REPO_ROOT}: {why}", file=sys.stderr)
        down(state_dir, timeout)
        state = None
    if state is not None:
        _stop_leftover_s3(state)
    state_dir.mkdir(parents=True, exist_ok=True)
    _state_file(state_dir).unlink(missing_ok=True)
    log = (state_dir / "sandbox.log").open("ab")
    ready, ready_w = os.pipe()
    supervisor = subprocess.Popen(
        [
            # -P: not the working directory first, where a checkout's operator/ shadows the
            # standard library's module.
            sys.executable, "-P", "-m", "kubemill_testenv.sandbox",
            "serve", "--dir", str(state_dir), "--ready-fd", str(ready_w),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        pass_fds=(ready_w,),
        # Its own session: it must outlive this command and the terminal that ran it.
        start_new_session=True,
    )  # fmt: skip
    log.close()
    os.close(ready_w)
    try:
        # A line means ready; end of file means the supervisor died first.
        answered, _, _ = select.select([ready], [], [], timeout)
        line = os.read(ready, 64) if answered else None
    finally:
        os.close(ready)
    state = _read_state(state_dir)
    if line is None:
        os.killpg(supervisor.pid, signal.SIGTERM)
        print(f"sandbox: not ready after {timeout:.0f}s", file=sys.stderr)
        return 1
    if not line or state is None:
        supervisor.wait(timeout=30)
        tail = (state_dir / "sandbox.log").read_text(errors="replace")[-3000:]
        print(f"sandbox: failed to start:\n{tail}", file=sys.stderr)
        return 1
    print_instructions(state)
    return 0


def _exited_within(pid: int, timeout: float) -> bool:
    """Wait for `pid` (not our child) to exit, on a pidfd rather than by polling."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        answered, _, _ = select.select([pidfd], [], [], timeout)
        return bool(answered)
    finally:
        os.close(pidfd)


def down(state_dir: Path, timeout: float) -> int:
    state = _read_state(state_dir)
    if state is None:
        print("sandbox: not running")
        return 0
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _exited_within(pid, timeout):
        # Its children carry a parent-death signal, so killing it takes them along.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    _stop_leftover_s3(state)
    _state_file(state_dir).unlink(missing_ok=True)
    print("sandbox: stopped")
    return 0


def print_instructions(state: dict[str, Any]) -> None:
    s3 = state["s3"]
    kubectl_dir = str(Path(state["kubectl"]).parent)
    print(
        f"""kubemill sandbox is running (control plane ready in {state.get("startup_seconds")} s).

Kubernetes (node kubemill-node runs pods under runc from the images `make images` built;
nothing is pulled, so any other image stays in ImagePullBackOff):
  export KUBECONFIG={state["kubeconfig"]}
  export PATH={kubectl_dir}:$PATH      # kubectl of the same version
  kubectl get nodes
  kubectl apply -f crds/

S3 (SeaweedFS):
  export AWS_ENDPOINT_URL={s3["endpoint_url"]}
  export AWS_ACCESS_KEY_ID={s3["access_key"]}
  export AWS_SECRET_ACCESS_KEY={s3["secret_key"]}
  export AWS_DEFAULT_REGION=us-east-1
  python -c "import boto3; boto3.client('s3').create_bucket(Bucket='notebooks')"

Stop it with: make sandbox-down"""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="kubemill local sandbox")
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.dir, args.ready_fd)
        return
    if args.command == "up":
        sys.exit(up(args.dir, args.timeout))
    if args.command == "down":
        sys.exit(down(args.dir, args.timeout))
    state = _read_state(args.dir)
    if state is None or not _alive(int(state["pid"])):
        print("sandbox: not running")
        sys.exit(1)
    print_instructions(state)


if __name__ == "__main__":
    main()
