"""A run's status from its Job, pods and the runner's summary: table tests, no cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubemill.operator.meta import merge_patch
from kubemill.operator.status import Problem, derive_status, transitions
from kubemill.runner import __version__
from kubemill.runner.contract import ExitCode, build_summary

RUN: dict[str, Any] = {
    "metadata": {"name": "r", "namespace": "ns", "uid": "u", "generation": 1},
    "spec": {"notebook": "s3://b/n.ipynb", "retries": 1},
    "status": {},
}
T0, T1 = "2026-11-28T10:00:00Z", "2026-11-28T10:03:12Z"


def job(*conditions: tuple[str, str], deleting: bool = False, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "r-1234abcd", "uid": "job-uid"}
    if deleting:
        meta["deletionTimestamp"] = T1
    return {
        "metadata": meta,
        "status": {
            "startTime": T0,
            **status,
            "conditions": [
                {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": T1}
                for kind, reason in conditions
            ],
        },
    }


def pod(name: str, created: str, summary: dict[str, Any] | None, phase: str) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if summary is not None:
        state = {"terminated": {"exitCode": summary["exitCode"], "message": json.dumps(summary)}}
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {"phase": phase, "containerStatuses": [{"name": "runner", "state": state}]},
    }


def conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_success_carries_results_and_duration() -> None:
    summary = {"exitCode": 0, "outputUrl": "s3://o/output.ipynb", "results": {"rows": 3}}
    status = derive_status(RUN, job(("Complete", "")), [pod("p1", T0, summary, "Succeeded")], T1)
    assert (status["phase"], status["reason"]) == ("Succeeded", "Succeeded")
    assert status["results"] == {"rows": 3} and status["outputUrl"] == "s3://o/output.ipynb"
    assert status["duration"] == "3m12s"
    assert conditions(status) == {
        "JobCreated": "True", "Running": "False", "Succeeded": "True", "Failed": "False"
    }  # fmt: skip


def test_an_early_exit_succeeds_and_the_message_says_where_it_stopped() -> None:
    early = {"cell": 3, "cellId": "c1", "code": 0, "message": "the notebook stopped early at x"}
    summary = {"exitCode": 0, "earlyExit": early}
    status = derive_status(RUN, job(("Complete", "")), [pod("p1", T0, summary, "Succeeded")], T1)
    assert (status["phase"], status["reason"]) == ("Succeeded", "Succeeded")
    assert status["message"] == "the notebook ran; the notebook stopped early at x"
    plain = derive_status(
        RUN, job(("Complete", "")), [pod("p1", T0, {"exitCode": 0}, "Succeeded")], T1
    )
    assert plain["message"] == "the notebook ran"


def test_the_last_attempt_speaks_and_earlier_results_do_not_linger() -> None:
    first = {"exitCode": 10, "results": {"partial": 1}, "failure": {"reason": "CellError"}}
    last = {
        "exitCode": 10,
        "results": {},
        "failure": {
            "reason": "CellError",
            "message": "cell In [3] raised KeyError: 'x'",
            "cell": 4,
        },
    }
    status = derive_status(
        {**RUN, "status": {"results": {"partial": 1}}},
        job(("Failed", "BackoffLimitExceeded"), failed=2),
        [pod("p2", T1, last, "Failed"), pod("p1", T0, first, "Failed")],
        T1,
    )
    assert status["reason"] == "CellError"
    assert status["message"].endswith("(after 2 attempts)")
    assert status["results"] == {}
    assert status["failure"]["cell"] == 4
    assert status["attempts"] == 2


def test_deadline_is_a_run_timeout_and_deleted_jobs_are_named() -> None:
    ran = pod("p", T0, None, "Failed")
    ran["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 143}}
    timed_out = derive_status(RUN, job(("Failed", "DeadlineExceeded")), [ran], T1)
    assert timed_out["reason"] == "RunTimeout"
    # The runner's own summary says it ran, whatever became of its pod.
    summary = {"exitCode": 12, "failure": {"reason": "RunTimeout", "message": "m"}}
    saved = derive_status(
        RUN, job(("Failed", "DeadlineExceeded")), [pod("p", T0, summary, "Failed")], T1
    )
    assert saved["reason"] == "RunTimeout"
    deleted = derive_status(RUN, job(deleting=True, active=1), [], T1)
    assert (deleted["phase"], deleted["reason"]) == ("Failed", "JobDeleted")


def test_a_pod_that_cannot_start_says_why() -> None:
    waiting = {
        "metadata": {"name": "p", "creationTimestamp": T0},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "runner",
                    "state": {
                        "waiting": {
                            "reason": "CreateContainerConfigError",
                            "message": 'secret "db" not found',
                        }
                    },
                }
            ],
        },
    }
    status = derive_status(RUN, job(active=1), [waiting], T1)
    assert (status["phase"], status["reason"]) == ("Pending", "PodProblem")
    assert 'secret "db" not found' in status["message"]
    before = {"phase": "Pending", "reason": "Pending", "jobName": "r-1234abcd"}
    assert transitions(before, status) == [("Warning", "PodProblem", status["message"])]


def test_terminal_is_final_and_a_vanished_job_keeps_job_created() -> None:
    done = derive_status(RUN, job(("Complete", "")), [], T0)
    later = derive_status({**RUN, "status": done}, None, [], T1)
    assert later["phase"] == "Succeeded"
    assert conditions(later)["JobCreated"] == "True"
    # lastTransitionTime moves only when a condition's status changes.
    assert later["conditions"] == done["conditions"]
    again = derive_status({**RUN, "status": done}, job(("Failed", "X")), [], T1)
    assert again["phase"] == "Succeeded"


def test_merge_patch_removes_keys_at_every_depth() -> None:
    old = {"results": {"a": 1, "b": 2}, "failure": {"reason": "X"}, "phase": "Running"}
    new = {"results": {"a": 1}, "phase": "Failed"}
    assert merge_patch(old, new) == {"failure": None, "results": {"b": None}, "phase": "Failed"}
    assert merge_patch(new, new) == {}


def test_an_oom_kill_is_named_even_when_the_runner_survived_to_blame_the_kernel() -> None:
    """The memory cgroup usually kills the kernel, not the runner, which then reports
    KernelDied; the runtime's OOMKilled is what the user can act on."""
    spec = {**RUN["spec"], "resources": {"limits": {"memory": "256Mi"}}}
    run = {**RUN, "spec": spec}
    survived = {
        "status": "Failed",
        "reason": "KernelDied",
        "exitCode": 13,
        "outputUrl": "s3://b/out/output.ipynb",
        "failure": {"reason": "KernelDied", "message": "the kernel died", "cell": 3},
    }
    oom = pod("p", T0, survived, "Failed")
    oom["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] = "OOMKilled"
    status = derive_status(run, job(("Failed", "BackoffLimitExceeded")), [oom], T1)
    assert (status["phase"], status["reason"]) == ("Failed", "OOMKilled")
    assert "(256Mi)" in status["message"] and "cell 3" in status["message"]
    assert status["failure"]["cell"] == 3 and status["failure"]["reason"] == "OOMKilled"
    assert status["outputUrl"] == "s3://b/out/output.ipynb"

    killed = {"metadata": {"name": "p", "creationTimestamp": T0}, "status": {"phase": "Failed"}}
    killed["status"]["containerStatuses"] = [
        {"name": "runner", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    ]
    status = derive_status(RUN, job(("Failed", "BackoffLimitExceeded")), [killed], T1)
    assert status["reason"] == "OOMKilled"
    assert "limits.memory" in status["message"] and "cell" not in status["message"]


def waiting_pod(
    uid: str, created: str, reason: str = "ContainerCreating", message: str = ""
) -> dict[str, Any]:
    waiting = {"reason": reason, **({"message": message} if message else {})}
    return {
        "metadata": {"name": f"pod-{uid}", "uid": uid, "creationTimestamp": created},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"name": "runner", "state": {"waiting": waiting}}],
        },
    }


