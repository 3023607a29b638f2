"""Helpers for integration tests that drive the real `kubemill` process."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tests.conftest import KUBEMILL, runner_env


def start(args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [KUBEMILL, *args], env=runner_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_for_line(stream: IO[bytes], needle: str, timeout: float) -> list[str]:
    """Read lines from a process pipe until one contains `needle`; returns the lines read."""
    seen: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                break
            line = stream.readline().decode(errors="replace")
            if not line:
                break
            seen.append(line)
            if needle in line:
                return seen
    finally:
        selector.close()
    raise AssertionError(f"{needle!r} did not appear within {timeout}s; saw: {seen!r}")


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> tuple[int, float, str]:
    """Send `signum`, wait for exit; returns the exit code, the seconds it took and stderr."""
    began = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, time.monotonic() - began, stderr.decode(errors="replace")


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def code_cells(nb: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in nb.get("cells", []) if c["cell_type"] == "code"]


def stdout_text(nb: Mapping[str, Any]) -> str:
    return "".join(
        o.get("text", "")
        for c in code_cells(nb)
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve `folder` over HTTP on a free loopback port; yields its base URL (no trailing /)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
