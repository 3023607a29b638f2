"""NotebookRun end to end: the operator (with deploy/'s RBAC), the real job controller, runner
pods executed by the node agent, a real kernel and real S3."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from kubemill_testenv import kube, wait
from kubemill_testenv.operatorproc import RUNS
from tests.e2e.conftest import VIEWER_URL, Cluster

pytestmark = pytest.mark.e2e

Predicate = Callable[[str, dict[str, Any]], bool]


def create_run(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {"name": name, "labels": {"team": "e2e"}},
        "spec": spec,
    }
    return kube.request(api, "POST", RUNS.format(namespace), body=body)


def phase_is(*phases: str) -> Predicate:
    def check(event: str, obj: dict[str, Any]) -> bool:
        return event != "DELETED" and (obj.get("status") or {}).get("phase") in phases

    return check


def wait_run(
    api: client.ApiClient, namespace: str, name: str, *phases: str, timeout: float = 180
) -> dict[str, Any]:
    return wait.wait_for(
        api,
        RUNS.format(namespace),
        phase_is(*phases),
        name=name,
        timeout=timeout,
        what=f"NotebookRun {namespace}/{name} in {phases}",
    )


def wait_event(api: client.ApiClient, namespace: str, run: str, reason: str) -> dict[str, Any]:
    """Events are posted after the status is written: wait for one rather than read once."""
    return wait.wait_for(
        api,
        f"/api/v1/namespaces/{namespace}/events",
        lambda e, o: (
            e != "DELETED" and o["involvedObject"].get("name") == run and o.get("reason") == reason
        ),
        timeout=30,
        what=f"a {reason} Event on {run}",
    )


def s3_json(s3_admin: Any, url: str) -> Any:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    return json.loads(s3_admin.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_results_recorded_as_none_stay_null_in_the_status(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    """A recorded None is a value: the API server keeps it only if the status is not written as
    a JSON merge patch, where null means "delete this key"."""
    create_run(
        api, run_namespace, "nones", notebook=f"s3://{results_bucket}/notebooks/records_none.ipynb"
    )
    run = wait_run(api, run_namespace, "nones", "Succeeded", "Failed")
    expected = {"nothing": None, "nested": {"a": None, "b": [None, 1]}, "rows": 3}
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["results"] == expected
    output = run["status"]["outputUrl"]
    assert s3_json(s3_admin, output.rsplit("/", 1)[0] + "/results.json") == expected


def test_run_with_parameters_succeeds(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    create_run(
        api,
        run_namespace,
        "params",
        notebook=f"s3://{results_bucket}/notebooks/params.ipynb",
        parameters={"alpha": 0.5, "region": "us", "n": 7},
    )
    waited = kubemill_installed.kubectl(
        "-n", run_namespace, "wait", "--for=condition=Succeeded", "--timeout=180s",
        "nbrun/params", check=False,
    )  # fmt: skip
    assert waited.returncode == 0, waited.stderr
    run = kube.get(api, f"{RUNS.format(run_namespace)}/params")
    status = run["status"]
    assert status["phase"] == "Succeeded"
    assert status["results"] == {"alpha": 0.5, "region": "us", "n": 7}
    assert status["attempts"] == 1
    assert status["observedGeneration"] == 1
    expected_url = f"s3://{results_bucket}/runs/{run_namespace}/params/output.ipynb"
    assert status["outputUrl"] == expected_url
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "JobCreated": "True", "Running": "False", "Succeeded": "True", "Failed": "False"
    }  # fmt: skip
    nb = s3_json(s3_admin, expected_url)
    injected = next(
        c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
    )
    assert "alpha = 0.5" in injected["source"] and "region = 'us'" in injected["source"]
    assert nb["metadata"]["kubemill"]["identity"]["run"] == "params"

    table = kubemill_installed.kubectl("-n", run_namespace, "get", "nbrun", "params").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "REASON", "DURATION", "AGE"]
    assert row.split()[:3] == ["params", "Succeeded", "Succeeded"]
    viewer = f"{VIEWER_URL}/view/{run_namespace}/params/output.ipynb"
    assert status["viewerUrl"] == viewer
    wide = kubemill_installed.kubectl("-n", run_namespace, "get", "nbr", "-o", "wide").stdout
    assert expected_url in wide and viewer in wide

    job = kube.get(api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs/{status['jobName']}")
    assert job["metadata"]["labels"]["team"] == "e2e"
    assert job["metadata"]["ownerReferences"][0]["name"] == "params"
    wait_event(api, run_namespace, "params", "JobCreated")
    wait_event(api, run_namespace, "params", "Succeeded")
    pods = kube.get(
        api, f"/api/v1/namespaces/{run_namespace}/pods", labelSelector="kubemill.dev/run=params"
    )
    log = kubemill_installed.kubectl(
        "-n", run_namespace, "logs", pods["items"][0]["metadata"]["name"]
    ).stdout
    assert "cell 3/3 started: import kubemill" in log and "alpha=0.5 region=us" in log


@pytest.mark.parametrize(
    ("notebook", "spec", "reason", "in_message"),
    [
        ("fails.ipynb", {}, "CellError", "raised KeyError"),
        ("sleep.ipynb", {"cellTimeout": "2s"}, "CellTimeout", "cell timeout of 2s"),
        ("sleep.ipynb", {"timeout": "8s"}, "RunTimeout", "timeout"),
        ("fails.ipynb", {"retries": 1}, "CellError", "after 2 attempts"),
    ],
    ids=["cell-error", "cell-timeout", "run-timeout", "retries"],
)
def test_failures_name_the_reason_and_cell_and_keep_the_output(
    api: client.ApiClient,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
    notebook: str,
    spec: dict[str, Any],
    reason: str,
    in_message: str,
) -> None:
    create_run(
        api, run_namespace, "failing",
        notebook=f"s3://{results_bucket}/notebooks/{notebook}", **spec,
    )  # fmt: skip
    run = wait_run(api, run_namespace, "failing", "Failed", timeout=240)
    status = run["status"]
    assert status["reason"] == reason, status
    assert in_message in status["message"]
    assert status["attempts"] == 1 + spec.get("retries", 0)
    failure = status["failure"]
    nb = s3_json(s3_admin, status["outputUrl"])
    assert "Execution failed" in nb["cells"][0]["source"]
    failed_cell = nb["cells"][failure["cell"]]
    assert failed_cell["id"] == failure["cellId"]
    assert failed_cell["outputs"], "the failing cell's partial output is kept"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Failed"] == "True"
    wait_event(api, run_namespace, "failing", reason)
    events = kube.get(
        api, f"/api/v1/namespaces/{run_namespace}/events",
        fieldSelector="involvedObject.name=failing",
    )  # fmt: skip
    warnings = [e for e in events["items"] if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == [reason]


CANARY = "e2e-canary-31f4c9a7-secret"


def test_secret_parameter_reaches_the_kernel_and_nothing_else(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    operator: Any,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    kube.request(
        api, "POST", f"/api/v1/namespaces/{run_namespace}/secrets",
        body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"},
              "stringData": {"token": CANARY}},
    )  # fmt: skip
    create_run(
        api, run_namespace, "secret",
        notebook=f"s3://{results_bucket}/notebooks/secret.ipynb",
        parametersFrom=[{"name": "token", "secretKeyRef": {"name": "api", "key": "token"}}],
    )  # fmt: skip
    run = wait_run(api, run_namespace, "secret", "Failed")  # its last cell raises on purpose
    assert run["status"]["results"]["token_length"] == len(CANARY)
    seen = [json.dumps(run)]
    seen.append(json.dumps(kube.get(api, f"/api/v1/namespaces/{run_namespace}/events")))
    job = kube.get(api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs")
    seen.append(json.dumps(job))
    for pod in kube.get(api, f"/api/v1/namespaces/{run_namespace}/pods")["items"]:
        seen.append(json.dumps(pod))
        seen.append(
            kubemill_installed.kubectl("-n", run_namespace, "logs", pod["metadata"]["name"]).stdout
        )
    prefix = f"runs/{run_namespace}/secret/"
    listing = s3_admin.list_objects_v2(Bucket=results_bucket, Prefix=prefix)
    keys = [item["Key"] for item in listing["Contents"]]
    assert sorted(keys) == [prefix + k for k in ("output.ipynb", "results.json", "run.json")]
    for key in keys:
        seen.append(s3_admin.get_object(Bucket=results_bucket, Key=key)["Body"].read().decode())
    assert "the token is ***" in "".join(seen)  # the output and the pod log show the mask
    seen.append(operator.log.read_text(errors="replace"))
    for text in seen:
        assert CANARY not in text


def test_runner_pods_are_admitted_under_restricted_pod_security(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    kube.merge_patch(
        api,
        f"/api/v1/namespaces/{run_namespace}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    create_run(
        api, run_namespace, "restricted",
        notebook=f"s3://{results_bucket}/notebooks/params.ipynb",
    )  # fmt: skip
    run = wait_run(api, run_namespace, "restricted", "Succeeded", "Failed")
    assert run["status"]["phase"] == "Succeeded", run["status"]


def test_deleting_a_running_run_stops_it_and_keeps_its_partial_output(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    create_run(
        api, run_namespace, "deleted",
        notebook=f"s3://{results_bucket}/notebooks/sleep.ipynb",
    )  # fmt: skip
    wait_run(api, run_namespace, "deleted", "Running")
    pods = f"/api/v1/namespaces/{run_namespace}/pods"
    pod = wait.wait_for(
        api, pods, lambda e, p: e != "DELETED" and p.get("status", {}).get("phase") == "Running",
        label_selector="kubemill.dev/run=deleted", timeout=120, what="the runner pod",
    )  # fmt: skip
    kubemill_installed.await_log_line(run_namespace, pod["metadata"]["name"], "started sleeping")
    kube.request(api, "DELETE", f"{RUNS.format(run_namespace)}/deleted")
    wait.wait_gone(api, pods, pod["metadata"]["name"], timeout=90, what="the runner pod")
    jobs = kube.get(api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs")
    assert jobs["items"] == []
    url = f"s3://{results_bucket}/runs/{run_namespace}/deleted/output.ipynb"
    nb = s3_json(s3_admin, url)
    assert "Execution failed: Terminated" in nb["cells"][0]["source"]


def test_notebook_from_a_config_map(
    api: client.ApiClient, run_namespace: str, s3_admin: Any
) -> None:
    """The GitOps path: the notebook ships in a ConfigMap next to the run."""
    from tests.conftest import NOTEBOOKS

    kube.request(
        api, "POST", f"/api/v1/namespaces/{run_namespace}/configmaps",
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "notebooks"},
              "data": {"report.ipynb": (NOTEBOOKS / "params.ipynb").read_text()}},
    )  # fmt: skip
    create_run(
        api, run_namespace, "from-config-map",
        notebookFrom={"configMapKeyRef": {"name": "notebooks", "key": "report.ipynb"}},
        parameters={"region": "gitops"},
    )  # fmt: skip
    run = wait_run(api, run_namespace, "from-config-map", "Succeeded", "Failed")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["results"]["region"] == "gitops"
    nb = s3_json(s3_admin, run["status"]["outputUrl"])
    assert nb["metadata"]["kubemill"]["input"]["uri"].endswith("/report.ipynb")
