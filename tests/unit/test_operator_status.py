"""A run's status from its Job, pods and the runner's summary: table tests, no cluster."""

from __future__ import annotations

import json
from typing import Any

from kubemill.operator.handlers import merge_patch
from kubemill.operator.status import derive_status, transitions

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
    timed_out = derive_status(RUN, job(("Failed", "DeadlineExceeded")), [], T1)
    assert timed_out["reason"] == "RunTimeout"
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
