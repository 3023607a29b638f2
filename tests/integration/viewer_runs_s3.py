"""Run folders in a real S3 server, written by the real runner as the operator's pods write
them (input notebook in S3, identity from the environment the operator sets), and a viewer
reading them with the read-only identity: what the tests of the viewer's actions read."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubemill.viewer.settings import ViewerSettings
from kubemill_testenv.s3server import WRITER_KEY, S3Server
from tests.conftest import NOTEBOOKS, kubemill, s3_client
from tests.integration.viewer_server import LiveViewer, live_viewer

#: A parameter value that must never become markup on any page.
HOSTILE = "<script>alert(1)</script>"


@dataclass(frozen=True)
class Runs:
    bucket: str
    #: The notebooks the runs read, as the runs recorded them.
    params_uri: str
    fails_uri: str
    #: Store paths of the output notebooks (relative to the viewed prefix s3://bucket/runs/).
    first: str
    second: str
    hostile: str
    other: str


def write_runs(server: S3Server) -> Runs:
    """Four runs: params.ipynb twice with other values (their printed output differs), once
    with a hostile string, and fails.ipynb (another notebook)."""
    admin = s3_client(server)
    bucket = f"act-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket)
    for name in ("params.ipynb", "fails.ipynb"):
        admin.put_object(
            Bucket=bucket, Key=f"notebooks/{name}", Body=(NOTEBOOKS / name).read_bytes()
        )
    env = server.env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = WRITER_KEY

    def run(notebook: str, name: str, *args: str) -> str:
        identity = {"KUBEMILL_RUN_NAME": name, "KUBEMILL_POD_NAMESPACE": "team"}
        done = kubemill(
            [
                "run",
                f"s3://{bucket}/notebooks/{notebook}",
                f"s3://{bucket}/runs/team/{name}/",
                *args,
            ],
            env={**env, **identity},
            timeout=180,
        )
        assert (done.returncode == 0) == (notebook != "fails.ipynb"), done.stderr
        return f"team/{name}/output.ipynb"

    # At once: each run mostly waits for its kernel to start.
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(run, "params.ipynb", "daily-1", "-p", "alpha", "0.5", "-p", "n", "4")
        second = pool.submit(run, "params.ipynb", "daily-2", "-p", "alpha", "0.7", "-p", "n", "4")
        hostile = pool.submit(run, "params.ipynb", "hostile", "-r", "region", HOSTILE)
        other = pool.submit(run, "fails.ipynb", "other")
    return Runs(
        bucket=bucket,
        params_uri=f"s3://{bucket}/notebooks/params.ipynb",
        fails_uri=f"s3://{bucket}/notebooks/fails.ipynb",
        first=first.result(),
        second=second.result(),
        hostile=hostile.result(),
        other=other.result(),
    )


@contextmanager
def serve_runs(
    server: S3Server,
    runs: Runs,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    base_path: str = "",
) -> Iterator[LiveViewer]:
    """The viewer over s3://bucket/runs/, reading with the read-only identity."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.reader_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.reader_secret_key)
    settings = ViewerSettings(
        root=f"s3://{runs.bucket}/runs/",
        cache_dir=cache,
        s3_endpoint_url=server.endpoint_url,
        s3_region="us-east-1",
        refresh_seconds=0.2,
        port=0,
        base_path=base_path,
    )
    with live_viewer(settings) as viewer:
        yield viewer
