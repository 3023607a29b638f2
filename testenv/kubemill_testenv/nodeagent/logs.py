"""Container logs: written in the CRI log format, served like the kubelet's ``/containerLogs``.

The API server answers ``kubectl logs`` by calling the node's kubelet endpoint (the node's
InternalIP and ``daemonEndpoints.kubeletEndpoint.Port``) with its kubelet client certificate;
this server accepts only clients whose certificate the cluster CA signed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlparse

log = logging.getLogger("kubemill.nodeagent.logs")

Entry = tuple[str, str, str]


@dataclass(frozen=True)
class LogFile:
    path: Path
    # While true, a follow request keeps waiting for more output.
    running: Callable[[], bool]
    # Notified by the pumps on every write and when a stream ends.
    written: threading.Condition


# (namespace, pod, container, previous) -> the log, or an (HTTP status, message) error.
Locator = Callable[[str, str, str, bool], LogFile | tuple[int, str]]


def now_nano() -> str:
    t = time.time_ns()
    secs, nanos = divmod(t, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse_time(value: str) -> float:
    if "." in value:
        # Python's parser stops at microseconds; the CRI format has nanoseconds.
        head, frac = value.rstrip("Z").split(".", 1)
        value = f"{head}.{frac[:6]}Z"
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pump(pipe: IO[bytes], stream: str, path: Path, written: threading.Condition) -> None:
    """Copy one output stream into the container log, a timestamped line at a time, and wake
    whoever follows the log."""
    with path.open("ab") as out:
        for line in iter(pipe.readline, b""):
            tag = b"F" if line.endswith(b"\n") else b"P"
            body = line if tag == b"F" else line + b"\n"
            with written:
                out.write(f"{now_nano()} {stream} ".encode() + tag + b" " + body)
                out.flush()
                written.notify_all()
    pipe.close()
    with written:
        written.notify_all()


def read_log(path: Path, offset: int = 0) -> list[Entry]:
    """(timestamp, stream, text) per line from byte ``offset``; a partial line has no newline."""
    out = []
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        f.seek(offset)
        for raw in f:
            ts, stream, tag, text = raw.decode(errors="replace").split(" ", 3)
            if tag == "P":
                text = text[:-1]
            out.append((ts, stream, text))
    return out


class LogHandler(BaseHTTPRequestHandler):
    locate: Locator

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("log server: " + format, *args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            return self._reply(200, "ok")
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self._reply(404, "not found")
        _, namespace, pod, container = parts
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        found = type(self).locate(namespace, pod, container, query.get("previous") == "true")
        if isinstance(found, tuple):
            return self._reply(*found)
        since = None
        if "sinceSeconds" in query:
            since = time.time() - int(query["sinceSeconds"])
        elif "sinceTime" in query:
            since = parse_time(query["sinceTime"])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._stream(
                found,
                follow=query.get("follow") == "true",
                timestamps=query.get("timestamps") == "true",
                tail=int(query["tailLines"]) if "tailLines" in query else None,
                limit=int(query["limitBytes"]) if "limitBytes" in query else None,
                since=since,
            )

    def _stream(
        self,
        source: LogFile,
        *,
        follow: bool,
        timestamps: bool,
        tail: int | None,
        limit: int | None,
        since: float | None,
    ) -> None:
        sent = 0

        def emit(entries: list[Entry]) -> bool:
            nonlocal sent
            for ts, _, text in entries:
                if since is not None and parse_time(ts) < since:
                    continue
                line = (f"{ts} {text}" if timestamps else text).encode()
                if limit is not None:
                    line = line[: max(0, limit - sent)]
                self.wfile.write(line)
                sent += len(line)
                if limit is not None and sent >= limit:
                    return False
            self.wfile.flush()
            return True

        offset = source.path.stat().st_size if source.path.exists() else 0
        entries = read_log(source.path)
        if tail is not None:
            entries = entries[-tail:] if tail > 0 else []
        if not emit(entries) or not follow:
            return
        while True:
            with source.written:
                done = not source.running()
                size = source.path.stat().st_size
                if size == offset and not done:
                    # Writes happen under this lock, so none can slip in before the wait.
                    # The bound only lets the loop notice a container that ended quietly.
                    source.written.wait(timeout=1.0)
                    continue
            if size > offset:
                more = read_log(source.path, offset)
                offset = size
                if not emit(more):
                    return
            else:
                return

    def _reply(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve_logs(
    port: int, cert: Path, key: Path, client_ca: Path, locate: Locator
) -> ThreadingHTTPServer:
    handler = type("BoundLogHandler", (LogHandler,), {"locate": staticmethod(locate)})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    # Only the API server (its kubelet client certificate, signed by the cluster CA) may read.
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(str(client_ca))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name="log-server", daemon=True).start()
    return server
