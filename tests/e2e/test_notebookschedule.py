"""NotebookSchedule end to end, with seconds-level schedules: the operator (deploy/'s RBAC) creates
runs on time, the run controller executes them in runner pods with a real kernel and real S3."""

from __future__ import annotations

import datetime
import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemill.operator.schedules import slot_run_name
from kubemill.operator.times import parse_rfc3339
from kubemill_testenv import kube, wait
from kubemill_testenv.operatorproc import RUNS
from tests.e2e.conftest import Cluster
from tests.e2e.test_notebookrun import s3_json, wait_run

pytestmark = pytest.mark.e2e

SCHEDULES = "/apis/kubemill.dev/v1alpha1/namespaces/{}/notebookschedules"
WORKFLOWS = "/apis/kubemill.dev/v1alpha1/namespaces/{}/notebookworkflows"
TERMINAL = ("Succeeded", "Failed")
KUBEMILL = str(Path(sys.executable).with_name("kubemill"))


def create_schedule(
    api: client.ApiClient, namespace: str, name: str, notebook: str, **spec: Any
) -> dict[str, Any]:
    parameters = spec.pop("parameters", {})
    body = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookSchedule",
        "metadata": {"name": name},
        "spec": {
            "runTemplate": {
                "metadata": {"labels": {"team": "e2e"}},
                "spec": {"notebook": notebook, "parameters": parameters},
            },
            **spec,
        },
    }
    return kube.request(api, "POST", SCHEDULES.format(namespace), body=body)


def patch_schedule(api: client.ApiClient, namespace: str, name: str, **spec: Any) -> None:
    kube.merge_patch(api, f"{SCHEDULES.format(namespace)}/{name}", {"spec": spec})


def runs_of(api: client.ApiClient, namespace: str, schedule: str) -> list[dict[str, Any]]:
    listed = kube.get(
        api, RUNS.format(namespace), labelSelector=f"kubemill.dev/schedule={schedule}"
    )
    return sorted(listed["items"], key=lambda r: r["metadata"]["name"])


def slot_of(run: dict[str, Any]) -> datetime.datetime:
    text = run["metadata"]["annotations"]["kubemill.dev/scheduled-time"]
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def created_at(run: dict[str, Any]) -> datetime.datetime:
    text = run["metadata"]["creationTimestamp"]
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def wait_schedule_event(
    api: client.ApiClient, namespace: str, schedule: str, reason: str, timeout: float = 60
) -> dict[str, Any]:
    return wait.wait_for(
        api,
        f"/api/v1/namespaces/{namespace}/events",
        lambda e, o: (
            e != "DELETED"
            and o["involvedObject"].get("name") == schedule
            and o["involvedObject"].get("kind") == "NotebookSchedule"
            and o.get("reason") == reason
        ),
        timeout=timeout,
        what=f"a {reason} Event on {schedule}",
    )


def wait_runs(
    api: client.ApiClient, namespace: str, schedule: str, count: int, *phases: str,
    timeout: float = 120,
) -> None:  # fmt: skip
    """Until `count` runs of the schedule exist (in one of `phases`, if given)."""
    seen: dict[str, str] = {}

    def enough(event: str, run: dict[str, Any]) -> bool:
        phase = (run.get("status") or {}).get("phase", "")
        if event == "DELETED":
            seen.pop(run["metadata"]["name"], None)
        else:
            seen[run["metadata"]["name"]] = phase
        return sum(1 for p in seen.values() if not phases or p in phases) >= count

    wait.wait_for(
        api, RUNS.format(namespace), enough, label_selector=f"kubemill.dev/schedule={schedule}",
        timeout=timeout, what=f"{count} runs of {schedule} in {phases or 'any phase'}",
    )  # fmt: skip