MOUNT = Problem(
    "pod-1", "Pod", "FailedMount",
    'MountVolume.SetUp failed for volume "notebook" : configmap "nb" not found', T1,
)  # fmt: skip
CREATE = Problem(
    "job-uid", "Job", "FailedCreate",
    'Error creating: pods "r-1234abcd-" is forbidden: error looking up service account ns/sa: '
    'serviceaccount "sa" not found', T1,
)  # fmt: skip


def test_a_failed_create_names_the_missing_object_while_the_job_has_no_pod() -> None:
    status = derive_status(RUN, job(active=0), [], T1, [CREATE])
    assert (status["phase"], status["reason"]) == ("Pending", "PodNotCreated")
    assert 'serviceaccount "sa" not found' in status["message"]
    before = {"phase": "Pending", "reason": "Pending", "jobName": "r-1234abcd"}
    assert transitions(before, status) == [("Warning", "PodNotCreated", status["message"])]
    # Once a pod exists (the ServiceAccount was created), the old Event no longer holds.
    later = derive_status(RUN, job(active=1), [waiting_pod("p", T1)], T1, [CREATE])
    assert (later["reason"], later["message"]) == ("Pending", "waiting for the runner pod to start")
    # A Job that cannot create its second attempt's pod: the Event is newer than every pod.
    first = pod("p1", T0, {"exitCode": 10, "failure": {"reason": "CellError"}}, "Failed")
    retry = derive_status(RUN, job(failed=1), [first], T1, [CREATE])
    assert retry["reason"] == "PodNotCreated"
    # Another Job's Event (a namesake's) is not this run's problem.
    other = Problem("other-uid", "Job", "FailedCreate", "quota", T1)
    assert derive_status(RUN, job(), [], T1, [other])["reason"] == "Pending"


