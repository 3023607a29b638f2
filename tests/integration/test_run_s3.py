"""`kubemill run` against real S3 (SeaweedFS) and HTTP, secrets, and parity with papermill."""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubemill_testenv.s3server import READER_KEY, S3Server
from tests.conftest import KUBEMILL, NOTEBOOKS, kubemill, runner_env
from tests.integration.helpers import (
    load,
    serve_folder,
    start,
    stdout_text,
    stop,
    wait_for_line,
)

pytestmark = pytest.mark.integration


def _get(client: Any, bucket: str, key: str) -> Any:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_run_folder_in_s3(
    s3_admin: Any, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    s3_admin.upload_file(str(NOTEBOOKS / "params.ipynb"), bucket, "in/params.ipynb")
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        [
            "run",
            f"s3://{bucket}/in/params.ipynb",
            f"s3://{bucket}/runs/r1/",
            "-y",
            "alpha: 0.25\nregion: apac\n",
            "--termination-message-path",
            str(summary_file),
        ],
        env={
            **s3_env,
            "KUBEMILL_VIEWER_URL": "https://nb.example/",
            "KUBEMILL_VIEWER_ROOT": f"s3://{bucket}/runs/",
        },
    )
    assert result.returncode == 0, result.stderr
    # Told of a viewer serving the output, the log and the summary name its page.
    assert "read it at https://nb.example/view/r1/output.ipynb" in result.stderr
    assert load(summary_file)["viewerUrl"] == "https://nb.example/view/r1/output.ipynb"
    nb = _get(s3_admin, bucket, "runs/r1/output.ipynb")
    assert nb["metadata"]["kubemill"]["results"] == {"alpha": 0.25, "region": "apac", "n": 3}
    assert _get(s3_admin, bucket, "runs/r1/results.json") == {
        "alpha": 0.25,
        "region": "apac",
        "n": 3,
    }
    lineage = _get(s3_admin, bucket, "runs/r1/run.json")
    head = s3_admin.head_object(Bucket=bucket, Key="in/params.ipynb")
    assert lineage["input"]["etag"] == head["ETag"].strip('"')
    types = {
        key: s3_admin.head_object(Bucket=bucket, Key=f"runs/r1/{key}")["ContentType"]
        for key in ("output.ipynb", "results.json", "run.json")
    }
    assert types == {
        "output.ipynb": "application/x-ipynb+json",
        "results.json": "application/json",
        "run.json": "application/json",
    }
    assert load(summary_file)["outputUrl"] == f"s3://{bucket}/runs/r1/output.ipynb"
    printed = kubemill(["results", f"s3://{bucket}/runs/r1/", "--json"], env=s3_env)
    assert json.loads(printed.stdout)["region"] == "apac"
    inspected = kubemill(["inspect", f"s3://{bucket}/in/params.ipynb", "--json"], env=s3_env)
    assert [p["name"] for p in json.loads(inspected.stdout)][:2] == ["alpha", "region"]


