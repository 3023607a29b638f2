"""The runs index over what the real runner writes, and over a real S3 server (SeaweedFS).

The unit tests build run.json from `kubemill_testenv.runfolders`; here the runner writes it, so
a field the runner renames or moves shows up as a failure of `parse_run`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubemill.runner.contract import ENV_RUN_IDENTITY
from kubemill.runner.storage import make_s3_client
from kubemill.viewer.runindex import Objects, RunFilter, RunIndex, Sort
from kubemill.viewer.runindex_sources import Listed, LocalObjects, S3Objects
from kubemill.viewer.runrecord import STATUS_RUNNING
from kubemill_testenv.runfolders import folder_of, run_files, synthetic_run, write_s3
from kubemill_testenv.s3server import S3Server
from tests.conftest import KUBEMILL, NOTEBOOKS, runner_env
from tests.integration.helpers import stop, wait_for_line

pytestmark = pytest.mark.integration

SECRET = "hunter2-very-secret"


class CountingObjects:
    """Any `Objects`, with every read counted by path: what a refresh really fetched."""

    def __init__(self, inner: Objects) -> None:
        self.inner = inner
        self.reads: Counter[str] = Counter()
        self._lock = threading.Lock()

    def walk(self, prefix: str = "") -> Iterator[Any]:
        return self.inner.walk(prefix)

    def read(self, path: str) -> bytes:
        with self._lock:
            self.reads[path] += 1
        return self.inner.read(path)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folders the real runner wrote, side by side: a scheduled success, a workflow step
    that failed, a run with a secret parameter (its last cell fails on purpose), and one that
    ended early with sys.exit(0)."""
    root = tmp_path_factory.mktemp("runs")
    identity = {
        ENV_RUN_IDENTITY["run"]: "daily-7",
        ENV_RUN_IDENTITY["namespace"]: "analytics",
        ENV_RUN_IDENTITY["schedule"]: "daily",
        ENV_RUN_IDENTITY["job"]: "daily-7-x1",
    }
    step = {
        ENV_RUN_IDENTITY["run"]: "etl-extract",
        ENV_RUN_IDENTITY["namespace"]: "ml",
        ENV_RUN_IDENTITY["workflow"]: "etl",
        ENV_RUN_IDENTITY["step"]: "extract",
    }
    runs = [
        (
            ["params.ipynb", "analytics/daily-7/", "-p", "alpha", "0.5", "-p", "region", "apac"],
            identity,
            0,
        ),
        (["fails.ipynb", "ml/etl-extract/"], step, 10),
        (["secret.ipynb", "ops/secret/", "--secret-param", "token=TOKEN"], {"TOKEN": SECRET}, 10),
        (["sysexit0.ipynb", "ops/early/"], {}, 0),
    ]
    processes = [
        (
            subprocess.Popen(
                [KUBEMILL, "run", str(NOTEBOOKS / args[0]), f"{root}/{args[1]}", *args[2:]],
                env=runner_env(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            ),
            code,
        )
        for args, env, code in runs
    ]
    ended = [
        (process.communicate(timeout=180)[1], process.returncode, code)
        for process, code in processes
    ]
    for stderr, returncode, code in ended:
        assert returncode == code, stderr.decode()
    return root


def test_records_of_real_runs(real_runs: Path, tmp_path: Path) -> None:
    index = RunIndex(tmp_path)
    stats = index.rebuild(LocalObjects(real_runs))
    assert (stats.runs, stats.read, stats.unreadable) == (4, 4, 0)

    ok = index.get("analytics/daily-7")
    assert ok is not None and not ok.notes
    assert (ok.name, ok.namespace, ok.schedule, ok.status) == (
        "daily-7",
        "analytics",
        "daily",
        "Succeeded",
    )
    assert ok.parameters == {"alpha": 0.5, "region": "apac"}
    assert ok.results == {"alpha": 0.5, "region": "apac", "n": 3}
    assert ok.start and ok.end and ok.duration and ok.end > ok.start
    assert ok.detail["inputUri"].endswith("params.ipynb") and len(ok.detail["inputSha256"]) == 64
    assert ok.detail["job"] == "daily-7-x1" and ok.output == "analytics/daily-7/output.ipynb"

    failed = index.get("ml/etl-extract")
    assert failed is not None and not failed.notes
    assert (failed.workflow, failed.step, failed.status, failed.reason) == (
        "etl",
        "extract",
        "Failed",
        "CellError",
    )
    assert failed.message and "KeyError" in failed.message
    assert (
        failed.detail["failure"]["ename"] == "KeyError"
        and "traceback" not in failed.detail["failure"]
    )

    secret = index.get("ops/secret")
    assert secret is not None and secret.secret_parameters == ("token",)
    assert SECRET not in repr(secret)
    for path in tmp_path.iterdir():  # nor anywhere in the index's files
        assert SECRET.encode() not in path.read_bytes()

    early = index.get("ops/early")
    assert early is not None and early.status == "Succeeded" and "cell" in early.detail["earlyExit"]

    assert [r.folder for r in index.query(RunFilter(text="apac")).runs] == ["analytics/daily-7"]
    assert [r.folder for r in index.query(RunFilter(text="token")).runs] == ["ops/secret"]
    assert {r.folder for r in index.query(RunFilter(workflows=frozenset({"etl"}))).runs} == {
        "ml/etl-extract"
    }
    index.close()


def test_a_run_being_written_shows_as_running_until_its_run_json_lands(tmp_path: Path) -> None:
    root = tmp_path / "store"
    process = subprocess.Popen(
        [
            KUBEMILL,
            "run",
            str(NOTEBOOKS / "sleep.ipynb"),
            f"{root}/ns/sleeper/",
            "-p",
            "seconds",
            "60",
            "--checkpoint-interval",
            "0.2",
        ],
        env=runner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        wait_for_line(process.stdout, "started sleeping", timeout=120)
        output = root / "ns/sleeper/output.ipynb"
        deadline = time.monotonic() + 30
        while not output.exists():  # the first checkpoint after the cell's first output
            assert time.monotonic() < deadline, "no checkpoint within 30 s"
            time.sleep(0.05)
        objects = CountingObjects(LocalObjects(root))
        index = RunIndex(tmp_path / "index")
        index.rebuild(objects)
        (running,) = index.query().runs
        assert (running.folder, running.status) == ("ns/sleeper", STATUS_RUNNING)
        assert not objects.reads  # the checkpoint is not read
        code, _, _ = stop(process)
        assert code == 15
        stats = index.refresh(objects)
        assert (stats.read, stats.updated) == (1, 1)
        (ended,) = index.query().runs
        assert (ended.status, ended.reason) == ("Failed", "Terminated")
        index.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _upload(client: Any, bucket: str, prefix: str, root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            client.put_object(
                Bucket=bucket,
                Key=prefix + path.relative_to(root).as_posix(),
                Body=path.read_bytes(),
            )


def test_rebuild_and_refresh_over_s3(
    s3_server: S3Server,
    s3_admin: Any,
    bucket: str,
    real_runs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = "results/"
    write_s3(s3_admin, bucket, prefix, range(300), workers=16)
    _upload(s3_admin, bucket, prefix, real_runs)
    s3_admin.put_object(Bucket=bucket, Key="elsewhere/x/run.json", Body=b"{}")  # outside
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    client = make_s3_client(s3_server.endpoint_url, "us-east-1", connections=16)
    objects = CountingObjects(S3Objects(client, f"s3://{bucket}/{prefix}"))
    index = RunIndex(tmp_path, workers=16)

    stats = index.rebuild(objects)
    assert (stats.runs, stats.read, stats.added, stats.unreadable) == (304, 304, 304, 0)
    assert stats.keys == 304 * 3
    assert set(objects.reads) == {f"{folder_of(i)}/run.json" for i in range(300)} | {
        f"{folder}/run.json"
        for folder in ("analytics/daily-7", "ml/etl-extract", "ops/secret", "ops/early")
    }
    page = index.query(RunFilter(namespaces=frozenset({"ml"})), Sort.NAME, limit=10)
    assert page.total == 61 and [r.name for r in page.runs][:2] == ["etl-extract", "run-000001"]
    apac = {folder_of(i) for i in range(300) if synthetic_run(i)["parameters"]["region"] == "apac"}
    assert {r.folder for r in index.query(RunFilter(text="apac"), limit=500).runs} == apac | {
        "analytics/daily-7"
    }

    # A new run, a changed run, a deleted run: only the first two are read.
    objects.reads.clear()
    write_s3(s3_admin, bucket, prefix, [300])
    changed = synthetic_run(10)
    changed["parameters"]["region"] = "antarctica"
    for path, data in run_files(10, changed).items():
        s3_admin.put_object(Bucket=bucket, Key=prefix + path, Body=data)
    for path in run_files(20):
        s3_admin.delete_object(Bucket=bucket, Key=prefix + path)
    s3_admin.put_object(Bucket=bucket, Key=prefix + "ml/live/output.ipynb", Body=b"{}")
    stats = index.refresh(objects)
    assert set(objects.reads) == {f"{folder_of(300)}/run.json", f"{folder_of(10)}/run.json"}
    assert (stats.read, stats.added, stats.updated, stats.removed) == (2, 2, 1, 1)
    assert [r.folder for r in index.query(RunFilter(text="antarctica")).runs] == [folder_of(10)]
    assert index.get(folder_of(20)) is None
    assert index.get("ml/live").status == STATUS_RUNNING  # type: ignore[union-attr]
    assert index.query().total == 305

    objects.reads.clear()
    assert index.refresh(objects).read == 0 and not objects.reads
    index.close()


def test_listed_objects_of_both_sources_agree(
    s3_server: S3Server,
    s3_admin: Any,
    bucket: str,
    real_runs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _upload(s3_admin, bucket, "p/", real_runs)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    s3 = S3Objects(make_s3_client(s3_server.endpoint_url), f"s3://{bucket}/p")
    local = LocalObjects(real_runs)
    listed = {item.path: item for item in s3.walk()}
    assert set(listed) == {item.path for item in local.walk()}
    assert all(isinstance(item, Listed) and item.etag and item.size for item in listed.values())
    key = "ops/secret/run.json"
    assert s3.read(key) == local.read(key)
    for objects in (s3, local):
        with pytest.raises(KeyError):
            objects.read("ops/secret/none.json")
