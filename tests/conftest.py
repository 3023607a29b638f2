"""Fixtures shared by every tier: a real S3 server, buckets, and running the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kubemill_testenv.s3server import WRITER_KEY, S3Server, start_s3

NOTEBOOKS = Path(__file__).parent / "notebooks"
KUBEMILL = str(Path(sys.executable).with_name("kubemill"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


def s3_client(server: S3Server, key: tuple[str, str] | None = None) -> Any:
    import boto3

    access, secret = key or (server.access_key, server.secret_key)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


@pytest.fixture
def s3_admin(s3_server: S3Server) -> Any:
    return s3_client(s3_server)


@pytest.fixture
def bucket(s3_admin: Any) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    """Environment for the runner: the least-privileged writer identity, not the admin."""
    env = s3_server.env()
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = WRITER_KEY
    return env


def runner_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without AWS or kubemill settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "KUBEMILL_")) and k != "PYTEST_CURRENT_TEST"
    }
    # Never the host's /dev/termination-log (the node agent creates it as a mount point).
    env["KUBEMILL_TERMINATION_MESSAGE_PATH"] = os.devnull
    env.update(extra or {})
    return env


def kubemill(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    stdin: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `kubemill` command, as a user would."""
    return subprocess.run(
        [KUBEMILL, *args],
        env=runner_env(env),
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


# --- parameter values that Kubernetes or Linux would change or refuse on the way in ----------

#: Every printable ASCII character, what Kubernetes expands in args and env ($(VAR), $$),
#: backslashes, quotes, newlines and non-ASCII text.
TRICKY_TEXT = (
    "price $$5, path $(HOME), run $(KUBEMILL_RUN_NAME) $ $( $$$ \\ \\$(HOME) \"q\" 'q'\n\t"
    + "".join(chr(c) for c in range(32, 127))
    + " é ∑ 😀"
)


def parameter_digest(value: Any) -> str:
    """What parameters_digest.ipynb records for a value: a digest, since results reach the
    run's status through a 4 KiB termination message."""
    import hashlib
    import json

    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def large_parameters(total_bytes: int) -> dict[str, Any]:
    """A list of about 170 KB (over Linux's 128 KiB per argument) and a mapping that brings
    the parameters' JSON to about `total_bytes`, with multibyte characters throughout."""
    items = [f"item {i:06d} é {TRICKY_TEXT[:20]}" for i in range(4_400)]
    blob: dict[str, str] = {}
    size = len(str(items).encode())
    index = 0
    while size < total_bytes:
        value = f"{index} ∑😀 " + "x" * 990
        blob[f"key_{index:05d}"] = value
        size += len(value.encode()) + 16
        index += 1
    return {"text": TRICKY_TEXT, "items": items, "blob": blob}