def no_run_created(api: client.ApiClient, namespace: str, schedule: str, seconds: float) -> None:
    """Watch for `seconds` (several slots): no run may appear. The absence of an event cannot
    be awaited any other way than for a while."""
    since = wait.resource_version(api, RUNS.format(namespace))
    with pytest.raises(wait.WaitTimeout):
        appeared = wait.wait_for(
            api, RUNS.format(namespace), lambda e, _: e == "ADDED",
            label_selector=f"kubemill.dev/schedule={schedule}", since=since,
            timeout=seconds, what="no new run",
        )  # fmt: skip
        pytest.fail(f"a run was created: {appeared['metadata']['name']}")


def test_runs_appear_on_time_with_the_slot_in_their_parameters_and_history_is_pruned(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    create_schedule(
        api, run_namespace, "ticker", f"s3://{results_bucket}/notebooks/params.ipynb",
        schedule="*/5 * * * * *", timeZone="Asia/Kolkata", concurrencyPolicy="Forbid",
        successfulRunsHistoryLimit=2,
        parameters={"region": "{{ scheduledTime }}", "n": 7},
    )  # fmt: skip
    # Four successes in all; the history limit keeps the newest two.
    succeeded: set[str] = set()

    def four_succeeded(event: str, run: dict[str, Any]) -> bool:
        if (run.get("status") or {}).get("phase") == "Succeeded":
            succeeded.add(run["metadata"]["name"])
        return len(succeeded) >= 4

    wait.wait_for(
        api, RUNS.format(run_namespace), four_succeeded,
        label_selector="kubemill.dev/schedule=ticker", timeout=180, what="4 successful runs",
    )  # fmt: skip
    patch_schedule(api, run_namespace, "ticker", suspend=True)
    wait.wait_for(
        api, SCHEDULES.format(run_namespace), wait.has_condition("Suspended"),
        name="ticker", timeout=30, what="the schedule suspended",
    )  # fmt: skip
    runs = runs_of(api, run_namespace, "ticker")
    kept = [r for r in runs if r["status"].get("phase") == "Succeeded"]
    assert len(kept) <= 2, [r["metadata"]["name"] for r in kept]
    oldest_kept = min(slot_of(r) for r in kept)
    assert all(slot_of(r) <= oldest_kept for r in runs if r["metadata"]["name"] not in succeeded)
    for run in runs:
        slot = slot_of(run)
        # One name per slot, created at its time (whole seconds on both sides).
        assert run["metadata"]["name"] == f"ticker-{slot:%Y%m%d-%H%M%S}"
        assert slot.second % 5 == 0
        assert datetime.timedelta(0) <= created_at(run) - slot <= datetime.timedelta(seconds=3)
        assert run["metadata"]["labels"]["team"] == "e2e"
    newest = max(kept, key=slot_of)
    local = slot_of(newest).astimezone(datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
    assert newest["status"]["results"] == {"alpha": 0.1, "region": local.isoformat(), "n": 7}
    output = s3_json(s3_admin, newest["status"]["outputUrl"])
    assert local.isoformat() in "".join(
        "".join(c["source"]) for c in output["cells"] if "injected-parameters" in
        c["metadata"].get("tags", [])
    )  # fmt: skip
    status = kube.get(api, f"{SCHEDULES.format(run_namespace)}/ticker")["status"]
    assert status["lastScheduleTime"] and status["lastSuccessfulTime"]
    assert status.get("nextScheduleTime") is None  # suspended
    table = kubemill_installed.kubectl("-n", run_namespace, "get", "nbsched", "ticker").stdout
    header = table.splitlines()[0].split()
    assert header[:6] == ["NAME", "SCHEDULE", "TIME", "ZONE", "SUSPEND", "ACTIVE"]
    assert "Asia/Kolkata" in table and "true" in table


def test_forbid_skips_slots_while_a_run_is_active_and_suspend_stops_new_runs(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
) -> None:
    create_schedule(
        api, run_namespace, "slow", f"s3://{results_bucket}/notebooks/sleep.ipynb",
        schedule="*/3 * * * * *", concurrencyPolicy="Forbid", parameters={"seconds": 8},
    )  # fmt: skip
    skipped = wait_schedule_event(api, run_namespace, "slow", "SkippedActive")
    assert "still running (concurrencyPolicy Forbid)" in skipped["message"]
    wait_runs(api, run_namespace, "slow", 2)
    patch_schedule(api, run_namespace, "slow", suspend=True)
    wait.wait_for(
        api, SCHEDULES.format(run_namespace), wait.has_condition("Suspended"),
        name="slow", timeout=30, what="the schedule suspended",
    )  # fmt: skip
    no_run_created(api, run_namespace, "slow", seconds=10)
    runs = runs_of(api, run_namespace, "slow")
    # Never two at once: each run started after the previous one finished.
    spans = []
    for run in runs:
        run = wait_run(api, run_namespace, run["metadata"]["name"], "Succeeded", "Failed")
        spans.append((created_at(run), _time(run["status"]["completionTime"])))
    spans.sort()
    for (_, ended), (started, _) in itertools.pairwise(spans):
        assert started >= ended - datetime.timedelta(seconds=1), spans


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_replace_stops_the_active_run_which_keeps_its_partial_output(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    s3_admin: Any,
) -> None:
    create_schedule(
        api, run_namespace, "replaced", f"s3://{results_bucket}/notebooks/sleep.ipynb",
        schedule="*/15 * * * * *", concurrencyPolicy="Replace", parameters={"seconds": 120},
    )  # fmt: skip
    event = wait_schedule_event(api, run_namespace, "replaced", "Replaced", timeout=90)
    old = event["message"].split()[1]
    patch_schedule(api, run_namespace, "replaced", suspend=True)
    wait.wait_gone(api, RUNS.format(run_namespace), old, timeout=60, what=f"run {old}")
    pods = f"/api/v1/namespaces/{run_namespace}/pods"
    for pod in kube.get(api, pods, labelSelector=f"kubemill.dev/run={old}")["items"]:
        wait.wait_gone(api, pods, pod["metadata"]["name"], timeout=90, what=f"{old}'s pod")
    # The replaced run was stopped with SIGTERM, and its pod is gone only once the runner has
    # saved and exited: its output says it was terminated and how far it got.
    notebook = s3_json(s3_admin, f"s3://{results_bucket}/runs/{run_namespace}/{old}/output.ipynb")
    assert "Execution failed: Terminated" in "".join(notebook["cells"][0]["source"])
    assert [r["metadata"]["name"] for r in runs_of(api, run_namespace, "replaced")] != [old]


def test_after_operator_downtime_only_the_newest_missed_slot_runs(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
    operator: Any,
) -> None:
    # Every second, so the seconds a restart takes are several missed slots. The notebook does
    # not exist: each run fails at once, without a kernel, which keeps the machine quiet.
    create_schedule(
        api, run_namespace, "downtime", f"s3://{results_bucket}/notebooks/missing.ipynb",
        schedule="* * * * * *", concurrencyPolicy="Allow", failedRunsHistoryLimit=100,
    )  # fmt: skip
    wait_runs(api, run_namespace, "downtime", 2)
    operator.stop()
    events = f"/api/v1/namespaces/{run_namespace}/events"
    since = wait.resource_version(api, events)
    before = runs_of(api, run_namespace, "downtime")
    last = max(slot_of(r) for r in before)
    # Down for at least three slots. A restart alone takes under a second, and nothing in the
    # cluster marks the moment slots have passed while the operator is down: the clock does.
    down_until = last + datetime.timedelta(seconds=4)
    time.sleep(max(0.0, (down_until - datetime.datetime.now(datetime.UTC)).total_seconds()))
    operator.start()
    missed = wait.wait_for(
        api, events,
        lambda e, o: e == "ADDED" and o.get("reason") == "MissedSchedules"
        and o["involvedObject"].get("name") == "downtime",
        since=since, timeout=60, what="a MissedSchedules Event after the restart",
    )  # fmt: skip
    patch_schedule(api, run_namespace, "downtime", suspend=True)
    wait.wait_for(
        api, SCHEDULES.format(run_namespace), wait.has_condition("Suspended"),
        name="downtime", timeout=30, what="the schedule suspended",
    )  # fmt: skip
    skipped = int(missed["message"].split()[1])
    assert skipped >= 3, missed["message"]
    newest = last + datetime.timedelta(seconds=skipped + 1)
    assert missed["message"].startswith(
        f"skipped {skipped} missed slot{'s' if skipped > 1 else ''} before "
        f"{newest:%Y-%m-%dT%H:%M:%SZ}"
    ), (missed["message"], last)
    after = sorted(slot_of(r) for r in runs_of(api, run_namespace, "downtime") if slot_of(r) > last)
    # The skipped slots have no run; the newest missed one ran, then the schedule went on.
    assert after[0] == newest, (last, skipped, after)


def test_backfill_twice_creates_each_run_once_and_trigger_runs_now(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
) -> None:
    create_schedule(
        api, run_namespace, "hourly", f"s3://{results_bucket}/notebooks/params.ipynb",
        schedule="15 * * * *", timeZone="Europe/Berlin", suspend=True,
        successfulRunsHistoryLimit=20, parameters={"region": "{{ scheduledDate }}"},
    )  # fmt: skip
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    # Both ends are included: three hours less a second hold exactly three :15 slots.
    start = (now - datetime.timedelta(hours=3, seconds=-1)).isoformat()
    end = now.isoformat()

    def kubemill(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBEMILL, *args, "-n", run_namespace, "--kubeconfig",
             str(kubemill_installed.kubeconfig)],
            text=True, capture_output=True, timeout=120, check=False,
        )  # fmt: skip

    first = kubemill("backfill", "hourly", "--from", start, "--to", end)
    assert first.returncode == 0, first.stderr
    assert "created 3, 0 existed already" in first.stdout
    second = kubemill("backfill", "hourly", "--from", start, "--to", end)
    assert second.returncode == 0, second.stderr
    assert "created 0, 3 existed already" in second.stdout
    runs = runs_of(api, run_namespace, "hourly")
    assert len(runs) == 3
    assert {r["metadata"]["labels"]["kubemill.dev/origin"] for r in runs} == {"backfill"}
    assert all(slot_of(r).minute == 15 for r in runs)

    triggered = kubemill("trigger", "hourly")
    assert triggered.returncode == 0, triggered.stderr
    name = triggered.stdout.split()[0].split("/")[1]
    run = wait_run(api, run_namespace, name, "Succeeded")
    assert run["metadata"]["labels"]["kubemill.dev/origin"] == "manual"
    assert len(run["status"]["results"]["region"]) == len("2027-01-01")
    for backfilled in runs:
        wait_run(api, run_namespace, backfilled["metadata"]["name"], "Succeeded")
    refused = kubemill("backfill", "hourly", "--from", "2020-01-01", "--to", "2020-12-31")
    assert refused.returncode == 2 and "more than --max 100" in refused.stderr
    # Switched to a workflowTemplate, the schedule's slots that ran as runs have run.
    template = {"spec": {"steps": [{"name": "only", "runTemplate": {"spec": {
        "notebook": f"s3://{results_bucket}/notebooks/params.ipynb"}}}]}}  # fmt: skip
    kube.request(
        api, "PATCH", f"{SCHEDULES.format(run_namespace)}/hourly",
        body=[{"op": "remove", "path": "/spec/runTemplate"},
              {"op": "add", "path": "/spec/workflowTemplate", "value": template}],
        content_type="application/json-patch+json",
    )  # fmt: skip
    switched = kubemill("backfill", "hourly", "--from", start, "--to", end)
    assert switched.returncode == 0, switched.stderr
    assert "created 0, 3 existed already" in switched.stdout


POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
BINDINGS = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"


def _ready(reason: str) -> wait.Predicate:
    def check(event: str, obj: dict[str, Any]) -> bool:
        ready = wait.condition(obj, "Ready")
        return event != "DELETED" and ready is not None and ready.get("reason") == reason

    return check


def test_a_schedule_whose_runs_are_refused_is_not_ready_until_its_template_is_fixed(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
) -> None:
    """A rule the CRD cannot know (here a cluster's own admission policy: runs need a
    cost-center label) refuses every run the template makes: the schedule is Ready=False with
    the API server's message, not a healthy-looking schedule that never runs anything."""
    name = f"e2e-cost-center-{run_namespace}"[:63].rstrip("-")
    rule = "has(object.metadata.labels) && 'cost-center' in object.metadata.labels"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["kubemill.dev"], "apiVersions": ["*"], "operations": ["CREATE"],
                "resources": ["notebookruns"],
            }]},
            "validations": [{"expression": rule, "message": "runs here need a cost-center label"}],
        },
    }  # fmt: skip
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": run_namespace},
            }},
        },
    }  # fmt: skip
    kube.request(api, "POST", POLICIES, body=policy)
    kube.request(api, "POST", BINDINGS, body=binding)
    try:
        _await_refusal(api, run_namespace)
        create_schedule(
            api, run_namespace, "billed", f"s3://{results_bucket}/notebooks/params.ipynb",
            schedule="*/2 * * * * *", concurrencyPolicy="Forbid",
        )  # fmt: skip
        refused = wait.wait_for(
            api, SCHEDULES.format(run_namespace), _ready("InvalidRunTemplate"), name="billed",
            timeout=60, what="the schedule Ready=False with reason InvalidRunTemplate",
        )  # fmt: skip
        ready = wait.condition(refused, "Ready")
        assert ready is not None and ready["status"] == "False"
        assert "runs here need a cost-center label" in ready["message"], ready
        assert runs_of(api, run_namespace, "billed") == []
        event = wait_schedule_event(api, run_namespace, "billed", "RunRejected")
        assert "cost-center" in event["message"]
        # Fixed: the next slot's run is accepted and the schedule is Ready again.
        kube.merge_patch(
            api, f"{SCHEDULES.format(run_namespace)}/billed",
            {"spec": {"runTemplate": {"metadata": {"labels": {"cost-center": "ml"}}}}},
        )  # fmt: skip
        wait.wait_for(
            api, SCHEDULES.format(run_namespace), wait.has_condition("Ready"), name="billed",
            timeout=60, what="the schedule Ready again",
        )  # fmt: skip
        wait_runs(api, run_namespace, "billed", 1)
        patch_schedule(api, run_namespace, "billed", suspend=True)
    finally:
        kube.request(api, "DELETE", f"{BINDINGS}/{name}")
        kube.request(api, "DELETE", f"{POLICIES}/{name}")


