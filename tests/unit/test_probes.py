"""Container probes against real servers and real commands on loopback; no cluster.

Time-based tests use ``periodSeconds: 1`` (the API's minimum) and wait for ``on_change`` or
event notifications, never for a fixed time, so they are as fast as the probe schedule allows.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubemill_testenv.kube import JSON
from kubemill_testenv.probes import (
    GRPC_UNSUPPORTED,
    ContainerProbes,
    Kind,
    Outcome,
    ProbeConfigError,
    Spec,
    Tally,
    resolve_port,
    run_probe,
)

WAIT = 5.0
"""Longest wait for a notification; every awaited change is due within about 3 s."""


def exec_probe(argv: list[str], timeout: float) -> tuple[int, str]:
    """What the agent does, minus the container: run the command, combined output."""
    try:
        done = subprocess.run(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise TimeoutError(str(error)) from error
    return done.returncode, done.stdout.decode(errors="replace")


@dataclass
class Site:
    """A real HTTP server whose status per path the test sets, recording what it was sent."""

    port: int
    statuses: dict[str, int] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    hit: threading.Condition = field(default_factory=threading.Condition)

    def hits(self, path: str) -> int:
        with self.hit:
            return sum(1 for p, _ in self.requests if p == path)

    def wait_hits(self, path: str, count: int) -> None:
        with self.hit:
            assert self.hit.wait_for(
                lambda: sum(1 for p, _ in self.requests if p == path) >= count, WAIT
            ), f"{path} was requested fewer than {count} times"


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with site.hit:
                site.requests.append((self.path, dict(self.headers.items())))
                site.times.append(time.monotonic())
                site.hit.notify_all()
            status = site.statuses.get(self.path, 404)
            self.send_response(status)
            if self.path in site.locations:
                self.send_header("Location", site.locations[self.path])
            body = f"status {status}".encode()
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def site() -> Iterator[Site]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    site = Site(port=server.server_address[1])
    server.RequestHandlerClass = _handler(site)
    with serving(server):
        yield site


def closed_port() -> int:
    """A loopback port nothing listens on: bound once by us, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Recorder:
    """The agent's side: collects events and the state seen at each ``on_change``."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.events: list[tuple[str, str, str]] = []
        self.changes = 0
        self.probes: ContainerProbes | None = None

    def on_change(self) -> None:
        with self.changed:
            self.changes += 1
            self.changed.notify_all()

    def on_event(self, type_: str, reason: str, message: str) -> None:
        with self.changed:
            self.events.append((type_, reason, message))
            self.changed.notify_all()

    def run(self, container: JSON) -> ContainerProbes:
        self.probes = ContainerProbes(
            container,
            pod_ip="127.0.0.1",
            exec_probe=exec_probe,
            on_change=self.on_change,
            on_event=self.on_event,
        )
        self.probes.start()
        return self.probes

    def wait(self, predicate: Callable[[], bool], what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, WAIT), f"timed out waiting for {what}"

    def unhealthy(self, kind: str) -> list[str]:
        with self.changed:
            return [m for t, r, m in self.events if r == "Unhealthy" and m.startswith(kind)]


@pytest.fixture
def agent() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    if recorder.probes is not None:
        recorder.probes.stop()


def probe_once(probe: JSON, container: JSON | None = None) -> Outcome:
    return run_probe(
        probe, container or {"name": "web"}, pod_ip="127.0.0.1", exec_probe=exec_probe, timeout=2
    )


# --- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "published"),
    [
        ([False], [None]),
        ([False, False, False], [None, None, False]),
        ([False, False, True, False, False, False], [None, None, True, None, None, False]),
        ([True, True], [True, True]),
    ],
)
def test_tally_publishes_a_result_only_at_its_threshold(
    results: list[bool], published: list[bool | None]
) -> None:
    spec = Spec.parse(Kind.READINESS, {"failureThreshold": 3})
    tally, seen = Tally(), []
    for ok in results:
        tally, verdict = tally.add(ok, spec)
        seen.append(verdict)
    assert seen == published


def test_success_threshold_counts_for_readiness_and_is_one_for_liveness() -> None:
    readiness = Spec.parse(Kind.READINESS, {"successThreshold": 2})
    tally, first = Tally().add(True, readiness)
    _, second = tally.add(True, readiness)
    assert (first, second) == (None, True)
    assert Spec.parse(Kind.LIVENESS, {"successThreshold": 2}).success_threshold == 1


def test_defaults_are_the_api_servers() -> None:
    spec = Spec.parse(Kind.LIVENESS, {"exec": {"command": ["true"]}})
    assert (spec.initial_delay, spec.period, spec.timeout, spec.failure_threshold) == (0, 10, 1, 3)
    assert spec.termination_grace is None


@pytest.mark.parametrize(
    ("port", "expected"),
    [(8080, 8080), ("http", 8080), ("metrics", 9090), ("8081", 8081)],
)
def test_ports_resolve_by_number_name_or_numeric_string(port: int | str, expected: int) -> None:
    container = {
        "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "metrics", "containerPort": 9090},
        ]
    }
    assert resolve_port(port, container) == expected


@pytest.mark.parametrize(
    ("port", "message"), [("nope", "port nope not found"), (0, "invalid port number: 0")]
)
def test_unresolvable_ports_say_why(port: int | str, message: str) -> None:
    with pytest.raises(ProbeConfigError, match=f"^{message}$"):
        resolve_port(port, {"ports": []})


# --- one attempt against real servers and commands ----------------------------------------


def test_http_success_sends_the_kubelets_headers_and_the_users(site: Site) -> None:
    site.statuses["/healthz?full=1"] = 200
    headers = [{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "web.local"}]
    outcome = probe_once(
        {"httpGet": {"path": "/healthz?full=1", "port": "http", "httpHeaders": headers}},
        {"name": "web", "ports": [{"name": "http", "containerPort": site.port}]},
    )
    assert outcome == Outcome(True, "status 200")
    (_, sent), *_ = site.requests
    assert sent["User-Agent"] == "kube-probe/1.36"
    assert sent["Accept"] == "*/*"
    assert sent["X-Probe"] == "yes"
    assert sent["Host"] == "web.local"


def test_http_error_status_fails_without_the_body(site: Site) -> None:
    site.statuses["/healthz"] = 500
    outcome = probe_once({"httpGet": {"path": "/healthz", "port": site.port}})
    assert outcome == Outcome(False, "HTTP probe failed with statuscode: 500")


def test_http_follows_same_host_redirects_and_not_others(site: Site) -> None:
    site.statuses.update({"/old": 302, "/new": 200, "/away": 301})
    site.locations.update({"/old": "/new", "/away": "http://example.invalid/"})
    assert probe_once({"httpGet": {"path": "/old", "port": site.port}}).ok
    assert site.hits("/new") == 1
    away = probe_once({"httpGet": {"path": "/away", "port": site.port}})
    assert away == Outcome(True, "Probe terminated redirects, Response body: status 301", True)


def test_http_redirect_loop_stops_after_ten(site: Site) -> None:
    site.statuses["/loop"] = 307
    site.locations["/loop"] = "/loop"
    outcome = probe_once({"httpGet": {"path": "/loop", "port": site.port}})
    assert outcome == Outcome(
        False, f'Get "http://127.0.0.1:{site.port}/loop": stopped after 10 redirects'
    )
    assert site.hits("/loop") == 11


def test_http_refused_reads_like_the_kubelet() -> None:
    port = closed_port()
    outcome = probe_once({"httpGet": {"path": "/healthz", "port": port}})
    assert outcome == Outcome(
        False,
        f'Get "http://127.0.0.1:{port}/healthz": '
        f"dial tcp 127.0.0.1:{port}: connect: connection refused",
    )


def test_https_does_not_verify_the_certificate(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI to make a self-signed certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=elsewhere"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    site = Site(port=server.server_address[1], statuses={"/": 200})
    server.RequestHandlerClass = _handler(site)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        outcome = probe_once({"httpGet": {"port": site.port, "scheme": "HTTPS"}})
        plain = probe_once({"httpGet": {"port": site.port}})
    assert outcome == Outcome(True, "status 200")
    assert not plain.ok  # a plain request to a TLS port: the scheme really is honoured


def test_tcp_connects_or_reports_refusal() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        assert probe_once({"tcpSocket": {"port": listener.getsockname()[1]}}) == Outcome(True, "")
    port = closed_port()
    assert probe_once({"tcpSocket": {"port": port}}) == Outcome(
        False, f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    )


@pytest.mark.parametrize(
    ("command", "outcome"),
    [
        (["sh", "-c", "echo fine"], Outcome(True, "fine\n")),
        (["sh", "-c", "echo broken >&2; exit 3"], Outcome(False, "broken\n")),
        ([sys.executable, "-c", "import time; time.sleep(30)"], None),
    ],
)
def test_exec_uses_exit_code_and_output_and_times_out(
    command: list[str], outcome: Outcome | None
) -> None:
    began = time.monotonic()
    result = run_probe(
        {"exec": {"command": command}},
        {},
        pod_ip="127.0.0.1",
        exec_probe=exec_probe,
        timeout=0.5,
    )
    if outcome is None:
        assert result == Outcome(False, f'command "{" ".join(command)}" timed out')
        assert time.monotonic() - began < 3
    else:
        assert result == outcome


@pytest.mark.parametrize(
    ("probe", "message"),
    [
        ({"grpc": {"port": 9000}}, GRPC_UNSUPPORTED),
        (
            {"sleep": {"seconds": 1}, "periodSeconds": 1},
            "probe has no handler: expected one of exec, httpGet, tcpSocket, grpc, got sleep",
        ),
        ({"httpGet": {"port": "web"}}, "port web not found"),
    ],
)
def test_probes_that_cannot_run_fail_with_the_reason(probe: JSON, message: str) -> None:
    assert probe_once(probe) == Outcome(False, message)


# --- the schedule, on a real thread -------------------------------------------------------


def test_readiness_follows_thresholds_both_ways(site: Site, agent: Recorder) -> None:
    site.statuses["/ready"] = 200
    probes = agent.run(
        {
            "name": "web",
            "ports": [{"name": "http", "containerPort": site.port}],
            "readinessProbe": {
                "httpGet": {"path": "/ready", "port": "http"},
                "periodSeconds": 1,
                "failureThreshold": 1,
                "successThreshold": 2,
            },
        }
    )
    assert probes.started and not probes.ready
    site.wait_hits("/ready", 1)
    assert not probes.ready, "one success is below successThreshold 2"
    agent.wait(lambda: probes.ready, "ready")
    assert site.hits("/ready") == 2

    site.statuses["/ready"] = 503
    agent.wait(lambda: not probes.ready, "not ready")
    assert agent.unhealthy("Readiness") == [
        "Readiness probe failed: HTTP probe failed with statuscode: 503"
    ]
    site.statuses["/ready"] = 200
    agent.wait(lambda: probes.ready, "ready again")
    assert probes.kill_reason is None


def test_liveness_failing_three_times_kills_and_stops_probing(site: Site, agent: Recorder) -> None:
    site.statuses["/live"] = 500
    probes = agent.run(
        {
            "name": "web",
            "livenessProbe": {
                "httpGet": {"path": "/live", "port": site.port},
                "periodSeconds": 1,
                "terminationGracePeriodSeconds": 7,
            },
        }
    )
    assert probes.ready, "no readiness probe: ready as soon as started"
    agent.wait(lambda: probes.kill_reason is not None, "the kill")
    assert probes.kill_reason == "Container web failed liveness probe, will be restarted"
    assert probes.kill_grace == 7
    assert agent.events == [
        *[("Warning", "Unhealthy", "Liveness probe failed: HTTP probe failed with statuscode: 500")]
        * 3,
        ("Normal", "Killing", "Container web failed liveness probe, will be restarted"),
    ]
    # Not stopped by the agent: the thread ends by itself, as the kubelet puts a failed
    # liveness worker on hold, so no more probes or events come while the kill takes its grace.
    for thread in threading.enumerate():
        if thread.name == "probes-web":
            thread.join(WAIT)
            assert not thread.is_alive()
    assert site.hits("/live") == 3
    gaps = [later - earlier for earlier, later in zip(site.times, site.times[1:], strict=False)]
    assert all(gap > 0.9 for gap in gaps), f"periodSeconds 1 not kept: {gaps}"


def test_startup_gates_liveness_and_readiness(site: Site, agent: Recorder, tmp_path: Path) -> None:
    flag = tmp_path / "started"
    site.statuses.update({"/live": 200, "/ready": 200})
    probes = agent.run(
        {
            "name": "web",
            "startupProbe": {
                "exec": {"command": ["test", "-e", str(flag)]},
                "periodSeconds": 1,
                "failureThreshold": 30,
            },
            "livenessProbe": {"httpGet": {"path": "/live", "port": site.port}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": site.port}},
        }
    )
    assert not probes.started and not probes.ready
    agent.wait(lambda: len(agent.unhealthy("Startup")) >= 2, "two failed startup probes")
    assert site.requests == []
    assert not probes.started
    flag.touch()
    agent.wait(lambda: probes.started, "started")
    site.wait_hits("/live", 1)
    agent.wait(lambda: probes.ready, "ready")
    assert agent.unhealthy("Startup") == ["Startup probe failed: "] * len(
        agent.unhealthy("Startup")
    ), "test(1) prints nothing"


def test_startup_failure_kills_with_its_own_reason(agent: Recorder) -> None:
    port = closed_port()
    probes = agent.run(
        {"name": "db", "startupProbe": {"tcpSocket": {"port": port}, "failureThreshold": 1}}
    )
    agent.wait(lambda: probes.kill_reason is not None, "the kill")
    assert probes.kill_reason == "Container db failed startup probe, will be restarted"
    assert probes.kill_grace is None
    assert not probes.started
    assert agent.events[0] == (
        "Warning",
        "Unhealthy",
        f"Startup probe failed: dial tcp 127.0.0.1:{port}: connect: connection refused",
    )


@pytest.mark.parametrize("delay", [0, 10])
def test_stop_is_prompt_while_waiting_a_long_period(
    site: Site, agent: Recorder, delay: int
) -> None:
    site.statuses["/ready"] = 200
    probes = agent.run(
        {
            "name": "web",
            "readinessProbe": {
                "httpGet": {"path": "/ready", "port": site.port},
                "periodSeconds": 10,
                "initialDelaySeconds": delay,
            },
        }
    )
    if delay == 0:
        agent.wait(lambda: probes.ready, "ready")
    began = time.monotonic()
    probes.stop()
    assert time.monotonic() - began < 1
    assert site.hits("/ready") == (1 if delay == 0 else 0)


def test_without_probes_a_container_is_started_and_ready_at_once(agent: Recorder) -> None:
    probes = agent.run({"name": "web"})
    assert (probes.started, probes.ready, probes.kill_reason, probes.kill_grace) == (
        True,
        True,
        None,
        None,
    )
    probes.stop()
    assert agent.changes == 0