def test_a_failed_mount_holds_only_while_the_newest_pod_has_not_run() -> None:
    status = derive_status(RUN, job(active=1), [waiting_pod("pod-1", T0)], T1, [MOUNT])
    assert (status["phase"], status["reason"]) == ("Pending", "PodProblem")
    assert status["message"] == f"FailedMount: {MOUNT.message}"
    running = waiting_pod("pod-1", T0)
    running["status"] = {
        "phase": "Running",
        "containerStatuses": [{"name": "runner", "state": {"running": {"startedAt": T1}}}],
    }
    assert derive_status(RUN, job(active=1), [running], T1, [MOUNT])["reason"] == "Running"
    # The pod's own status says more than an Event: it wins.
    secret = waiting_pod("pod-1", T0, "CreateContainerConfigError", 'secret "db" not found')
    both = derive_status(RUN, job(active=1), [secret], T1, [MOUNT])
    assert both["message"] == 'CreateContainerConfigError: secret "db" not found'


def test_a_deadline_before_the_notebook_started_is_a_start_timeout_naming_the_cause() -> None:
    run = {**RUN, "spec": {**RUN["spec"], "timeout": "30s"}}
    secret = waiting_pod("pod-1", T0, "CreateContainerConfigError", 'secret "db" not found')
    pending = derive_status(run, job(active=1), [secret], T0)
    assert pending["reason"] == "PodProblem"
    # The job controller stops the pod at the deadline: the last problem seen is kept.
    stopped = waiting_pod("pod-1", T0)
    stopped["status"]["phase"] = "Failed"
    stopped["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}
    }
    # In between, the pod is stopped and the Job not failed yet: the problem stays named.
    stopping = derive_status({**run, "status": pending}, job(active=1), [stopped], T1)
    assert (stopping["reason"], stopping["message"]) == ("PodProblem", pending["message"])
    failed = derive_status(
        {**run, "status": stopping}, job(("Failed", "DeadlineExceeded")), [stopped], T1
    )
    assert (failed["phase"], failed["reason"]) == ("Failed", "StartTimeout")
    assert "never started" in failed["message"] and "(30s)" in failed["message"]
    assert 'secret "db" not found' in failed["message"]
    assert failed["failure"]["reason"] == "StartTimeout"
    assert transitions(pending, failed) == [("Warning", "StartTimeout", failed["message"])]
    # Seen only now (the operator was down): the problem still on the pod, or in the Events.
    direct = derive_status(run, job(("Failed", "DeadlineExceeded")), [secret], T1)
    assert direct["reason"] == "StartTimeout" and 'secret "db"' in direct["message"]
    nothing = derive_status(run, job(("Failed", "DeadlineExceeded")), [], T1, [CREATE])
    assert nothing["reason"] == "StartTimeout" and 'serviceaccount "sa"' in nothing["message"]
    # A run that was Running had started: a deadline then is the notebook's.
    was_running = {**pending, "phase": "Running", "reason": "Running"}
    assert (
        derive_status({**run, "status": was_running}, job(("Failed", "DeadlineExceeded")),
                      [stopped], T1)["reason"]
        == "RunTimeout"
    )  # fmt: skip


