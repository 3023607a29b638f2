"""The example a new user runs first, examples/sales-workflow.yaml, run as the README says:
`kubemill workflow run` on the manifest file itself, its notebooks read from S3 at the very
URLs the sandbox serves them from, with a real kernel and a real S3 server."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import kubemill
from tests.integration.helpers import load

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MANIFEST = EXAMPLES / "sales-workflow.yaml"
#: The manifest's notebooks are s3://notebooks/sales/<name>.
BUCKET, PREFIX = "notebooks", "sales/"
FIELDS = ("orders", "units", "revenue_cents", "refunded_cents")


@pytest.fixture
def sales_notebooks(s3_admin: Any) -> None:
    """The example notebooks where the manifest names them; the bucket is shared by the
    session's server, and uploading the same files again is harmless."""
    with contextlib.suppress(s3_admin.exceptions.BucketAlreadyOwnedByYou):
        s3_admin.create_bucket(Bucket=BUCKET)
    for notebook in sorted((EXAMPLES / "sales").glob("*.ipynb")):
        s3_admin.upload_file(str(notebook), BUCKET, PREFIX + notebook.name)


def run_example(out: Path, s3_env: dict[str, str], *args: str) -> tuple[int, str, dict[str, Any]]:
    done = kubemill(
        ["workflow", "run", str(MANIFEST), "--output-dir", str(out), *args], env=s3_env, timeout=300
    )
    state_file = out / "default" / "sales.workflow.json"
    assert state_file.exists(), done.stdout + done.stderr
    return done.returncode, done.stdout + done.stderr, load(state_file)


def summed(orders: list[dict[str, Any]], region: str) -> dict[str, int]:
    """The test's own sums of the raw order lines, the rule the README states: paid orders
    count, refunds are reported apart, cancelled ones count for nothing."""
    lines = [o for o in orders if o["region"] == region]
    paid = [o for o in lines if o["status"] == "paid"]
    refunded = [o for o in lines if o["status"] == "refunded"]
    return {
        "orders": len(paid),
        "units": sum(o["quantity"] for o in paid),
        "revenue_cents": sum(o["quantity"] * o["unit_cents"] for o in paid),
        "refunded_cents": sum(o["quantity"] * o["unit_cents"] for o in refunded),
    }


@pytest.mark.usefixtures("sales_notebooks")
def test_the_sales_example_runs_and_its_test_step_passes(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    code, said, state = run_example(tmp_path, s3_env)
    assert code == 0, said
    assert "workflow sales Succeeded: 6 runs succeeded" in said
    assert "tests: 1 passed, 0 failed" in said
    status = state["workflow"]["status"]
    table = [(e["name"], e.get("item"), e["phase"], e["runName"]) for e in status["steps"]]
    assert table == [
        ("extract", None, "Succeeded", "sales-extract"),
        ("transform", 0, "Succeeded", "sales-transform-0"),
        ("transform", 1, "Succeeded", "sales-transform-1"),
        ("transform", 2, "Succeeded", "sales-transform-2"),
        ("report", None, "Succeeded", "sales-report"),
        ("check-totals", None, "Succeeded", "sales-check-totals"),
    ]
    assert status["tests"] == {"total": 1, "passed": 1, "failed": 0}
    given = {r["metadata"]["name"]: r["spec"].get("parameters", {}) for r in state["runs"]}
    assert [given[f"sales-transform-{i}"]["region"] for i in range(3)] == ["eu", "us", "apac"]

    folder = tmp_path / "default"
    extract = load(folder / "sales-extract" / "results.json")
    assert (extract["day"], extract["regions"]) == ("2026-11-27", ["eu", "us", "apac"])
    report = load(folder / "sales-report" / "results.json")
    for region in ("eu", "us", "apac"):
        assert report["by_region"][region] == summed(extract["orders"], region), region
    # The data are the same for the same day on every machine: these are the README's numbers.
    assert report["grand_total"] == {
        "orders": 309,
        "units": 916,
        "revenue_cents": 1855520,
        "refunded_cents": 167960,
    }
    html = (folder / "sales-report" / "output.html").read_text()  # spec.html
    assert 'src="data:image/png;base64,' in html  # the matplotlib chart


@pytest.mark.usefixtures("sales_notebooks")
def test_a_transform_that_loses_order_lines_fails_the_test_step(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    """Every region's transform leaves out lines under 20.00: each step succeeds, and only the
    test step, summing the raw lines itself, sees that the report lost orders, and says where."""
    code, said, state = run_example(tmp_path, s3_env, "-p", "transform.min_amount_cents", "2000")
    assert code == 1, said
    assert "tests: 0 passed, 1 failed" in said
    status = state["workflow"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TestFailed")
    phases = {(e["name"], e.get("item")): e["phase"] for e in status["steps"]}
    assert phases.pop(("check-totals", None)) == "Failed"
    assert set(phases.values()) == {"Succeeded"}
    orders = load(tmp_path / "default" / "sales-extract" / "results.json")["orders"]
    reported = load(tmp_path / "default" / "sales-report" / "results.json")["by_region"]
    eu = summed(orders, "eu")
    assert reported["eu"]["orders"] < eu["orders"]
    # The first mismatch, named with region, field, reported and summed value.
    expected = f"report != extract: apac orders: {reported['apac']['orders']} != "
    assert expected + str(summed(orders, "apac")["orders"]) in status["message"]
    assert f"eu revenue_cents: {reported['eu']['revenue_cents']} != {eu['revenue_cents']}" in said