def test_large_output_goes_up_in_parts(
    s3_admin: Any, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    notebook = tmp_path / "big.ipynb"
    nb = load(NOTEBOOKS / "values.ipynb")
    nb["cells"][1]["source"] = "print('x' * (12 * 1024 * 1024))"
    notebook.write_text(json.dumps(nb))
    result = kubemill(["run", str(notebook), f"s3://{bucket}/big/out.ipynb"], env=s3_env)
    assert result.returncode == 0, result.stderr[-2000:]
    head = s3_admin.head_object(Bucket=bucket, Key="big/out.ipynb")
    assert head["ContentLength"] > 12 * 1024 * 1024
    assert "-" in head["ETag"], "a multipart upload has an ETag ending in -<parts>"


@pytest.mark.parametrize(
    ("target", "key", "message"),
    [
        (
            "s3://no-such-bucket-kubemill/out.ipynb",
            None,
            "bucket 'no-such-bucket-kubemill' does not exist",
        ),
        ("s3://BUCKET/out.ipynb", READER_KEY, "access denied"),
    ],
)
def test_s3_write_failures_are_storage_errors(
    s3_server: S3Server,
    bucket: str,
    s3_env: dict[str, str],
    tmp_path: Path,
    target: str,
    key: tuple[str, str] | None,
    message: str,
) -> None:
    env = dict(s3_env)
    if key:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = key
    summary_file = tmp_path / "summary.json"
    result = kubemill(
        [
            "run",
            str(NOTEBOOKS / "params.ipynb"),
            target.replace("BUCKET", bucket),
            "--termination-message-path",
            str(summary_file),
        ],
        env=env,
    )
    assert result.returncode == 14, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    summary = load(summary_file)
    assert summary["reason"] == "StorageError" and message in summary["failure"]["message"]
    assert summary["outputUrl"] is None


def test_unreachable_endpoint(tmp_path: Path, s3_env: dict[str, str]) -> None:
    env = dict(s3_env, AWS_ENDPOINT_URL="http://127.0.0.1:9")  # the discard port: refused
    result = kubemill(["run", "s3://anything/in.ipynb", str(tmp_path / "o.ipynb")], env=env)
    assert result.returncode == 14, result.stderr
    assert "the S3 endpoint is unreachable" in result.stderr


def test_missing_s3_input_is_bad_input(bucket: str, s3_env: dict[str, str], tmp_path: Path) -> None:
    result = kubemill(["run", f"s3://{bucket}/nope.ipynb", str(tmp_path / "o.ipynb")], env=s3_env)
    assert result.returncode == 2
    assert f"s3://{bucket}/nope.ipynb does not exist" in result.stderr


def test_checkpoint_is_visible_in_s3_while_a_cell_runs(
    s3_admin: Any, bucket: str, s3_env: dict[str, str]
) -> None:
    process = start(
        [
            "run",
            str(NOTEBOOKS / "sleep.ipynb"),
            f"s3://{bucket}/live/",
            "--checkpoint-interval",
            "0.5",
        ],
        env=s3_env,
    )
    assert process.stdout is not None
    try:
        wait_for_line(process.stdout, "started sleeping", timeout=60)
        deadline = time.monotonic() + 30
        checkpoint: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                checkpoint = _get(s3_admin, bucket, "live/output.ipynb")
            except s3_admin.exceptions.NoSuchKey:
                checkpoint = {}
            if "started sleeping" in stdout_text(checkpoint):
                break
            time.sleep(0.2)  # polling S3 for an object; there is no event to wait on
        assert process.poll() is None, "the run ended before the checkpoint was checked"
        assert "started sleeping" in stdout_text(checkpoint)
        assert checkpoint["metadata"]["kubemill"]["status"] == "Running"
        assert "still in progress" in checkpoint["cells"][0]["source"]
    finally:
        code, _, stderr = stop(process)
    assert code == 15, stderr
    final = _get(s3_admin, bucket, "live/output.ipynb")
    assert "Execution failed: Terminated" in final["cells"][0]["source"]
    assert final["metadata"]["kubemill"]["status"] == "Failed"


CANARY = 'canary-7f3a"9c1e\\SECRET'  # a quote and a backslash: escaped spellings differ
SPELLINGS = {CANARY, repr(CANARY)[1:-1], json.dumps(CANARY)[1:-1]}


@pytest.mark.parametrize("via", ["flag", "environment"])
def test_secret_canary_is_in_no_artifact(
    s3_admin: Any, bucket: str, s3_env: dict[str, str], tmp_path: Path, via: str
) -> None:
    env = dict(s3_env, KM_TOKEN=CANARY)
    args = ["run", str(NOTEBOOKS / "secret.ipynb"), f"s3://{bucket}/secret/", "--log-format"]
    args += ["json" if via == "flag" else "text"]
    args += ["--termination-message-path", str(tmp_path / "summary.json")]
    if via == "flag":
        args += ["--secret-param", "token=KM_TOKEN"]
    else:
        env["KUBEMILL_SECRET_PARAMS"] = "token=KM_TOKEN"
    result = kubemill(args, env=env)
    assert result.returncode == 10, result.stderr  # the last cell fails, quoting the token
    summary = load(tmp_path / "summary.json")
    assert summary["outputUrl"] == f"s3://{bucket}/secret/output.ipynb", summary
    # The kernel really had the value: its length was recorded.
    assert summary["results"]["token_length"] == len(CANARY)
    assert summary["results"]["echo"] == "prefix-***"
    everything = [result.stdout, result.stderr, (tmp_path / "summary.json").read_text()]
    for item in s3_admin.list_objects_v2(Bucket=bucket)["Contents"]:
        everything.append(
            s3_admin.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
        )
    assert len(everything) == 6  # stdout, stderr, summary, output.ipynb, results.json, run.json
    for text in everything:
        for spelling in SPELLINGS:
            assert spelling not in text
        assert base64.b64encode(CANARY.encode()).decode() not in text
    nb = _get(s3_admin, bucket, "secret/output.ipynb")
    printed = stdout_text(nb)
    assert "the token is ***" in printed
    assert "\n***\n" in printed  # printed one character at a time, still masked
    assert "{'token': '***'}" in printed
    assert "bad token '***'" in summary["failure"]["evalue"]
    assert summary["results"]["***"] == "the name is the secret"
    assert _get(s3_admin, bucket, "secret/run.json")["secretParameters"] == {
        "token": {"fromEnv": "KM_TOKEN"}
    }


@pytest.fixture
def http_notebooks() -> Iterator[str]:
    with serve_folder(NOTEBOOKS) as url:
        yield url


def test_http_input(http_notebooks: str, tmp_path: Path) -> None:
    result = kubemill(["run", f"{http_notebooks}/params.ipynb", str(tmp_path / "o.ipynb")])
    assert result.returncode == 0, result.stderr
    missing = kubemill(["run", f"{http_notebooks}/missing.ipynb", str(tmp_path / "o.ipynb")])
    assert missing.returncode == 2 and "does not exist (HTTP 404)" in missing.stderr


VALUES: list[Any] = [
    None,
    True,
    -7,
    2**64,
    0.1,
    math.nan,
    math.inf,
    -math.inf,
    'it\'s "quoted"\nwith a newline, a tab\t and unicode: ß 日本 🚀',
    "",
    [1, [2, [3, None]], {"a": "b"}],
    {"nested": {"list": [1.5, False], "empty": {}}, "unicode key ü": "v"},
]


def _repr_from_notebook(path: Path) -> tuple[str, str]:
    recorded = {}
    for cell in load(path)["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("application/vnd.kubemill.record+json")
            if data:
                recorded[data["name"]] = data["value"]
    return recorded["repr"], recorded["type"]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_reach_the_kernel_unchanged_and_match_papermill(value: Any, tmp_path: Path) -> None:
    """The same value, passed as papermill users pass it, arrives identically in both tools."""
    as_yaml = yaml.safe_dump({"value": value}, allow_unicode=True, sort_keys=False)
    ours = kubemill(
        ["run", str(NOTEBOOKS / "values.ipynb"), str(tmp_path / "k.ipynb"), "-y", as_yaml]
    )
    assert ours.returncode == 0, ours.stderr
    papermill = shutil.which("papermill", path=str(Path(KUBEMILL).parent))
    assert papermill
    theirs = subprocess.run(
        [
            papermill,
            str(NOTEBOOKS / "values.ipynb"),
            str(tmp_path / "p.ipynb"),
            "-y",
            as_yaml,
            "--no-progress-bar",
        ],
        capture_output=True,
        text=True,
        env=runner_env(),
        check=False,
    )
    assert theirs.returncode == 0, theirs.stderr
    expected = (repr(value), type(value).__name__)
    assert _repr_from_notebook(tmp_path / "k.ipynb") == expected
    assert _repr_from_notebook(tmp_path / "p.ipynb") == expected
