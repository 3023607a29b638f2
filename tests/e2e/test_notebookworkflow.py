"""NotebookWorkflow on the real control plane, with the operator under its own ServiceAccount:
a diamond with a fan-out over a recorded list and a test step that passes or fails on a planted
defect; an upstream failure that skips what depends on it while the independent branch and the
finally step run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from typing import Any

import pytest
from kubernetes import client

from kubemill_testenv import kube, wait
from kubemill_testenv.operatorproc import RUNS
from tests.e2e.conftest import Cluster
from tests.e2e.test_notebookrun import CANARY
from tests.e2e.test_notebookschedule import KUBEMILL

pytestmark = pytest.mark.e2e

ENDED = ("Succeeded", "Failed")
WORKFLOWS = "/apis/kubemill.dev/v1alpha1/namespaces/{}/notebookworkflows"


def step(name: str, notebook: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"notebook": notebook}
    for key in ("parameters", "parametersFrom"):
        if key in extra:
            spec[key] = extra.pop(key)
    return {"name": name, "runTemplate": {"spec": spec}, **extra}


def ref(parameter: str, step_name: str, **what: str) -> dict[str, Any]:
    return {"name": parameter, "stepRef": {"name": step_name, **what}}


def create_workflow(
    api: client.ApiClient, namespace: str, name: str, steps: list[Any], **spec: Any
) -> dict[str, Any]:
    body = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookWorkflow",
        "metadata": {"name": name},
        "spec": {"steps": steps, **spec},
    }
    return kube.request(api, "POST", WORKFLOWS.format(namespace), body=body)


def wait_workflow(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return wait.wait_for(
        api, WORKFLOWS.format(namespace),
        lambda e, o: e != "DELETED" and (o.get("status") or {}).get("phase") in ENDED,
        name=name, timeout=600, what=f"workflow {name} to end",
    )  # fmt: skip


def steps_of(workflow: dict[str, Any]) -> dict[str, tuple[str, str]]:
    table = {}
    for entry in workflow["status"]["steps"]:
        item = f"/{entry['item']}" if "item" in entry else ""
        table[entry["name"] + item] = (entry["phase"], entry.get("reason", ""))
    return table


def diamond(bucket: str, expected_rows: int) -> list[dict[str, Any]]:
    notebooks = f"s3://{bucket}/notebooks"
    return [
        step("extract", f"{notebooks}/workflow_extract.ipynb"),
        step("rows", f"{notebooks}/values.ipynb",
             parametersFrom=[ref("value", "extract", result="rows")]),
        step("region", f"{notebooks}/values.ipynb",
             forEach={"parameter": "value", "fromStep": {"name": "extract", "result": "regions"}}),
        step("report", f"{notebooks}/values.ipynb", dependsOn=["rows"],
             parametersFrom=[ref("value", "region", result="repr")]),
        step("check", f"{notebooks}/workflow_check.ipynb", test=True,
             parameters={"expected_rows": expected_rows},
             parametersFrom=[ref("notebook", "extract", output="notebook")]),
    ]  # fmt: skip


def test_a_diamond_with_a_fan_out_and_a_passing_test_step(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    create_workflow(api, run_namespace, "diamond", diamond(results_bucket, expected_rows=3))
    done = wait_workflow(api, run_namespace, "diamond")
    status = done["status"]
    assert (status["phase"], status["progress"]) == ("Succeeded", "6/6"), status
    assert status["tests"] == {"total": 1, "passed": 1, "failed": 0}
    assert set(steps_of(done)) == {"extract", "rows", "region/0", "region/1", "report", "check"}
    runs = {r["metadata"]["name"]: r for r in kube.get(api, RUNS.format(run_namespace))["items"]}
    assert runs["diamond-rows"]["status"]["results"]["repr"] == "3"
    assert runs["diamond-region-1"]["status"]["results"]["repr"] == "'us'"
    # The report took the fan-out's list, one value per item, in item order.
    assert runs["diamond-report"]["status"]["results"]["repr"] == repr(["'eu'", "'us'"])
    for run in runs.values():
        owner = run["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("NotebookWorkflow", "diamond")
    jobs = kube.get(api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs")["items"]
    assert sorted(j["metadata"]["labels"]["kubemill.dev/run"] for j in jobs) == sorted(runs)


def test_a_planted_defect_fails_the_test_step_and_the_workflow_says_which_check(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    create_workflow(api, run_namespace, "defect", diamond(results_bucket, expected_rows=4))
    status = wait_workflow(api, run_namespace, "defect")["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TestFailed"), status
    assert "rows is 3, expected 4" in status["message"]
    assert status["tests"] == {"total": 1, "passed": 0, "failed": 1}
    events = kube.get(api, f"/api/v1/namespaces/{run_namespace}/events")["items"]
    failed = [e["message"] for e in events if e["reason"] == "TestFailed"]
    assert any("rows is 3, expected 4" in m for m in failed), failed


def test_an_upstream_failure_skips_its_dependents_while_the_rest_and_finally_run(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    notebooks = f"s3://{results_bucket}/notebooks"
    steps = [
        step("extract", f"{notebooks}/workflow_extract.ipynb", parameters={"fail": True}),
        step("rows", f"{notebooks}/values.ipynb",
             parametersFrom=[ref("value", "extract", result="rows")]),
        step("later", f"{notebooks}/values.ipynb", dependsOn=["rows"]),
        step("other", f"{notebooks}/values.ipynb", parameters={"value": 1}),
    ]  # fmt: skip
    final = [
        step("notify", f"{notebooks}/values.ipynb",
             parametersFrom=[{"name": "value", "workflowOutcome": {}}]),
    ]  # fmt: skip
    create_workflow(api, run_namespace, "broken", steps, **{"finally": final})
    done = wait_workflow(api, run_namespace, "broken")
    assert (done["status"]["phase"], done["status"]["reason"]) == ("Failed", "StepFailed")
    assert done["status"]["message"].startswith("step extract failed (CellError): ")
    assert steps_of(done) == {
        "extract": ("Failed", "CellError"), "rows": ("Skipped", "UpstreamFailed"),
        "later": ("Skipped", "UpstreamFailed"), "other": ("Succeeded", "Succeeded"),
        "notify": ("Succeeded", "Succeeded"),
    }  # fmt: skip
    runs = {r["metadata"]["name"]: r for r in kube.get(api, RUNS.format(run_namespace))["items"]}
    assert "broken-later" not in runs  # never created: its dependency never succeeded
    outcome = runs["broken-notify"]["status"]["results"]["repr"]
    assert "'phase': 'Failed'" in outcome and "'failed': ['extract']" in outcome


def test_a_step_whose_pod_does_not_start_in_time_fails_the_workflow(
    api: client.ApiClient, run_namespace: str, results_bucket: str
) -> None:
    notebooks = f"s3://{results_bucket}/notebooks"
    pull = step("pull", f"{notebooks}/values.ipynb", parameters={"value": 1})
    # (Long enough for the pull failure to show first on a loaded machine.)
    pull["runTemplate"]["spec"].update(
        image="registry.invalid/kubemill/absent:1", startTimeout="20s"
    )
    steps = [pull, step("after", f"{notebooks}/values.ipynb", dependsOn=["pull"])]
    create_workflow(api, run_namespace, "no-start", steps)
    done = wait_workflow(api, run_namespace, "no-start")
    assert (done["status"]["phase"], done["status"]["reason"]) == ("Failed", "StepFailed")
    assert done["status"]["message"].startswith("step pull failed (ImagePullFailed): ")
    assert steps_of(done) == {
        "pull": ("Failed", "ImagePullFailed"), "after": ("Skipped", "UpstreamFailed"),
    }  # fmt: skip


def test_retry_re_runs_only_the_failed_and_skipped_steps(
    api: client.ApiClient, kubemill_installed: Cluster, run_namespace: str, results_bucket: str
) -> None:
    notebooks = f"s3://{results_bucket}/notebooks"
    steps = [
        step("flaky", f"{notebooks}/fails_once.ipynb",
             parameters={"bucket": results_bucket, "marker": f"markers/{run_namespace}/flaky"}),
        step("after", f"{notebooks}/values.ipynb",
             parametersFrom=[ref("value", "flaky", result="attempt")]),
        step("steady", f"{notebooks}/values.ipynb", parameters={"value": 1}),
    ]  # fmt: skip
    final = [step("notify", f"{notebooks}/values.ipynb")]
    create_workflow(api, run_namespace, "flaky", steps, **{"finally": final})
    first = wait_workflow(api, run_namespace, "flaky")["status"]
    assert (first["phase"], first["attempt"]) == ("Failed", 1), first
    retried = subprocess.run(
        [KUBEMILL, "retry", "flaky", "-n", run_namespace,
         "--kubeconfig", str(kubemill_installed.kubeconfig)],
        text=True, capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == (
        "notebookworkflow.kubemill.dev/flaky attempt 2: re-running flaky, after\n"
    )
    done = wait.wait_for(
        api, WORKFLOWS.format(run_namespace),
        lambda e, o: (o.get("status") or {}).get("attempt") == 2
        and o["status"].get("phase") in ENDED,
        name="flaky", timeout=600, what="the second attempt to end",
    )  # fmt: skip
    assert done["status"]["phase"] == "Succeeded", done["status"]
    runs = sorted(r["metadata"]["name"] for r in kube.get(api, RUNS.format(run_namespace))["items"])
    # The failed attempt's runs stay; the steady step ran once, its output reused.
    assert runs == [
        "flaky-after", "flaky-after-r2", "flaky-flaky", "flaky-flaky-r2", "flaky-notify",
        "flaky-notify-r2", "flaky-steady",
    ]  # fmt: skip
    again = subprocess.run(
        [KUBEMILL, "retry", "flaky", "-n", run_namespace,
         "--kubeconfig", str(kubemill_installed.kubeconfig)],
        text=True, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 2
    assert "is Succeeded: only a failed workflow is retried" in again.stderr


def test_a_killed_operator_runs_every_step_of_ten_workflows_exactly_once(
    api: client.ApiClient, operator: Any, run_namespace: str, results_bucket: str
) -> None:
    """SIGKILL at random moments while 10 workflows run: each step's run exists once, each
    run has one Job, and each workflow reaches Succeeded once."""
    seed = int(os.environ.get("KUBEMILL_CHAOS_SEED", str(time.time_ns() % 10**6)))
    rng = random.Random(seed)
    values = f"s3://{results_bucket}/notebooks/values.ipynb"
    names = [f"chaos-{i}" for i in range(10)]
    for index, name in enumerate(names):
        create_workflow(api, run_namespace, name, [
            step("a", values, parameters={"value": index}),
            step("b", values, parametersFrom=[ref("value", "a", result="repr")]),
            step("c", values, dependsOn=["a"], parameters={"value": -index}),
        ])  # fmt: skip
        if index in (2, 6):
            operator.kill()
            operator.start()
    for _ in range(2):
        time.sleep(rng.uniform(2.0, 8.0))  # a random moment to kill at is the point here
        operator.kill()
        operator.start()
    for name in names:
        done = wait_workflow(api, run_namespace, name)
        assert done["status"]["phase"] == "Succeeded", (seed, name, done["status"])
    runs = kube.get(api, RUNS.format(run_namespace))["items"]
    assert sorted(r["metadata"]["name"] for r in runs) == sorted(
        f"{name}-{s}" for name in names for s in "abc"
    ), seed
    jobs = kube.get(api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs")["items"]
    per_run: dict[str, int] = {}
    for job in jobs:
        run = job["metadata"]["labels"]["kubemill.dev/run"]
        per_run[run] = per_run.get(run, 0) + 1
    assert set(per_run.values()) == {1} and len(per_run) == 30, (seed, per_run)
    events = kube.get(api, f"/api/v1/namespaces/{run_namespace}/events")["items"]
    ended: dict[str, int] = {}
    for event in events:
        involved = event["involvedObject"]
        if involved["kind"] == "NotebookWorkflow" and event["reason"] == "Succeeded":
            ended[involved["name"]] = ended.get(involved["name"], 0) + event.get("count", 1)
    # (An Event can be lost with a killed process, never posted twice.)
    assert all(count == 1 for count in ended.values()), (seed, ended)


def test_a_secret_passed_to_a_step_appears_in_no_status_event_log_or_output(
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
    notebooks = f"s3://{results_bucket}/notebooks"
    steps = [
        step("use", f"{notebooks}/secret.ipynb",  # its last cell raises, naming the token
             parametersFrom=[{"name": "token", "secretKeyRef": {"name": "api", "key": "token"}}]),
        step("after", f"{notebooks}/values.ipynb",
             parametersFrom=[ref("value", "use", output="notebook")]),
    ]  # fmt: skip
    final = [
        step("notify", f"{notebooks}/values.ipynb",
             parametersFrom=[{"name": "value", "workflowOutcome": {}}]),
    ]  # fmt: skip
    create_workflow(api, run_namespace, "secret", steps, **{"finally": final})
    done = wait_workflow(api, run_namespace, "secret")
    assert done["status"]["phase"] == "Failed", done["status"]
    seen = [json.dumps(done), json.dumps(kube.get(api, RUNS.format(run_namespace)))]
    seen.append(json.dumps(kube.get(api, f"/api/v1/namespaces/{run_namespace}/events")))
    for pod in kube.get(api, f"/api/v1/namespaces/{run_namespace}/pods")["items"]:
        name = pod["metadata"]["name"]
        seen.append(kubemill_installed.kubectl("-n", run_namespace, "logs", name).stdout)
    listing = s3_admin.list_objects_v2(Bucket=results_bucket, Prefix=f"runs/{run_namespace}/")
    for item in listing["Contents"]:
        body = s3_admin.get_object(Bucket=results_bucket, Key=item["Key"])["Body"].read()
        seen.append(body.decode(errors="replace"))
    assert any("the token is ***" in text for text in seen)  # masked where it was printed
    seen.append(operator.log.read_text(errors="replace"))
    assert not [text[:200] for text in seen if CANARY in text]