def test_a_runner_without_a_summary_passes_on_the_runtimes_message() -> None:
    failed = pod("p", T0, None, "Failed")
    failed["status"]["containerStatuses"][0]["state"] = {
        "terminated": {
            "exitCode": 128,
            "reason": "StartError",
            "message": 'exec: "kubemill": argument list too long',
        }
    }
    status = derive_status(RUN, job(("Failed", "BackoffLimitExceeded")), [failed], T1)
    assert status["reason"] == "RunnerFailed"
    assert status["message"] == (
        "the runner exited with code 128 without a summary (BackoffLimitExceeded): "
        'StartError: exec: "kubemill": argument list too long'
    )
    plain = pod("p", T0, None, "Failed")
    plain["status"]["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 1, "reason": "Error"}
    }
    message = derive_status(RUN, job(("Failed", "BackoffLimitExceeded")), [plain], T1)["message"]
    assert message == "the runner exited with code 1 without a summary (BackoffLimitExceeded)"


@pytest.mark.parametrize(
    ("terminated", "said"),
    [
        (
            {
                "exitCode": 128,
                "reason": "StartError",
                "message": 'exec: "kubemill": executable file not found in $PATH',
            },
            'StartError: exec: "kubemill": executable file not found in $PATH',
        ),
        # A kubemill script whose interpreter is not there (a copied venv).
        (
            {
                "exitCode": 128,
                "reason": "StartError",
                "message": 'exec: "kubemill": No such file or directory',
            },
            'StartError: exec: "kubemill": No such file or directory',
        ),
        # A shell between the runtime and kubemill (an image's entrypoint script).
        ({"exitCode": 127, "reason": "Error"}, "exit code 127: command not found"),
    ],
)
def test_an_image_without_kubemill_says_so_and_how_to_fix_it(
    terminated: dict[str, Any], said: str
) -> None:
    failed = pod("p", T0, None, "Failed")
    failed["status"]["containerStatuses"][0]["state"] = {"terminated": terminated}
    failed["status"]["containerStatuses"][0]["image"] = "python:3.12-slim"
    status = derive_status(RUN, job(("Failed", "BackoffLimitExceeded")), [failed], T1)
    assert status["reason"] == "RunnerNotInImage"
    assert status["message"] == (
        f"the image python:3.12-slim has no kubemill runner ({said}): build it FROM kubemill's "
        f"runner image or install kubemill in it (pip install 'kubemill=={__version__}'); "
        "`kubemill image check IMAGE` lists everything it lacks"
    )
    assert status["failure"] == {"reason": "RunnerNotInImage", "message": status["message"]}


def test_a_runner_that_ran_and_failed_otherwise_is_not_blamed_on_the_image() -> None:
    for terminated in (
        {"exitCode": 128, "reason": "StartError", "message": "permission denied"},
        {"exitCode": 1, "reason": "Error", "message": "no such file or directory"},
    ):
        failed = pod("p", T0, None, "Failed")
        failed["status"]["containerStatuses"][0]["state"] = {"terminated": terminated}
        status = derive_status(RUN, job(("Failed", "BackoffLimitExceeded")), [failed], T1)
        assert status["reason"] == "RunnerFailed", terminated


def ended(message: str, code: int) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "reason": "Error", "message": message}}
    return {
        "metadata": {"name": "p", "creationTimestamp": T0},
        "status": {"phase": "Failed", "containerStatuses": [{"name": "runner", "state": state}]},
    }


def test_what_the_runner_writes_is_what_the_status_shows() -> None:
    # Both sides of the contract at once: the runner's own builder, the operator's reader.
    message = build_summary(
        exit_code=ExitCode.CELL_ERROR,
        output_url="s3://o/output.ipynb",
        results={"rows": 3, "none": None, "big": "x" * 5000},
        failure={"reason": "CellError", "message": "cell In [2] raised ValueError: v", "cell": 2},
        duration_seconds=1.5,
    ).decode()
    status = derive_status(RUN, job(("Failed", "BackoffLimitExceeded")), [ended(message, 10)], T1)
    assert (status["reason"], status["message"]) == (
        "CellError", "cell In [2] raised ValueError: v (after 2 attempts)"
    )  # fmt: skip
    assert status["failure"] == {
        "reason": "CellError", "message": "cell In [2] raised ValueError: v", "cell": 2
    }  # fmt: skip
    assert status["outputUrl"] == "s3://o/output.ipynb"
    assert status["results"] == {"rows": 3, "none": None}
    assert status["resultsTruncated"] == ["big"]


def test_a_summary_the_kubelet_cut_short_is_no_summary() -> None:
    message = json.dumps({"exitCode": 10, "results": {"t": "x" * 5000}})[:4096]
    status = derive_status(RUN, job(("Failed", "BackoffLimitExceeded")), [ended(message, 10)], T1)
    assert status["reason"] == "RunnerFailed"
    assert "results" not in status
