"""`workflows.plan`: which step runs a NotebookWorkflow creates, skips and deletes, and the
status and Events that follow; table-tested like `schedules.plan`."""

from __future__ import annotations

from typing import Any

import pytest

from kubemill.operator.workflows import MAX_ITEMS, parse_steps, plan, run_name

NOW = "2027-01-12T06:00:00Z"
NB = "s3://notebooks/step.ipynb"


def step(name: str, *, refs: tuple[dict[str, Any], ...] = (), **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"notebook": NB}
    if refs:
        spec["parametersFrom"] = list(refs)
    if "parameters" in extra:
        spec["parameters"] = extra.pop("parameters")
    return {"name": name, "runTemplate": {"spec": spec}, **extra}


def ref(parameter: str, step_name: str, **what: str) -> dict[str, Any]:
    return {"name": parameter, "stepRef": {"name": step_name, **what}}


def workflow(*steps: dict[str, Any], final: tuple[dict[str, Any], ...] = (), **spec: Any) -> Any:
    body: dict[str, Any] = {"steps": list(steps), **spec}
    if final:
        body["finally"] = list(final)
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookWorkflow",
        "metadata": {"name": "wf", "namespace": "ns", "uid": "wf-uid", "generation": 1},
        "spec": body,
        "status": {},
    }


def finished(body: dict[str, Any], phase: str = "Succeeded", **status: Any) -> dict[str, Any]:
    """A created run as the watch shows it later, in `phase`."""
    name = body["metadata"]["name"]
    extra = {"outputUrl": f"s3://results/ns/{name}/output.ipynb", "jobName": f"{name}-job"}
    return {**body, "status": {"phase": phase, "reason": phase, **extra, **status}}


class Driver:
    """Runs `plan` pass after pass, keeping the created runs like the cluster would."""

    def __init__(self, wf: dict[str, Any]) -> None:
        self.wf = wf
        self.runs: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []

    def step(self, refused: dict[str, str] | None = None) -> Any:
        result = plan(self.wf, list(self.runs.values()), NOW, refused)
        for body, _ in result.create:
            self.runs[body["metadata"]["name"]] = body
        for name, _ in result.delete:
            self.runs.pop(name)
        self.wf = {**self.wf, "status": result.status}
        self.events += result.events
        return result

    def end(self, name: str, phase: str = "Succeeded", **status: Any) -> None:
        self.runs[name] = finished(self.runs[name], phase, **status)

    def phases(self) -> dict[str, str]:
        return {
            f"{e['name']}{'/' + str(e['item']) if 'item' in e else ''}": e["phase"]
            for e in self.wf["status"]["steps"]
        }


def diamond(**spec: Any) -> dict[str, Any]:
    return workflow(
        step("extract"),
        step("clean", refs=(ref("rows", "extract", result="rows"),)),
        step(
            "region", refs=(ref("source", "extract", output="folder"),),
            forEach={"parameter": "region", "items": ["eu", "us"]},
        ),
        step("report", dependsOn=["clean"], refs=(ref("counts", "region", result="count"),)),
        **spec,
    )  # fmt: skip


def test_a_diamond_creates_each_run_as_soon_as_what_it_needs_exists() -> None:
    driver = Driver(diamond())
    first = driver.step()
    # clean and the region items take values from extract: created now, waiting for its run;
    # report waits for clean (dependsOn) and for a forEach step's list: not yet.
    assert [body["metadata"]["name"] for body, _ in first.create] == [
        "wf-extract", "wf-clean", "wf-region-0", "wf-region-1",
    ]  # fmt: skip
    clean = driver.runs["wf-clean"]["spec"]
    assert clean["parametersFrom"] == [
        {"name": "rows", "notebookRunRef": {"name": "wf-extract", "result": "rows"}}
    ]
    region = driver.runs["wf-region-1"]
    assert region["spec"]["parameters"] == {"region": "us"}
    assert region["metadata"]["annotations"]["kubemill.dev/item"] == "1"
    assert region["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "kubemill",
        "kubemill.dev/workflow": "wf",
        "kubemill.dev/step": "region",
    }
    owner = region["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "NotebookWorkflow",
        "wf-uid",
        True,
    )
    assert driver.wf["status"]["progress"] == "0/5"
    assert driver.wf["status"]["phase"] == "Running"
    assert driver.step().create == []  # nothing new until something ends
    for name in ("wf-extract", "wf-clean"):
        driver.end(name)
    driver.end("wf-region-0", results={"count": 3})
    driver.end("wf-region-1", results={"count": 4})
    created = driver.step().create
    assert [body["metadata"]["name"] for body, _ in created] == ["wf-report"]
    assert created[0][0]["spec"]["parameters"] == {"counts": [3, 4]}
    driver.end("wf-report")
    driver.step()
    status = driver.wf["status"]
    assert (status["phase"], status["reason"], status["progress"]) == (
        "Succeeded",
        "Succeeded",
        "5/5",
    )
    assert status["completionTime"] == NOW
    assert driver.events[-1] == ("Normal", "Succeeded", "5 runs succeeded")
    assert driver.phases() == {
        "extract": "Succeeded", "clean": "Succeeded", "region/0": "Succeeded",
        "region/1": "Succeeded", "report": "Succeeded",
    }  # fmt: skip


