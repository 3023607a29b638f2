"""The runtime-image contract on a real cluster: `kubemill image check IMAGE` says, in a pod like a
run's, what an image lacks; a run in an image without kubemill fails saying how to fix the image
(not `RunnerFailed`, exit code 128). The image without kubemill is the Debian base `make images`
builds the runner on: a Python, and nothing of kubemill's.

The README's two ways of giving notebooks their libraries, as `make images` builds them from
examples/images/: FROM the runner plus pip (Dockerfile.pandas), and kubemill installed by pip
into a team's own Python environment on another path (Dockerfile.python). Each passes the check
and runs the sample notebook, which needs pandas and draws a matplotlib chart."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubemill.runner import __version__
from kubemill_testenv import kube
from tests.e2e.conftest import RUNNER_IMAGE, Cluster
from tests.e2e.test_notebookrun import create_run, s3_json, wait_run

pytestmark = pytest.mark.e2e

BARE_PYTHON = "localhost/kubemill-base:bookworm"
#: The example images (hack/images.py EXAMPLES): the runner plus pip; a team's Python plus kubemill.
FROM_RUNNER = "localhost/kubemill-example-pandas:dev"
TEAM_PYTHON = "localhost/kubemill-example-python:dev"
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "images" / "revenue_chart.ipynb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check(cluster: Cluster, namespace: str, image: str) -> subprocess.CompletedProcess[str]:
    kubemill = Path(sys.executable).parent / "kubemill"
    return subprocess.run(
        [str(kubemill), "image", "check", image, "-n", namespace,
         "--kubeconfig", str(cluster.kubeconfig), "--timeout", "120"],
        capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip


def _pods(api: client.ApiClient, namespace: str) -> list[str]:
    listed = kube.get(api, f"/api/v1/namespaces/{namespace}/pods")
    return [p["metadata"]["name"] for p in listed["items"]]


def test_image_check_names_what_a_bare_python_image_lacks(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    if not cluster.local:
        pytest.skip(f"{BARE_PYTHON} exists only on the local cluster's node")
    result = _check(cluster, namespace, BARE_PYTHON)

    print(result.stdout)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("ok: python 3.11")
    missing = [line for line in lines if line.startswith("missing: ")]
    assert [m.split(":")[1].strip().split(" (")[0] for m in missing] == [
        "the kubemill command on PATH",
        "the kubemill package in /usr",
        "the runner's modules",
        "kernel 'python3'",
    ]
    assert f"pip install 'kubemill=={__version__}'" in missing[0]
    # Run as a run is: uid 10001, /tmp its emptyDir.
    assert lines[-1] == "ok: /tmp is writable by uid 10001"
    assert _pods(api, namespace) == []


def test_image_check_passes_the_runner_image(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    result = _check(cluster, namespace, RUNNER_IMAGE)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and all(line.startswith("ok: ") for line in lines), result.stdout
    assert f"ok: kubemill {__version__}" in lines
    assert _pods(api, namespace) == []


def test_an_image_that_cannot_be_pulled_is_said_in_one_line(
    cluster: Cluster, namespace: str
) -> None:
    result = _check(cluster, namespace, "registry.invalid/nobody/none:1")

    assert result.returncode == 1
    assert result.stdout.startswith(
        "missing: a container of registry.invalid/nobody/none:1 could not start: "
    )
    assert "ErrImagePull" in result.stdout or "ImagePullBackOff" in result.stdout


def test_a_run_in_an_image_without_kubemill_fails_saying_how_to_fix_the_image(
    cluster: Cluster, api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    if not cluster.local:
        pytest.skip(f"{BARE_PYTHON} exists only on the local cluster's node")
    create_run(
        api, run_namespace, "bare", image=BARE_PYTHON,
        notebook=f"s3://{results_bucket}/notebooks/values.ipynb",
    )  # fmt: skip
    run = wait_run(api, run_namespace, "bare", "Failed", timeout=120)

    status = run["status"]
    print(status["message"])
    assert status["reason"] == "RunnerNotInImage"
    assert status["message"].startswith(f"the image {BARE_PYTHON} has no kubemill runner (")
    assert "executable file not found" in status["message"]
    assert f"pip install 'kubemill=={__version__}'" in status["message"]
    assert "kubemill image check IMAGE" in status["message"]


@pytest.fixture
def sample_notebook(s3_admin: Any, results_bucket: str) -> str:
    """The README's sample notebook, from examples/images/, where a run can read it."""
    key = f"notebooks/{SAMPLE.name}"
    s3_admin.upload_file(str(SAMPLE), results_bucket, key)
    return f"s3://{results_bucket}/{key}"


