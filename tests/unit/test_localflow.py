"""`kubemill workflow`'s pure parts: a workflow carried out on one machine by the operator's own
decisions, its status from runner summaries, options, JUnit XML and the graph."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from kubemill.cli import build_parser, main
from kubemill.cli.localflow import (
    Local,
    advance,
    definitions,
    ended_status,
    expand,
    interrupted,
    load_workflow,
    only,
    override,
    parameters_text,
    retry,
    run_environment,
    run_folder,
    runner_args,
    started_status,
    stranded,
    upstream_text,
)
from kubemill.cli.schedule import UsageError
from kubemill.cli.workflow import _identity
from kubemill.cli.workflow_report import graph, junit_xml, redraw, summary_lines, table_lines
from kubemill.operator.errors import InvalidSpec
from kubemill.operator.workflows import RETRY
from kubemill.runner.contract import ExitCode, build_summary

T0, T1, T2 = "2027-01-12T06:00:00Z", "2027-01-12T06:00:05Z", "2027-01-12T06:01:10Z"


def step(name: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"notebook": f"{name}.ipynb"}
    for key in (
        "parameters", "parametersFrom", "timeout", "startTimeout", "cellTimeout", "kernel", "html",
    ):  # fmt: skip
        if key in extra:
            spec[key] = extra.pop(key)
    return {"name": name, "runTemplate": {"spec": spec}, **extra}


def manifest(*steps: dict[str, Any], final: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"steps": list(steps)}
    if final:
        spec["finally"] = list(final)
    doc = {"apiVersion": "kubemill.dev/v1alpha1", "kind": "NotebookWorkflow"}
    return load_workflow([{**doc, "metadata": {"name": "wf"}, "spec": spec}], "wf.yaml")


def summary(code: ExitCode, folder: str, results: dict[str, Any] | None = None) -> str:
    failure = None
    if code != ExitCode.OK:
        failure = {
            "reason": code.reason,
            "message": "cell In [3] raised AssertionError: rows is 3, expected 4",
            "cell": 2,
            "executionCount": 3,
            "ename": "AssertionError",
            "evalue": "rows is 3, expected 4",
            "traceback": "Traceback …\nAssertionError: rows is 3, expected 4",
        }
    return build_summary(
        exit_code=code,
        output_url=f"{folder}output.ipynb",
        results=results or {},
        failure=failure,
        duration_seconds=65.0,
    ).decode()


def finish(local: Local, name: str, code: ExitCode, results: dict[str, Any] | None = None) -> None:
    run = local.runs[name]
    run["status"] = started_status(run, T0)
    folder = run_folder("/out", "default", name)
    run["status"] = ended_status(run, summary(code, folder, results), int(code), T0, T2)


DIAMOND = (
    step("extract"),
    step(
        "by-region",
        forEach={"parameter": "region", "fromStep": {"name": "extract", "result": "regions"}},
    ),
    step(
        "totals",
        parametersFrom=[{"name": "rows", "stepRef": {"name": "extract", "result": "rows"}}],
    ),
    step("report", dependsOn=["by-region", "totals"]),
)


def names(starts: Any) -> list[str]:
    return [s.run["metadata"]["name"] for s in starts]


def test_a_diamond_starts_each_run_when_the_operator_would() -> None:
    local = Local(manifest(*DIAMOND, final=(step("notify"),)))
    assert names(advance(local, T0, [])) == ["wf-extract"]
    # totals' run exists already, waiting for extract's, as on a cluster.
    assert local.runs["wf-totals"]["status"]["phase"] == "Waiting"
    finish(local, "wf-extract", ExitCode.OK, {"regions": ["eu", "us"], "rows": 3})
    ready = advance(local, T1, [])
    assert names(ready) == ["wf-totals", "wf-by-region-0", "wf-by-region-1"]
    assert json.loads(parameters_text(ready[0]) or "") == {"rows": 3}
    assert json.loads(upstream_text(ready[0]) or "")["upstream"][0]["name"] == "wf-extract"
    assert json.loads(parameters_text(ready[1]) or "") == {"region": "eu"}
    assert upstream_text(ready[1]) is None
    for name in ("wf-totals", "wf-by-region-0", "wf-by-region-1"):
        finish(local, name, ExitCode.OK)
    assert names(advance(local, T1, [])) == ["wf-report"]
    finish(local, "wf-report", ExitCode.OK)
    assert names(advance(local, T1, [])) == ["wf-notify"]
    finish(local, "wf-notify", ExitCode.OK)
    assert advance(local, T2, []) == []
    assert local.phase == "Succeeded"


def test_runs_started_or_still_going_are_not_started_again() -> None:
    local = Local(manifest(step("a"), step("b")))
    ready = advance(local, T0, [])
    assert names(ready) == ["wf-a", "wf-b"]
    assert names(advance(local, T0, ["wf-a"])) == ["wf-b"]
    local.runs["wf-b"]["status"] = started_status(local.runs["wf-b"], T0)
    assert local.runs["wf-b"]["status"]["phase"] == "Running"
    assert names(advance(local, T0, ["wf-a"])) == []


def test_an_upstream_failure_skips_what_needs_it_and_finally_runs() -> None:
    local = Local(manifest(*DIAMOND, final=(step("notify"),)))
    advance(local, T0, [])
    finish(local, "wf-extract", ExitCode.CELL_ERROR)
    assert names(advance(local, T1, [])) == ["wf-notify"]
    steps = {e["name"]: e for e in local.workflow["status"]["steps"]}
    assert steps["extract"]["phase"] == "Failed"
    # totals' run waited for extract's, and ends UpstreamFailed: the step is Skipped.
    assert (steps["totals"]["phase"], steps["totals"]["reason"]) == ("Skipped", "UpstreamFailed")
    assert local.runs["wf-totals"]["status"]["reason"] == "UpstreamFailed"
    assert steps["report"]["phase"] == "Skipped"
    finish(local, "wf-notify", ExitCode.OK)
    advance(local, T2, [])
    assert local.phase == "Failed"
    assert local.workflow["status"]["reason"] == "StepFailed"


@pytest.mark.parametrize(
    ("code", "phase", "reason"),
    [
        (ExitCode.OK, "Succeeded", "Succeeded"),
        (ExitCode.CELL_ERROR, "Failed", "CellError"),
        (ExitCode.RUN_TIMEOUT, "Failed", "RunTimeout"),
    ],
)
def test_a_run_status_is_what_the_run_controller_writes_from_the_summary(
    code: ExitCode, phase: str, reason: str
) -> None:
    local = Local(manifest(step("a")))
    advance(local, T0, [])
    finish(local, "wf-a", code, {"rows": 3})
    status = local.runs["wf-a"]["status"]
    assert (status["phase"], status["reason"]) == (phase, reason)
    assert status["outputUrl"] == "/out/default/wf-a/output.ipynb"
    assert status["results"] == {"rows": 3}
    assert (status["startTime"], status["completionTime"], status["duration"]) == (T0, T2, "1m10s")
    assert status["jobName"] == "local"
    if phase == "Failed":
        assert status["failure"]["ename"] == "AssertionError"


def test_a_runner_that_left_no_summary_failed() -> None:
    local = Local(manifest(step("a")))
    advance(local, T0, [])
    run = local.runs["wf-a"]
    run["status"] = ended_status(run, None, 0, T0, T1)
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "RunnerFailed")
    assert "without a summary" in run["status"]["message"]
    run["status"] = {}
    run["status"] = ended_status(run, None, -15, T0, T1)
    assert "exited with code 143 without a summary" in run["status"]["message"]


def test_a_secret_parameter_fails_the_run_unless_given_here() -> None:
    secret = {"name": "token", "secretKeyRef": {"name": "api", "key": "token"}}
    local = Local(manifest(step("a", parametersFrom=[secret])))
    assert advance(local, T0, []) == []
    status = local.runs["wf-a"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
    assert "--secret-param token=ENV_VAR" in status["message"]
    local = Local(manifest(step("a", parametersFrom=[secret])))
    [start] = advance(local, T0, [], {"token": "API_TOKEN"})
    args = runner_args(start, "a.ipynb", "/out/", None, None, "/t", {"token": "API_TOKEN"})
    assert args[-2:] == ["--secret-param", "token=API_TOKEN"]


def test_runner_arguments_follow_the_spec_and_the_command_line() -> None:
    local = Local(manifest(step("a", timeout="10m", cellTimeout="90s", kernel="py", html=True)))
    [start] = advance(local, T0, [])
    args = runner_args(start, "/nb/a.ipynb", "/out/ns/wf-a/", "/p.json", "/u.json", "/t", {})
    assert args == [
        "run", "/nb/a.ipynb", "/out/ns/wf-a/", "--termination-message-path", "/t",
        "--parameters-json-file", "/p.json", "--upstream-file", "/u.json", "--kernel=py",
        "--cell-timeout", "90", "--timeout", "600", "--html",
    ]  # fmt: skip
    args = runner_args(
        start, "a", "o/", None, None, "/t", {}, kernel="k2", timeout=5, cell_timeout=1
    )
    assert args[5:] == ["--kernel=k2", "--cell-timeout", "1", "--timeout", "5", "--html"]


def env_run(*env: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": "wf-load", "namespace": "ns", "uid": "u-1",
            "labels": {"kubemill.dev/workflow": "wf", "kubemill.dev/step": "load"}}  # fmt: skip
    return {"metadata": meta, "spec": {"notebook": "n.ipynb", "env": list(env)}}


def test_a_local_run_gets_spec_env_as_the_kubelet_gives_it() -> None:
    shell = {
        "HOME": "/home/me",
        "TOKEN": "t0k",
        "KUBEMILL_RUN_NAME": "outer",
        "KUBEMILL_VIEWER_URL": "https://v",
    }
    env = run_environment(env_run(
        {"name": "MODE", "value": "test"},
        {"name": "DATA", "value": "$(HOME)/data-$(MODE)-$(NOPE)-$$(HOME)"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "WHO", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ), shell)  # fmt: skip
    assert env["MODE"] == "test"
    assert env["DATA"] == "/home/me/data-test-$(NOPE)-$(HOME)"
    assert (env["TOKEN"], env["WHO"]) == ("t0k", "wf-load")
    # The run's own identity, not the shell's; the viewer settings stay.
    assert env["KUBEMILL_RUN_NAME"] == "wf-load" and env["KUBEMILL_VIEWER_URL"] == "https://v"
    assert (env["KUBEMILL_WORKFLOW_NAME"], env["KUBEMILL_STEP_NAME"]) == ("wf", "load")


@pytest.mark.parametrize(
    ("item", "said"),
    [
        ({"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
         "spec.env[0] (KEY) takes its value from a Secret, which a local run cannot read; "
         "export KEY in this shell to give it one"),
        ({"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
         "from a ConfigMap"),
        ({"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
         "takes its value from the pod (fieldRef), which a local run does not have"),
    ],
)  # fmt: skip
def test_a_local_run_refuses_env_it_cannot_give(item: dict[str, Any], said: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(said)):
        run_environment(env_run(item), {})


@pytest.mark.parametrize(
    ("text", "expanded"),
    [("$(A)", "1"), ("$$(A)", "$(A)"), ("$(B)", "$(B)"), ("price $$5", "price $5"),
     ("$(A", "$(A"), ("$$$(A)", "$1"), ("$", "$"), ("a$(A)b$(A)", "a1b1")],
)  # fmt: skip
def test_env_values_expand_as_kubernetes_does(text: str, expanded: str) -> None:
    assert expand(text, {"A": "1"}) == expanded


def test_a_start_timeout_means_nothing_locally() -> None:
    """There is no pod to start: a local run is started at once, and its arguments do not
    change with spec.startTimeout."""
    with_limit = Local(manifest(step("a", timeout="10m", startTimeout="5s")))
    without = Local(manifest(step("a", timeout="10m")))
    [start] = advance(with_limit, T0, [])
    [plain] = advance(without, T0, [])
    assert runner_args(start, "a", "o/", None, None, "/t", {}) == runner_args(
        plain, "a", "o/", None, None, "/t", {}
    )


def test_run_folders_are_named_as_on_the_cluster() -> None:
    assert run_folder("/tmp/out/", "team", "wf-a-0") == "/tmp/out/team/wf-a-0/"
    assert run_folder("s3://b/p", "default", "wf-a") == "s3://b/p/default/wf-a/"


def test_load_workflow_wants_exactly_one() -> None:
    with pytest.raises(UsageError, match="holds 0 NotebookWorkflows"):
        load_workflow([{"kind": "NotebookRun"}], "x.yaml")
    wf = manifest(step("a"))
    assert wf["metadata"]["namespace"] == "default"
    assert wf["metadata"]["uid"]


def test_override_sets_a_step_parameter_and_refuses_unknown_steps() -> None:
    wf = manifest(step("a", parameters={"x": 1}), step("b"))
    override(wf, [("a.x", 2), ("b.y", "z")])
    assert wf["spec"]["steps"][0]["runTemplate"]["spec"]["parameters"] == {"x": 2}
    assert wf["spec"]["steps"][1]["runTemplate"]["spec"]["parameters"] == {"y": "z"}
    with pytest.raises(UsageError, match="no step 'c'"):
        override(wf, [("c.x", 1)])
    with pytest.raises(UsageError, match=r"STEP\.NAME"):
        override(wf, [("a", 1)])


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (
            "totals.rows",
            "-p totals.rows: parameter 'rows' of step 'totals' is set by -p and by "
            "runTemplate.spec.parametersFrom[0] (stepRef to step 'extract'): keep one "
            "(drop -p totals.rows, or change the step in the manifest)",
        ),
        ("by-region.region", "set by -p and by forEach.parameter (each item of step"),
        ("notify.outcome", "parametersFrom[0] (workflowOutcome): keep one"),
        ("load.password", "parametersFrom[0] (secretKeyRef): keep one"),
    ],
)
def test_override_refuses_a_parameter_a_reference_or_forEach_sets(key: str, said: str) -> None:
    secret = {"name": "password", "secretKeyRef": {"name": "db", "key": "password"}}
    wf = manifest(
        *DIAMOND,
        step("load", parametersFrom=[secret]),
        final=(step("notify", parametersFrom=[{"name": "outcome", "workflowOutcome": {}}]),),
    )
    before = json.dumps(wf)
    with pytest.raises(UsageError) as raised:
        override(wf, [("extract.day", 1), (key, 2)])
    assert said in str(raised.value)
    assert json.dumps(wf) == before  # checked before any value is set
    # A name the step takes from nowhere else is set.
    override(wf, [("totals.extra", 1)])
    assert wf["spec"]["steps"][2]["runTemplate"]["spec"]["parameters"] == {"extra": 1}


def test_only_runs_a_step_and_what_it_needs_reusing_what_succeeded() -> None:
    earlier = Local(manifest(*DIAMOND))
    advance(earlier, T0, [])
    finish(earlier, "wf-extract", ExitCode.OK, {"regions": ["eu"], "rows": 3})
    advance(earlier, T1, [])
    finish(earlier, "wf-totals", ExitCode.CELL_ERROR)
    finish(earlier, "wf-by-region-0", ExitCode.OK)
    advance(earlier, T2, [])
    earlier.digests = definitions(earlier.workflow, {})
    again, changed = only(manifest(*DIAMOND), ["report"], earlier, earlier.digests)
    assert changed == []
    assert [s["name"] for s in again.workflow["spec"]["steps"]] == [
        "extract", "by-region", "totals", "report",
    ]  # fmt: skip
    ready = advance(again, T2, [])
    # extract and by-region succeeded before: kept; totals failed: runs again.
    assert names(ready) == ["wf-totals"]
    assert again.runs["wf-extract"]["status"]["phase"] == "Succeeded"
    assert only(manifest(*DIAMOND), ["totals"], None)[0].workflow["spec"]["steps"][1]["name"] == (
        "totals"
    )
    with pytest.raises(UsageError, match="no step 'nope'"):
        only(manifest(*DIAMOND), ["nope"], None)


def test_only_runs_again_a_step_whose_definition_changed_and_what_needs_it() -> None:
    earlier = Local(manifest(*DIAMOND))
    earlier.digests = definitions(earlier.workflow, {"extract.ipynb": "v1"})
    advance(earlier, T0, [])
    finish(earlier, "wf-extract", ExitCode.OK, {"regions": ["eu"], "rows": 3})
    advance(earlier, T1, [])
    finish(earlier, "wf-totals", ExitCode.OK)
    finish(earlier, "wf-by-region-0", ExitCode.OK)
    advance(earlier, T2, [])
    saved = Local.from_json(json.loads(json.dumps(earlier.to_json())))
    assert saved.digests == earlier.digests  # kept in the state file

    def again(wf: dict[str, Any], notebooks: dict[str, str]) -> tuple[list[str], list[str]]:
        local, changed = only(wf, ["report"], saved, definitions(wf, notebooks))
        return names(advance(local, T2, [])), changed

    # Unchanged: report runs on what extract, by-region and totals made.
    assert again(manifest(*DIAMOND), {"extract.ipynb": "v1"}) == (["wf-report"], [])
    # extract's notebook changed: extract runs again, and so does what needs it.
    assert again(manifest(*DIAMOND), {"extract.ipynb": "v2"}) == (
        ["wf-extract"], ["extract", "by-region", "totals"],
    )  # fmt: skip
    # totals' parameters changed (as -p changes them): totals only.
    changed = manifest(*DIAMOND)
    override(changed, [("totals.extra", 1)])
    assert again(changed, {"extract.ipynb": "v1"}) == (["wf-totals"], ["totals"])
    # A state file without digests (an older kubemill): nothing is known to be unchanged.
    saved.digests = {}
    assert again(manifest(*DIAMOND), {"extract.ipynb": "v1"})[1] == [
        "extract", "by-region", "totals",
    ]  # fmt: skip
    # Every definition has its own digest; the same one gives the same digest.
    digests = definitions(manifest(*DIAMOND), {})
    assert len(set(digests.values())) == 4 and digests == definitions(manifest(*DIAMOND), {})


def test_retry_reruns_failed_and_skipped_steps_under_new_names() -> None:
    local = Local(manifest(*DIAMOND))
    advance(local, T0, [])
    finish(local, "wf-extract", ExitCode.OK, {"regions": ["eu"], "rows": 3})
    advance(local, T1, [])
    finish(local, "wf-totals", ExitCode.CELL_ERROR)
    finish(local, "wf-by-region-0", ExitCode.OK)
    advance(local, T2, [])
    assert local.phase == "Failed"
    restored = Local.from_json(json.loads(json.dumps(local.to_json())))
    retry(restored, T2)
    assert restored.workflow["metadata"]["annotations"][RETRY] == T2
    assert names(advance(restored, T2, [])) == ["wf-totals-r2"]
    with pytest.raises(UsageError, match="only a failed workflow"):
        retry(Local(manifest(step("a"))), T2)


def test_an_interrupted_workflow_fails_and_retry_reruns_what_did_not_succeed() -> None:
    local = Local(manifest(*DIAMOND, final=(step("notify"),)))
    advance(local, T0, [])
    finish(local, "wf-extract", ExitCode.OK, {"regions": ["eu", "us"], "rows": 3})
    assert names(advance(local, T1, [])) == ["wf-totals", "wf-by-region-0", "wf-by-region-1"]
    # totals' runner was stopped (it saved and said Terminated); by-region-0's was going when
    # the driver died (still Running in the state); by-region-1 never started.
    finish(local, "wf-totals", ExitCode.TERMINATED)
    local.runs["wf-by-region-0"]["status"] = started_status(local.runs["wf-by-region-0"], T1)
    advance(local, T1, ["wf-by-region-0"])
    assert local.phase == "Running"
    interrupted(local, ["wf-totals"], "`kubemill workflow run` was interrupted (SIGINT)", T2)
    for name in ("wf-totals", "wf-by-region-0"):
        status = local.runs[name]["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "Interrupted")
        assert "interrupted (SIGINT); `kubemill workflow retry` runs it again" in status["message"]
    assert local.runs["wf-totals"]["status"]["outputUrl"].endswith("wf-totals/output.ipynb")
    assert "wf-by-region-1" not in local.runs  # never started: nothing to keep
    status = local.workflow["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Interrupted")
    assert status["progress"] == "6/6"
    assert "interrupted (SIGINT)" in status["message"]
    assert {c["reason"] for c in status["conditions"]} == {"Interrupted"}
    entries = {(e["name"], e.get("item")): e for e in status["steps"]}
    assert entries[("extract", None)]["phase"] == "Succeeded"
    for key in (("by-region", 1), ("notify", None)):
        assert (entries[key]["phase"], entries[key]["reason"]) == ("Skipped", "Interrupted")
        assert "runName" not in entries[key]
    assert entries[("report", None)]["phase"] == "Skipped"
    saved = json.dumps(local.to_json())
    # A workflow that ended is left as it was.
    interrupted(local, [], "again", T2)
    assert json.dumps(local.to_json()) == saved
    # Planning again starts nothing: the workflow has ended.
    assert advance(local, T2, []) == [] and local.phase == "Failed"
    restored = Local.from_json(json.loads(saved))
    retry(restored, T2)
    assert sorted(names(advance(restored, T2, []))) == [
        "wf-by-region-0-r2", "wf-by-region-1-r2", "wf-totals-r2",
    ]  # fmt: skip


def test_an_interrupted_workflow_with_nothing_started_fails_every_step_skipped() -> None:
    local = Local(manifest(step("a"), step("b", dependsOn=["a"])))
    advance(local, T0, [])
    interrupted(local, [], "`kubemill workflow run` failed (OSError: disk full)", T1)
    status = local.workflow["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "Interrupted")
    assert [(e["name"], e["phase"], e["reason"]) for e in status["steps"]] == [
        ("a", "Skipped", "Interrupted"), ("b", "Skipped", "Interrupted"),
    ]  # fmt: skip
    assert local.runs == {}
    retry(local, T1)
    assert names(advance(local, T1, [])) == ["wf-a-r2"]


@pytest.mark.parametrize(
    ("driver", "said"),
    [
        (None, "it names no process running it (an older kubemill wrote it)"),
        ({"pid": 4242, "host": "ci-runner-7"}, "(PID 4242 on ci-runner-7) ran on another machine"),
    ],
)
def test_retry_refuses_a_running_workflow_it_cannot_check(
    tmp_path: Path, driver: dict[str, Any] | None, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    local = Local(manifest(step("a")))
    advance(local, T0, [])
    local.runs["wf-a"]["status"] = started_status(local.runs["wf-a"], T0)
    advance(local, T0, ["wf-a"])
    state = tmp_path / "default" / "wf.workflow.json"
    state.parent.mkdir()
    kept = {"output": str(tmp_path), "base": "."} | ({"driver": driver} if driver else {})
    state.write_text(json.dumps({**local.to_json(), "local": kept}))
    assert main(["workflow", "retry", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "says workflow wf is Running, and" in err
    assert said in err and "cannot be checked here; if it does not, retry with --force" in err
    assert json.loads(state.read_text())["workflow"]["status"]["phase"] == "Running"


@pytest.mark.parametrize("started", [True, False])
def test_retry_refuses_a_workflow_whose_driver_lives(
    tmp_path: Path, started: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    local = Local(manifest(step("a")))
    advance(local, T0, [])
    state = tmp_path / "default" / "wf.workflow.json"
    state.parent.mkdir()
    # This test's own process stands for a live driver; without its start time (no /proc)
    # the PID might be a later process's, so --force is offered.
    driver = _identity(os.getpid())
    assert driver["host"] == socket.gethostname() and driver.get("started")
    if not started:
        del driver["started"]
    kept = {"output": str(tmp_path), "base": ".", "driver": driver}
    state.write_text(json.dumps({**local.to_json(), "local": kept}))
    assert main(["workflow", "retry", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"workflow wf is still being run by `kubemill workflow run` (PID {os.getpid()})" in err
    assert ("retry with --force" in err.splitlines()[-1]) == (not started)


def test_an_invalid_spec_fails_the_workflow_with_the_planner_s_message() -> None:
    local = Local(manifest(step("a", dependsOn=["b"]), step("b", dependsOn=["a"])))
    advance(local, T0, [])
    assert local.workflow["status"]["reason"] == "InvalidSpec"
    assert "cycle" in local.workflow["status"]["message"]


# --- what people and CI read ------------------------------------------------------------------


def ended_diamond() -> Local:
    check = step(
        "check",
        test=True,
        parametersFrom=[{"name": "notebook", "stepRef": {"name": "extract", "output": "notebook"}}],
    )
    local = Local(manifest(*DIAMOND, check, final=(step("notify"),)))
    advance(local, T0, [])
    finish(local, "wf-extract", ExitCode.OK, {"regions": ["eu", "us"], "rows": 3})
    advance(local, T1, [])
    for name in ("wf-totals", "wf-by-region-0", "wf-by-region-1"):
        finish(local, name, ExitCode.OK)
    finish(local, "wf-check", ExitCode.CELL_ERROR)
    advance(local, T1, [])
    finish(local, "wf-report", ExitCode.OK)
    advance(local, T1, [])
    finish(local, "wf-notify", ExitCode.OK)
    advance(local, T2, [])
    return local


def test_junit_has_a_testcase_per_run_with_failures_and_properties() -> None:
    local = ended_diamond()
    root = ET.fromstring(junit_xml(local.workflow, local.runs))
    assert root.tag == "testsuites"
    [suite] = root
    assert suite.tag == "testsuite"
    assert {k: suite.get(k) for k in ("name", "tests", "failures", "errors", "skipped")} == {
        "name": "wf", "tests": "7", "failures": "1", "errors": "0", "skipped": "0",
    }  # fmt: skip
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == [
        "extract", "by-region[0]", "by-region[1]", "totals", "report", "check", "notify",
    ]  # fmt: skip
    assert {c.get("classname") for c in cases.values()} == {"wf"}
    assert cases["extract"].get("time") == "70.000"
    failure = cases["check"].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("CellError: cell In [3] raised AssertionError")
    assert "AssertionError: rows is 3, expected 4" in (failure.text or "")
    assert "cell 2 (In [3])" in (failure.text or "")
    # Properties belong to the suite in Jenkins' schema: named after the testcase.
    assert cases["by-region[1]"].find("properties") is None
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["by-region[1].parameter.region"] == "'us'"
    assert properties["by-region[1].duration"] == "1m10s"
    assert properties["totals.parameter.rows"] == "from run wf-extract: rows"
    assert properties["workflow.phase"] == "Failed"
    assert (suite.get("hostname"), suite.get("timestamp")) == ("localhost", "2027-01-12T06:00:00")
    out = cases["report"].find("system-out")
    assert out is not None and out.text == "/out/default/wf-report/output.ipynb"


def test_junit_marks_skipped_runs() -> None:
    local = Local(manifest(step("a"), step("b", dependsOn=["a"])))
    advance(local, T0, [])
    finish(local, "wf-a", ExitCode.CELL_ERROR)
    advance(local, T1, [])
    [suite] = ET.fromstring(junit_xml(local.workflow, local.runs))
    assert suite.get("skipped") == "1"
    skipped = suite.find("testcase[@name='b']/skipped")
    assert skipped is not None and skipped.get("message") == "UpstreamFailed: step a failed"


def test_junit_parses_whatever_a_kernel_printed_in_the_failure() -> None:
    """IPython colours tracebacks with terminal escapes; XML 1.0 forbids ESC, BEL, NUL."""
    local = Local(manifest(step("a")))
    advance(local, T0, [])
    finish(local, "wf-a", ExitCode.CELL_ERROR)
    status = local.runs["wf-a"]["status"]
    status["message"] = "cell raised \x1b[0;31mKeyError\x1b[0m: 'x'\x07"
    status["failure"] = {**(status.get("failure") or {}), "traceback": "\x1b[?25h\x00boom\x08"}
    advance(local, T1, [])
    [suite] = ET.fromstring(junit_xml(local.workflow, local.runs))
    failure = suite.find("testcase[@name='a']/failure")
    assert failure is not None and "\x1b" not in ET.tostring(failure, encoding="unicode")
    assert "KeyError: 'x'" in failure.get("message", "")


def test_table_and_summary() -> None:
    local = ended_diamond()
    lines = table_lines(local.workflow)
    assert lines[0].split() == ["STEP", "PHASE", "REASON", "DURATION", "RUN"]
    assert lines[6].split() == ["check", "Failed", "CellError", "1m10s", "wf-check"]
    assert summary_lines(local.workflow, "/out/default/")[1:] == [
        "tests: 0 passed, 1 failed",
        "outputs: /out/default/",
    ]


def test_graph_in_three_forms() -> None:
    wf = manifest(*DIAMOND, final=(step("notify"),))
    assert graph(wf) == (
        "workflow wf\n"
        "  extract\n"
        "  by-region (forEach region in extract.regions) <- extract (forEach regions)\n"
        "  totals <- extract (rows = rows)\n"
        "  report <- by-region (dependsOn), totals (dependsOn)\n"
        "  finally (after every step, whatever happened):\n"
        "    notify\n"
    )
    dot = graph(wf, "dot")
    assert '"extract" -> "by-region" [label="forEach regions"];' in dot
    assert '"report" -> "notify" [style=dashed];' in dot
    assert '"by-region" [shape=box3d' in dot
    mermaid = graph(wf, "mermaid").splitlines()
    assert mermaid[0] == "flowchart LR"
    assert '  s1[["by-region (forEach region in extract.regions)"]]' in mermaid
    assert "  s3 -.-> s4" in mermaid
    with pytest.raises(InvalidSpec, match="cycle"):
        graph(manifest(step("a", dependsOn=["b"]), step("b", dependsOn=["a"])))


@pytest.mark.parametrize(
    ("argv", "wrong"),
    [
        (["workflow", "run", "wf.yaml", "--parallel", "0"], "must be at least 1"),
        (["workflow", "run", "wf.yaml", "--timeout", "x"], "not a number of seconds"),
        (["workflow", "run", "wf.yaml", "--secret-param", "token"], "not NAME=ENV_VAR"),
        (["workflow", "graph", "wf.yaml", "--format", "png"], "invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str], wrong: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser(argv).parse_args(argv)
    assert exit_.value.code == 2
    assert wrong in capsys.readouterr().err


def test_options_parse() -> None:
    argv = [
        "workflow", "run", "wf.yaml", "-p", "a.x", "1", "-p", "b.y", "z", "--only", "b",
        "--parallel", "3", "--cell-timeout", "1.5", "--secret-param", "t=T", "--junit-xml", "j",
    ]  # fmt: skip
    args = build_parser(argv).parse_args(argv)
    assert args.parameter == [["a.x", "1"], ["b.y", "z"]]
    assert (args.only, args.parallel, args.cell_timeout) == (["b"], 3, 1.5)
    assert (args.secret_param, args.junit_xml, args.output_dir) == (
        [("t", "T")],
        "j",
        "./kubemill-runs/",
    )


def test_a_run_waiting_for_a_run_no_step_makes_fails_instead_of_waiting_for_ever() -> None:
    outside = {"name": "x", "notebookRunRef": {"name": "made-elsewhere", "result": "x"}}
    local = Local(manifest(step("a", parametersFrom=[outside])))
    assert advance(local, T0, []) == []
    assert local.runs["wf-a"]["status"]["phase"] == "Waiting"
    stranded(local, T1)
    advance(local, T1, [])
    status = local.runs["wf-a"]["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
    assert "run made-elsewhere (it does not exist yet)" in status["message"]
    assert local.phase == "Failed"


def test_the_table_is_redrawn_in_place_on_a_terminal() -> None:
    assert redraw(["A", "b"], 0) == "A\nb\n"
    assert redraw(["A", "b", "c"], 2) == "\x1b[2F\x1b[JA\nb\nc\n"


def test_retry_leaves_alone_a_runner_it_cannot_identify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a recorded start time (no /proc where it ran) a live PID may be another
    process's by now: retry names it and does not signal it (or its process group)."""
    local = Local(manifest(step("a")))
    advance(local, T0, [])
    local.runs["wf-a"]["status"] = started_status(local.runs["wf-a"], T0)
    state = tmp_path / "default" / "wf.workflow.json"
    state.parent.mkdir()
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        runner = {"pid": stranger.pid, "host": socket.gethostname()}
        dead = {"pid": 0, "host": socket.gethostname()}
        kept = {"output": str(tmp_path), "base": ".", "driver": dead, "runners": {"wf-a": runner}}
        state.write_text(json.dumps({**local.to_json(), "local": kept}))
        main(["workflow", "retry", str(tmp_path)])
        assert stranger.poll() is None  # still running: not signalled
        err = capsys.readouterr().err
        assert f"stop them yourself if they are: wf-a (PID {stranger.pid})" in err
    finally:
        stranger.kill()
        stranger.wait()


def test_a_second_signal_before_the_runs_are_stopped_is_not_raised_again(tmp_path: Path) -> None:
    """Raised again in the moment between the first interrupt and the handler that stops the
    runs, it would skip stopping them and saving the state."""
    from kubemill.cli.workflow import _Driver, _Interrupted

    args = build_parser().parse_args(["workflow", "run", "wf.yaml"])
    out = io.StringIO()
    driver = _Driver(Local(manifest(step("a"))), args, tmp_path / "s.json", str(tmp_path), ".", out)
    with pytest.raises(_Interrupted):
        driver._interrupt(2, None)
    driver._interrupt(2, None)  # the second one: nothing raised