def test_a_failure_skips_what_depends_on_it_and_the_rest_finishes_then_finally_runs() -> None:
    wf = workflow(
        step("extract"),
        step("clean", refs=(ref("rows", "extract", result="rows"),)),
        step("report", dependsOn=["clean"]),
        step("other"),
        final=(step("notify", refs=({"name": "outcome", "workflowOutcome": {}},
                                    ref("notebook", "extract", output="notebook"))),),
    )  # fmt: skip
    driver = Driver(wf)
    driver.step()
    driver.end("wf-extract", "Failed", reason="CellError", message="cell 3 raised KeyError")
    # wf-clean waits for wf-extract's run: the run controller ends it, it is not deleted.
    assert driver.step().delete == []
    driver.end("wf-clean", "Failed", reason="UpstreamFailed", message="run wf-extract failed")
    driver.step()
    assert driver.phases() == {
        "extract": "Failed", "clean": "Skipped", "report": "Skipped", "other": "Pending",
        "notify": "Pending",
    }  # fmt: skip
    assert "wf-notify" not in driver.runs  # not before every step ended
    assert ("Warning", "StepFailed", "extract (CellError): cell 3 raised KeyError") in driver.events
    driver.end("wf-other")
    created = driver.step().create
    assert [body["metadata"]["name"] for body, _ in created] == ["wf-notify"]
    parameters = created[0][0]["spec"]["parameters"]
    assert parameters["outcome"]["phase"] == "Failed"
    assert parameters["outcome"]["failed"] == ["extract"]
    assert parameters["outcome"]["skipped"] == ["clean", "report"]
    # A failed step's output notebook is still there, and a finally step gets its URL.
    assert parameters["notebook"] == "s3://results/ns/wf-extract/output.ipynb"
    assert "parametersFrom" not in created[0][0]["spec"]
    driver.end("wf-notify")
    driver.step()
    status = driver.wf["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "StepFailed")
    assert status["message"] == "step extract failed (CellError): cell 3 raised KeyError"
    assert driver.events[-1][:2] == ("Warning", "Failed")


def test_fail_fast_skips_what_has_not_started_and_deletes_runs_that_wait() -> None:
    wf = workflow(
        step("extract"), step("slow"), step("after", dependsOn=["slow"]),
        step("waits", refs=(ref("x", "slow", result="x"),)),
        failFast=True,
    )  # fmt: skip
    driver = Driver(wf)
    driver.step()
    assert set(driver.runs) == {"wf-extract", "wf-slow", "wf-waits"}
    driver.end("wf-slow", "Running")  # its Job exists: it has started, and it goes on
    driver.end("wf-extract", "Failed", reason="CellError", message="boom")
    result = driver.step()
    assert result.delete == [("wf-waits", "an earlier step failed and spec.failFast is true")]
    assert driver.phases() == {
        "extract": "Failed", "slow": "Running", "after": "Skipped", "waits": "Skipped",
    }  # fmt: skip
    driver.runs["wf-slow"] = finished(driver.runs["wf-slow"])
    driver.step()
    assert driver.phases()["after"] == "Skipped"  # failFast: not started after all
    assert driver.wf["status"]["phase"] == "Failed"


def test_for_each_over_a_list_a_step_records() -> None:
    loop = {"parameter": "region", "fromStep": {"name": "list", "result": "regions"}}
    wf = workflow(step("list"), step("each", forEach=loop))
    driver = Driver(wf)
    assert [b["metadata"]["name"] for b, _ in driver.step().create] == ["wf-list"]
    driver.end("wf-list", results={"regions": ["eu", {"name": "us"}, None]})
    created = driver.step().create
    assert [b["spec"]["parameters"] for b, _ in created] == [
        {"region": "eu"}, {"region": {"name": "us"}}, {"region": None},
    ]  # fmt: skip
    assert driver.wf["status"]["progress"] == "1/4"


@pytest.mark.parametrize(
    ("results", "reason", "says"),
    [
        ({}, "MissingResult", "recorded no result 'regions'"),
        ({"regions": "eu,us"}, "InvalidForEach", "is a str, not a list"),
        ({"regions": list(range(MAX_ITEMS + 1))}, "InvalidForEach", f"more than {MAX_ITEMS}"),
    ],
)
def test_for_each_over_what_is_not_a_usable_list_fails_the_step(
    results: dict[str, Any], reason: str, says: str
) -> None:
    wf = workflow(
        step("list"),
        step("each", forEach={"parameter": "r", "fromStep": {"name": "list", "result": "regions"}}),
    )
    driver = Driver(wf)
    driver.step()
    driver.end("wf-list", results=results)
    driver.step()
    (entry,) = [e for e in driver.wf["status"]["steps"] if e["name"] == "each"]
    assert entry["phase"] == "Failed" and entry["reason"] == reason and says in entry["message"]
    assert driver.wf["status"]["phase"] == "Failed"


def test_a_failed_test_step_fails_the_workflow_as_a_failed_test() -> None:
    wf = workflow(
        step("train"),
        step("check", test=True, refs=(ref("notebook", "train", output="notebook"),)),
    )
    driver = Driver(wf)
    driver.step()
    driver.end("wf-train")
    driver.end(
        "wf-check", "Failed", reason="CellError", message="AssertionError: accuracy 0.4 < 0.9"
    )
    driver.step()
    status = driver.wf["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "TestFailed")
    assert status["message"] == "test check failed (CellError): AssertionError: accuracy 0.4 < 0.9"
    assert status["tests"] == {"total": 1, "passed": 0, "failed": 1}
    assert ("Warning", "TestFailed", "check (CellError): AssertionError: accuracy 0.4 < 0.9") in (
        driver.events
    )


@pytest.mark.parametrize(
    ("steps", "final", "says"),
    [
        ([step("a", dependsOn=["b"]), step("b", dependsOn=["a"])], (), "cycle: a → b → a"),
        ([step("a", refs=(ref("x", "b", result="x"),)), step("b", dependsOn=["a"])], (),
         "cycle: a → b → a"),
        ([step("a", dependsOn=["nope"])], (), "needs 'nope', which is not in spec.steps"),
        ([step("a", dependsOn=["a"])], (), "needs itself"),
        ([step("a", refs=({"name": "o", "workflowOutcome": {}},))], (), "finally steps only"),
        ([step("a")], (step("f", dependsOn=["a"]),), "drop dependsOn"),
        ([step("a"), step("a")], (), "a appear more than once"),
        ([step("a", parameters={"r": 1}, forEach={"parameter": "r", "items": [1]})], (),
         "also in runTemplate.spec.parameters"),
        ([step("a"), step("b", parameters={"x": 1}, refs=(ref("x", "a", result="x"),))], (),
         "parameter 'x' is set by runTemplate.spec.parametersFrom and by "
         "runTemplate.spec.parameters: keep one"),
        ([step("a"), step("b", refs=(ref("r", "a", result="x"),),
                          forEach={"parameter": "r", "items": [1]})], (),
         "'r' is set by runTemplate.spec.parametersFrom and by forEach.parameter"),
        ([step("a"), step("b", refs=(ref("x", "a", result="x"), ref("x", "a", output="notebook")))],
         (), "'x' is set by runTemplate.spec.parametersFrom and by another parametersFrom entry"),
    ],
)  # fmt: skip
def test_a_workflow_that_cannot_run_fails_as_invalid_spec_naming_why(
    steps: list[dict[str, Any]], final: tuple[dict[str, Any], ...], says: str
) -> None:
    result = plan(workflow(*steps, final=final), [], NOW)
    assert result.create == []
    assert (result.status["phase"], result.status["reason"]) == ("Failed", "InvalidSpec")
    assert says in result.status["message"]
    assert result.events == [("Warning", "Failed", result.status["message"])]


def test_run_names_are_the_workflow_the_step_and_the_item() -> None:
    assert run_name("wf", "step") == "wf-step"
    assert run_name("wf", "step", 12) == "wf-step-12"


def test_steps_know_what_gates_them() -> None:
    steps = {s.name: s for s in parse_steps(diamond()["spec"])}
    assert steps["clean"].gates == ()  # its value is waited for by its run
    assert steps["report"].gates == ("clean", "region")  # dependsOn, and a forEach list


def test_a_retry_re_runs_the_failed_and_skipped_steps_and_keeps_the_successful_ones() -> None:
    wf = workflow(
        step("extract"),
        step("clean", refs=(ref("rows", "extract", result="rows"),)),
        step("flaky", dependsOn=["extract"]),
        step("report", dependsOn=["flaky", "clean"]),
        final=(step("notify"),),
    )
    driver = Driver(wf)
    driver.step()
    driver.end("wf-extract", results={"rows": 3})
    driver.end("wf-clean")
    driver.step()
    driver.end("wf-flaky", "Failed", reason="CellError", message="timeout talking to the db")
    driver.step()
    driver.end("wf-notify")
    driver.step()
    assert driver.wf["status"]["phase"] == "Failed"
    assert driver.phases()["report"] == "Skipped"
    # Asking again while nothing changed does nothing; a new token starts attempt 2.
    driver.wf["metadata"]["annotations"] = {"kubemill.dev/retry": "2027-01-12T07:00:00Z"}
    result = driver.step()
    assert [b["metadata"]["name"] for b, _ in result.create] == ["wf-flaky-r2"]
    assert ("Normal", "Retrying", "attempt 2: re-running the failed and skipped steps") in (
        result.events
    )
    status = driver.wf["status"]
    assert (status["phase"], status["attempt"]) == ("Running", 2)
    assert status["retryToken"] == "2027-01-12T07:00:00Z"
    assert "completionTime" not in status
    assert driver.phases() == {
        "extract": "Succeeded", "clean": "Succeeded", "flaky": "Pending", "report": "Pending",
        "notify": "Pending",
    }  # fmt: skip
    assert driver.step().create == []  # the same token again: no attempt 3
    driver.end("wf-flaky-r2")
    assert [b["metadata"]["name"] for b, _ in driver.step().create] == ["wf-report-r2"]
    driver.end("wf-report-r2")
    assert [b["metadata"]["name"] for b, _ in driver.step().create] == ["wf-notify-r2"]
    driver.end("wf-notify-r2")
    driver.step()
    status = driver.wf["status"]
    assert (status["phase"], status["attempt"], status["progress"]) == ("Succeeded", 2, "5/5")
    assert {e["name"]: e.get("runName") for e in status["steps"]} == {
        "extract": "wf-extract", "clean": "wf-clean", "flaky": "wf-flaky-r2",
        "report": "wf-report-r2", "notify": "wf-notify-r2",
    }  # fmt: skip
    assert "wf-flaky" in driver.runs  # the failed attempt's run stays, to look at


def test_a_retry_asked_while_the_workflow_runs_waits_until_it_has_failed() -> None:
    driver = Driver(workflow(step("a")))
    driver.step()
    driver.wf["metadata"]["annotations"] = {"kubemill.dev/retry": "t1"}
    assert driver.step().create == [] and driver.wf["status"]["attempt"] == 1
    driver.end("wf-a", "Failed", reason="CellError", message="x")
    driver.step()
    assert driver.wf["status"]["phase"] == "Failed"  # the end is recorded first,
    driver.step()
    assert driver.wf["status"]["attempt"] == 2  # then the waiting request is honoured
    assert "wf-a-r2" in driver.runs


def test_runs_that_wait_for_a_run_that_will_never_exist_are_deleted_and_skipped() -> None:
    """failFast deletes a waiting run; the run waiting for *that* one must not hang."""
    wf = workflow(
        step("x"), step("y"), step("a", refs=(ref("v", "y", result="v"),)),
        step("b", refs=(ref("v", "a", result="v"),)), failFast=True,
    )  # fmt: skip
    driver = Driver(wf)
    driver.step()
    assert set(driver.runs) == {"wf-x", "wf-y", "wf-a", "wf-b"}
    driver.end("wf-y", "Running")
    driver.end("wf-x", "Failed", reason="CellError", message="boom")
    result = driver.step()
    assert sorted(name for name, _ in result.delete) == ["wf-a", "wf-b"]
    driver.end("wf-y")
    driver.step()
    assert driver.phases() == {"x": "Failed", "y": "Succeeded", "a": "Skipped", "b": "Skipped"}
    assert driver.wf["status"]["phase"] == "Failed"  # ended, not Running for ever


def test_a_step_whose_upstream_was_refused_is_skipped_not_left_waiting() -> None:
    driver = Driver(workflow(step("a"), step("b", refs=(ref("v", "a", result="v"),))))
    driver.step()
    # The API server refused wf-a: the controller tells the plan.
    del driver.runs["wf-a"]
    result = driver.step(refused={"wf-a": "run wf-a was rejected: no"})
    assert result.delete == [("wf-b", "step a failed")]
    assert driver.phases() == {"a": "Failed", "b": "Skipped"}
    assert driver.wf["status"]["phase"] == "Failed"


def test_fail_fast_then_retry_runs_the_failed_step_again() -> None:
    driver = Driver(workflow(step("a"), step("b"), step("c", dependsOn=["b"]), failFast=True))
    driver.step()
    driver.end("wf-b", "Running")
    driver.end("wf-a", "Failed", reason="CellError", message="boom")
    driver.step()
    driver.end("wf-b")
    driver.step()
    assert driver.wf["status"]["phase"] == "Failed"
    driver.wf["metadata"]["annotations"] = {"kubemill.dev/retry": "t"}
    created = [b["metadata"]["name"] for b, _ in driver.step().create]
    # attempt 1's failure no longer stops attempt 2: a again, and c (skipped by failFast,
    # while what it waits for, b, succeeded)
    assert created == ["wf-a-r2", "wf-c-r2"]


def test_a_restarted_operator_that_has_not_listed_the_runs_yet_changes_nothing() -> None:
    wf = workflow(step("a"), step("b", dependsOn=["a"]), step("c"), failFast=True)
    driver = Driver(wf)
    driver.step()
    driver.end("wf-c", "Running")
    driver.end("wf-a", "Failed", reason="CellError", message="boom")
    driver.step()
    driver.end("wf-c")
    driver.step()
    ended = driver.wf["status"]
    assert ended["phase"] == "Failed"
    # A new process: the workflow is listed before its runs.
    result = plan(driver.wf, [], NOW)
    assert result.create == [] and result.delete == [] and result.events == []
    assert result.status == ended


def test_a_spec_the_operator_refuses_keeps_what_ran() -> None:
    driver = Driver(workflow(step("a")))
    driver.step()
    driver.end("wf-a", "Failed", reason="CellError", message="boom")
    driver.step()
    driver.wf["metadata"]["annotations"] = {"kubemill.dev/retry": "t"}
    driver.step()
    broken = {**driver.wf, "spec": workflow(step("a", dependsOn=["a"]))["spec"]}
    status = plan(broken, list(driver.runs.values()), NOW).status
    assert (status["phase"], status["reason"], status["attempt"]) == ("Failed", "InvalidSpec", 2)
    assert status["retryToken"] == "t" and status["steps"][0]["runName"] == "wf-a-r2"


def test_a_finally_step_taking_a_list_from_a_skipped_fan_out_still_runs() -> None:
    loop = {"parameter": "n", "items": [1, 2]}
    wf = workflow(
        step("a"), step("fan", dependsOn=["a"], forEach=loop),
        final=(step("notify", refs=(ref("counts", "fan", result="n"),)),),
    )  # fmt: skip
    driver = Driver(wf)
    driver.step()
    driver.end("wf-a", "Failed", reason="CellError", message="boom")
    created = driver.step().create
    assert [b["metadata"]["name"] for b, _ in created] == ["wf-notify"]
    assert created[0][0]["spec"]["parameters"] == {"counts": [None, None]}