def _local_only(cluster: Cluster) -> None:
    if not cluster.local:
        pytest.skip("the example images exist only on the local cluster's node (make images)")


@pytest.mark.parametrize("image", [FROM_RUNNER, TEAM_PYTHON])
def test_image_check_passes_both_example_images(
    cluster: Cluster, api: client.ApiClient, namespace: str, image: str
) -> None:
    _local_only(cluster)
    result = _check(cluster, namespace, image)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and all(line.startswith("ok: ") for line in lines), result.stdout
    assert f"ok: kubemill {__version__}" in lines
    # Each is the environment it claims: the runner's venv, or the team's on its own path.
    prefix = "/opt/kubemill/" if image == FROM_RUNNER else "/opt/conda/"
    assert f"ok: kubemill command at {prefix}bin/kubemill" in lines, result.stdout
    assert _pods(api, namespace) == []


def _chart_pngs(notebook: dict[str, Any]) -> list[bytes]:
    return [
        base64.b64decode(output["data"]["image/png"])
        for cell in notebook["cells"]
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


@pytest.mark.parametrize("image", [FROM_RUNNER, TEAM_PYTHON])
def test_a_run_in_each_example_image_uses_pandas_and_draws_its_chart(
    cluster: Cluster,
    api: client.ApiClient,
    run_namespace: str,
    sample_notebook: str,
    s3_admin: Any,
    image: str,
) -> None:
    _local_only(cluster)
    name = "chart-" + image.split("-example-")[1].split(":")[0]
    create_run(
        api, run_namespace, name, image=image, notebook=sample_notebook,
        parameters={"orders": 120, "seed": 3},
    )  # fmt: skip
    run = wait_run(api, run_namespace, name, "Succeeded", "Failed", timeout=240)

    status = run["status"]
    assert status["phase"] == "Succeeded", status
    revenue = status["results"]["revenue_cents"]
    assert sorted(revenue) == ["apac", "eu", "us"] and all(v > 0 for v in revenue.values())
    assert 120 <= status["results"]["units"] <= 4 * 120
    output = s3_json(s3_admin, status["outputUrl"])
    printed = "".join(
        "".join(o.get("text", "")) for c in output["cells"] for o in c.get("outputs", [])
    )
    assert "pandas 2." in printed and "matplotlib 3." in printed, printed
    (png,) = _chart_pngs(output)
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_the_sample_notebook_needs_its_image(
    cluster: Cluster, api: client.ApiClient, run_namespace: str, sample_notebook: str
) -> None:
    """In the plain runner image the same notebook fails on its first import: the libraries
    come from the example images, not from the runner."""
    _local_only(cluster)
    create_run(api, run_namespace, "chart-runner", notebook=sample_notebook)
    run = wait_run(api, run_namespace, "chart-runner", "Failed", timeout=180)

    failure = run["status"]["failure"]
    assert run["status"]["reason"] == "CellError", run["status"]
    assert failure["ename"] == "ModuleNotFoundError"
    assert failure["evalue"] == "No module named 'matplotlib'"


def test_the_sales_reports_image_draws_its_chart(
    cluster: Cluster,
    api: client.ApiClient,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    """examples/sales-workflow.yaml runs its report in the image its step names (the local run
    ignores spec.image): that image exists on the node and draws the report's chart."""
    _local_only(cluster)
    examples = SAMPLE.parents[1]
    manifest = yaml.safe_load((examples / "sales-workflow.yaml").read_text())
    (step,) = [s for s in manifest["spec"]["steps"] if s["name"] == "report"]
    image = step["runTemplate"]["spec"]["image"]
    assert image == FROM_RUNNER
    s3_admin.upload_file(str(examples / "sales" / "report.ipynb"), results_bucket,
                         "notebooks/sales_report.ipynb")  # fmt: skip
    totals = [
        {"region": region, "orders": 3, "units": 7, "revenue_cents": cents,
         "refunded_cents": 0, "top_product": "tea"}
        for region, cents in (("eu", 12_000), ("us", 30_050))
    ]  # fmt: skip
    create_run(
        api, run_namespace, "sales-report", image=image, html=True,
        notebook=f"s3://{results_bucket}/notebooks/sales_report.ipynb",
        parameters={"day": "2026-11-27", "totals": totals},
    )  # fmt: skip
    run = wait_run(api, run_namespace, "sales-report", "Succeeded", "Failed", timeout=240)

    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["results"]["grand_total"]["revenue_cents"] == 42_050
    (png,) = _chart_pngs(s3_json(s3_admin, status["outputUrl"]))
    assert png.startswith(PNG_MAGIC)
