"""`kubemill view` as a user runs it: a real process serving a real S3 prefix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kubemill_testenv.s3server import S3Server
from tests.conftest import kubemill
from tests.integration.helpers import start
from tests.integration.test_viewer import notebook_bytes

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def await_healthy(url: str, process: Any, timeout: float = 60) -> None:
    """Poll healthz until it answers; fail early if the process has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1].decode()
        try:
            if fetch(url + "healthz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url}healthz did not answer within {timeout}s")


def test_kubemill_view_serves_an_s3_prefix_and_stops_on_ctrl_c(
    s3_server: S3Server, s3_admin: Any, bucket: str, tmp_path: Path
) -> None:
    s3_admin.put_object(
        Bucket=bucket, Key="runs/ns/r é/output.ipynb", Body=notebook_bytes("from the cli")
    )
    env = s3_server.env()
    env["AWS_ACCESS_KEY_ID"] = s3_server.reader_access_key
    env["AWS_SECRET_ACCESS_KEY"] = s3_server.reader_secret_key
    port = free_port()
    process = start(
        [
            "view",
            f"s3://{bucket}/runs/",
            "--port",
            str(port),
            "--base-path",
            "/km/",
            "--no-browser",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--index-dir",
            str(tmp_path / "index"),
            "--refresh-seconds",
            "0.5",
        ],
        env,
    )
    try:
        base = f"http://127.0.0.1:{port}/km/"
        await_healthy(base, process)
        status, page = fetch(base + "tree/ns/r%20%C3%A9/")
        assert status == 200
        assert 'href="/km/view/ns/r%20%C3%A9/output.ipynb"' in page
        status, page = fetch(base + "view/ns/r%20%C3%A9/output.ipynb")
        assert status == 200
        assert "from the cli" in page
        assert fetch(base + "tree/missing/")[0] == 404
        # The runs index is built in --index-dir; the folder's notebook, without run.json yet,
        # is a run in progress.
        deadline = time.monotonic() + 30
        while (answer := fetch(base + "api/runs"))[0] != 200:
            assert answer[0] == 503, answer
            assert time.monotonic() < deadline, answer
            time.sleep(0.05)
        assert (tmp_path / "index" / "runs.db").is_symlink()
        status, page = fetch(base + "runs")
        assert status == 200
        assert 'href="/km/view/ns/r%20%C3%A9/output.ipynb">r é</a>' in page
        assert "Running" in page
    finally:
        began = time.monotonic()
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = process.communicate(timeout=60)
        seconds = time.monotonic() - began
    stdout, stderr = out.decode(), err.decode()
    assert process.returncode == 0, stderr
    assert f"serving s3://{bucket}/runs/ at {base}" in stdout
    assert "stopped" in stderr
    assert seconds < 10
    assert list((tmp_path / "cache").rglob("*.page")), "the page was cached on disk"


def test_kubemill_view_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    result = kubemill(["view", str(tmp_path), "--host", "0.0.0.0", "--no-browser"])
    assert result.returncode == 2
    assert "without authentication" in result.stderr
    assert "127.0.0.1" in result.stderr
    assert "--auth proxy|token" in result.stderr


def test_kubemill_viewer_refuses_to_serve_every_address_without_authentication(
    tmp_path: Path,
) -> None:
    """The in-cluster entry point listens on 0.0.0.0 by default: only with a mode."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "KUBEMILL_VIEWER_ROOT": str(tmp_path),
        "KUBEMILL_VIEWER_CACHE_DIR": str(tmp_path / "cache"),
    }
    viewer = Path(sys.executable).parent / "kubemill-viewer"
    result = subprocess.run([str(viewer)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "kubemill-viewer: error: refusing to serve on 0.0.0.0 without authentication" in (
        result.stderr
    )
    result = subprocess.run(
        [str(viewer)],
        env={**env, "KUBEMILL_VIEWER_AUTH": "proxy"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "needs the proxy's addresses" in result.stderr


def test_kubemill_view_refuses_a_proxy_mode_without_the_proxys_address(tmp_path: Path) -> None:
    result = kubemill(["view", str(tmp_path), "--host", "0.0.0.0", "--auth", "proxy"])
    assert result.returncode == 2
    assert "needs the proxy's addresses" in result.stderr


def test_kubemill_view_refuses_a_refresh_interval_of_zero(tmp_path: Path) -> None:
    result = kubemill(["view", str(tmp_path), "--refresh-seconds", "0", "--no-browser"])
    assert result.returncode == 2
    assert "--refresh-seconds 0.0 must be more than 0" in result.stderr


def test_kubemill_view_says_when_the_bucket_is_missing(s3_server: S3Server) -> None:
    env = s3_server.env()
    result = kubemill(["view", "s3://no-such-bucket-here/", "--no-browser"], env=env, timeout=60)
    assert result.returncode == 14, result.stderr
    assert "no-such-bucket-here" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_kubemill_view_says_when_the_folder_is_missing(tmp_path: Path) -> None:
    result = kubemill(["view", str(tmp_path / "nope"), "--no-browser"])
    assert result.returncode == 2
    assert "not a folder" in result.stderr