def _await_refusal(api: client.ApiClient, namespace: str, timeout: float = 30) -> None:
    """A new admission policy takes effect a moment after it is created, and nothing reports
    when: probe it with dry runs until it refuses."""
    probe = {
        "apiVersion": "kubemill.dev/v1alpha1", "kind": "NotebookRun",
        "metadata": {"name": "probe"}, "spec": {"notebook": "s3://b/n.ipynb"},
    }  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.request(api, "POST", RUNS.format(namespace), body=probe, query={"dryRun": "All"})
        except ApiException as exc:
            if exc.status == 422:
                return
            raise
        time.sleep(0.5)
    raise AssertionError("the test's admission policy never took effect")


def test_a_workflow_template_makes_a_workflow_per_trigger_with_the_variables_rendered(
    api: client.ApiClient,
    kubemill_installed: Cluster,
    run_namespace: str,
    results_bucket: str,
) -> None:
    """A schedule with a workflowTemplate: a trigger makes one NotebookWorkflow, owned and
    labelled as a run would be, whose first step got the slot's date and whose second took the
    first's result."""
    values = f"s3://{results_bucket}/notebooks/values.ipynb"
    body = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookSchedule",
        "metadata": {"name": "flow"},
        "spec": {
            # Suspended: only the trigger below makes a workflow.
            "schedule": "0 3 * * *",
            "suspend": True,
            "workflowTemplate": {
                "metadata": {"labels": {"team": "e2e"}},
                "spec": {
                    "steps": [
                        {"name": "first", "runTemplate": {"spec": {
                            "notebook": values, "parameters": {"value": "{{ scheduledDate }}"},
                        }}},
                        {"name": "second", "runTemplate": {"spec": {
                            "notebook": values,
                            "parametersFrom": [
                                {"name": "value", "stepRef": {"name": "first", "result": "repr"}}
                            ],
                        }}},
                    ]
                },
            },
        },
    }  # fmt: skip
    schedule = kube.request(api, "POST", SCHEDULES.format(run_namespace), body=body)
    triggered = subprocess.run(
        [KUBEMILL, "trigger", "flow", "-n", run_namespace, "--kubeconfig",
         str(kubemill_installed.kubeconfig)],
        text=True, capture_output=True, timeout=180, check=False,
    )  # fmt: skip
    assert triggered.returncode == 0, triggered.stderr
    resource, name = triggered.stdout.split()[0].split("/")
    assert resource == "notebookworkflow.kubemill.dev"
    assert name.startswith("flow-manual-") and len(name) == len("flow-manual-") + 8
    done = wait.wait_for(
        api, WORKFLOWS.format(run_namespace),
        lambda e, o: e != "DELETED" and (o.get("status") or {}).get("phase") in TERMINAL,
        name=name, timeout=600, what=f"workflow {name} to end",
    )  # fmt: skip
    assert done["status"]["phase"] == "Succeeded", done["status"]
    labels = done["metadata"]["labels"]
    assert (labels["kubemill.dev/schedule"], labels["kubemill.dev/origin"], labels["team"]) == (
        "flow",
        "manual",
        "e2e",
    )
    owner = done["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "NotebookSchedule",
        "flow",
        schedule["metadata"]["uid"],
    )
    date = done["metadata"]["annotations"]["kubemill.dev/scheduled-time"][:10]
    first = kube.get(api, f"{RUNS.format(run_namespace)}/{name}-first")
    assert first["spec"]["parameters"] == {"value": date}
    assert first["status"]["results"]["repr"] == repr(date)
    second = kube.get(api, f"{RUNS.format(run_namespace)}/{name}-second")
    assert second["status"]["results"]["repr"] == repr(repr(date))
    # The workflow is the schedule's child; no NotebookRun of its own.
    assert runs_of(api, run_namespace, "flow") == []
    listed = kube.get(api, WORKFLOWS.format(run_namespace),
                      labelSelector="kubemill.dev/schedule=flow")  # fmt: skip
    assert [w["metadata"]["name"] for w in listed["items"]] == [name]
    # Then on its own slots: the next workflow comes from the schedule, not a trigger.
    kube.merge_patch(
        api, f"{SCHEDULES.format(run_namespace)}/flow",
        {"spec": {"schedule": "*/10 * * * * *", "suspend": False}},
    )  # fmt: skip
    slotted = wait.wait_for(
        api, WORKFLOWS.format(run_namespace),
        lambda e, o: e != "DELETED"
        and (o["metadata"].get("labels") or {}).get("kubemill.dev/origin") == "schedule"
        and (o.get("status") or {}).get("phase") in TERMINAL,
        label_selector="kubemill.dev/schedule=flow", timeout=600,
        what="a workflow of the schedule's own slot to end",
    )  # fmt: skip
    kube.merge_patch(api, f"{SCHEDULES.format(run_namespace)}/flow", {"spec": {"suspend": True}})
    assert slotted["status"]["phase"] == "Succeeded", slotted["status"]
    slot = slotted["metadata"]["annotations"]["kubemill.dev/scheduled-time"]
    moment = parse_rfc3339(slot)
    assert moment is not None and slotted["metadata"]["name"] == slot_run_name("flow", moment)
    step = kube.get(api, f"{RUNS.format(run_namespace)}/{slotted['metadata']['name']}-first")
    assert step["spec"]["parameters"] == {"value": slot[:10]}
