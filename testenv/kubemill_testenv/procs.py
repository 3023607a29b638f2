"""Child processes that cannot outlive the harness.

Three layers make sure nothing is left behind, whatever way the harness ends:

* every child runs in its own process group (``start_new_session``), so stopping it reaches the
  grandchildren it spawned too;
* every child is started through ``setpriv --pdeathsig KILL``, so the kernel kills it when the
  thread that started it dies, even if the harness itself is killed with SIGKILL and no Python
  code runs (``preexec_fn`` would do the same but is unsafe in a threaded parent);
* an ``atexit`` hook and SIGTERM/SIGINT/SIGHUP handlers stop whatever is still registered when the
  interpreter exits normally or is interrupted.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

_lock = threading.Lock()
_live: dict[int, Managed] = {}
_hooks_installed = False


class Managed:
    """One supervised child: its Popen, its name (for messages) and its log file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path | None) -> None:
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM the whole process group, SIGKILL it after ``grace`` seconds."""
        try:
            if self.popen.poll() is None:
                _signal_group(self.popen.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=grace)
            # The leader may be gone while children it left in the group still run.
            _signal_group(self.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=5)
        finally:
            with _lock:
                _live.pop(self.popen.pid, None)
        return self.popen.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    pass_fds: Sequence[int] = (),
) -> Managed:
    """Start ``argv`` supervised; output goes to ``log_path`` unless streams are given."""
    install_exit_hooks()
    log_file: IO[bytes] | None = None
    if log_path is not None and stdout is None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = log_path.open("ab")
        stdout = log_file
        stderr = subprocess.STDOUT
    try:
        popen = subprocess.Popen(
            ["setpriv", "--pdeathsig", "KILL", "--", *argv],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    finally:
        if log_file is not None:
            log_file.close()
    managed = Managed(name, popen, log_path)
    with _lock:
        _live[popen.pid] = managed
    return managed


def stop_all(grace: float = 10.0) -> None:
    """Stop every registered child, newest first (dependents before what they depend on)."""
    with _lock:
        children = sorted(_live.values(), key=lambda m: m.pid, reverse=True)
    for child in children:
        child.stop(grace)


def install_exit_hooks() -> None:
    """Stop children at interpreter exit and on SIGTERM/SIGINT/SIGHUP (once per process)."""
    global _hooks_installed
    with _lock:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(stop_all, 5.0)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        signal.signal(sig, _make_handler(sig, previous))


def _make_handler(sig: signal.Signals, previous: Any) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop_all(5.0)
        if callable(previous):
            previous(signum, frame)
            return
        # Die of the same signal, so the parent sees how we ended.
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)

    return handler


def wait_until(
    predicate: Any,
    timeout: float,
    what: str,
    interval: float = 0.05,
    check: Managed | None = None,
) -> None:
    """Poll ``predicate`` until true; fail early with its log if ``check`` dies meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if check is not None and not check.alive():
            raise RuntimeError(
                f"{check.name} exited with {check.popen.returncode} while waiting for {what}:\n"
                f"{check.log_tail()}"
            )
        if time.monotonic() > deadline:
            tail = f":\n{check.log_tail()}" if check is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)
