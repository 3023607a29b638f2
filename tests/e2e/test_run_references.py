"""Runs that take values from other runs (`parametersFrom[].notebookRunRef`) on the real control
plane: a run applied before its upstream waits for it, takes its results with their JSON types
and its URLs, a 10 MB result arrives through the upstream's results.json, and an upstream's
failure or a cycle ends the run without a Job."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from kubemill_testenv import kube, wait
from kubemill_testenv.operatorproc import RUNS
from tests.e2e.test_notebookrun import create_run, wait_run

pytestmark = pytest.mark.e2e


def ref(parameter: str, run: str, **what: str) -> dict[str, Any]:
    return {"name": parameter, "notebookRunRef": {"name": run, **what}}


def jobs_of(api: client.ApiClient, namespace: str, run: str) -> list[Any]:
    listed = kube.get(
        api, f"/apis/batch/v1/namespaces/{namespace}/jobs?labelSelector=kubemill.dev/run={run}"
    )
    return list(listed["items"])


def events_of(api: client.ApiClient, namespace: str, run: str) -> list[tuple[str, str]]:
    listed = kube.get(api, f"/api/v1/namespaces/{namespace}/events")["items"]
    return [(e["reason"], e["message"]) for e in listed if e["involvedObject"]["name"] == run]


def test_a_run_applied_before_its_upstream_waits_then_takes_its_values(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    values = f"s3://{results_bucket}/notebooks/values.ipynb"
    create_run(api, run_namespace, "nested", notebook=values,
               parametersFrom=[ref("value", "extract", result="nested")])  # fmt: skip
    create_run(api, run_namespace, "folder", notebook=values,
               parametersFrom=[ref("value", "extract", output="folder")])  # fmt: skip
    waiting = wait.wait_for(
        api, RUNS.format(run_namespace),
        lambda e, o: (o.get("status") or {}).get("phase") == "Waiting",
        name="nested", timeout=60, what="the run to wait for its upstream",
    )  # fmt: skip
    assert waiting["status"]["message"] == "waiting for run extract (it does not exist yet)"
    assert jobs_of(api, run_namespace, "nested") == []
    # The upstream comes later, as a GitOps tool may apply it.
    create_run(api, run_namespace, "extract",
               notebook=f"s3://{results_bucket}/notebooks/records_none.ipynb")  # fmt: skip
    nested = wait_run(api, run_namespace, "nested", "Succeeded", "Failed", timeout=300)
    assert nested["status"]["phase"] == "Succeeded", nested["status"]
    assert nested["status"]["results"] == {"repr": "{'a': None, 'b': [None, 1]}", "type": "dict"}
    folder = wait_run(api, run_namespace, "folder", "Succeeded", "Failed", timeout=300)
    expected = f"s3://{results_bucket}/runs/{run_namespace}/extract/"
    assert folder["status"]["results"]["repr"] == repr(expected)
    assert ("Waiting", "waiting for run extract (it does not exist yet)") in events_of(
        api, run_namespace, "nested"
    )
    assert len(jobs_of(api, run_namespace, "nested")) == 1


def test_a_10_mb_result_reaches_the_downstream_notebook_through_results_json(
    api: client.ApiClient, run_namespace: str, results_bucket: str, s3_admin: Any
) -> None:
    create_run(api, run_namespace, "big", parameters={"count": 70_000, "width": 150},
               notebook=f"s3://{results_bucket}/notebooks/records_big.ipynb")  # fmt: skip
    create_run(api, run_namespace, "digest",
               notebook=f"s3://{results_bucket}/notebooks/parameters_digest.ipynb",
               parametersFrom=[ref("items", "big", result="items")])  # fmt: skip
    finished = wait_run(api, run_namespace, "big", "Succeeded", "Failed", timeout=300)
    big, big_uid = finished["status"], finished["metadata"]["uid"]
    assert big["phase"] == "Succeeded", big
    assert big["results"]["size"] > 10_000_000
    assert "items" in big["resultsTruncated"]  # too large for the status
    digest = wait_run(api, run_namespace, "digest", "Succeeded", "Failed", timeout=600)["status"]
    assert digest["phase"] == "Succeeded", digest
    assert digest["results"]["lengths"]["items"] == 70_000
    assert digest["results"]["digests"]["items"] == big["results"]["digest"]
    # The lineage names the upstream run and the results.json the runner read.
    key = f"runs/{run_namespace}/digest/run.json"
    lineage = json.loads(s3_admin.get_object(Bucket=results_bucket, Key=key)["Body"].read())
    (upstream,) = lineage["upstream"]
    assert upstream["name"] == "big" and upstream["parameters"] == ["items"]
    assert upstream["uid"] == big_uid
    assert upstream["resultsUrl"].endswith(f"/{run_namespace}/big/results.json")
    assert len(upstream["resultsSha256"]) == 64


def test_an_upstream_failure_or_a_cycle_ends_the_run_without_a_job(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    values = f"s3://{results_bucket}/notebooks/values.ipynb"
    create_run(
        api, run_namespace, "broken", notebook=f"s3://{results_bucket}/notebooks/fails.ipynb"
    )
    create_run(api, run_namespace, "after-broken", notebook=values,
               parametersFrom=[ref("value", "broken", output="notebook")])  # fmt: skip
    create_run(api, run_namespace, "loop-a", notebook=values,
               parametersFrom=[ref("value", "loop-b", result="x")])  # fmt: skip
    create_run(api, run_namespace, "loop-b", notebook=values,
               parametersFrom=[ref("value", "loop-a", result="x")])  # fmt: skip
    after = wait_run(api, run_namespace, "after-broken", "Succeeded", "Failed", timeout=300)
    assert after["status"]["reason"] == "UpstreamFailed"
    assert after["status"]["message"].startswith("run broken failed (CellError): ")
    assert jobs_of(api, run_namespace, "after-broken") == []
    for name in ("loop-a", "loop-b"):
        status = wait_run(api, run_namespace, name, "Failed", timeout=60)["status"]
        assert status["reason"] == "InvalidSpec", status
        assert "spec.parametersFrom makes a cycle: " in status["message"]
        assert jobs_of(api, run_namespace, name) == []
