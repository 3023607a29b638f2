"""What a NotebookSchedule does at a moment, given its runs: table tests, no cluster."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest

from kubemill.operator.schedules import (
    ATTEMPT_SUFFIX,
    ITEM_SUFFIX,
    RUN_NAME_LIMIT,
    STEP_SEPARATOR,
    Plan,
    after_create,
    build_child,
    build_run,
    finished_to_prune,
    manual_run_name,
    plan,
    slot_run_name,
)
from tests import hack_scripts

UTC = datetime.UTC
CREATED = "2027-01-10T05:00:00Z"


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def schedule(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "daily",
            "namespace": "ns",
            "uid": "sched-uid",
            "generation": 1,
            "creationTimestamp": CREATED,
            "annotations": spec.pop("annotations", {}),
        },
        "spec": {
            "schedule": "0 6 * * *",
            "runTemplate": {
                "metadata": {
                    "labels": {"team": "reports", "kubectl.kubernetes.io/x": "no"},
                    "annotations": {"note": "yes", "kopf.zalando.org/last": "no"},
                },
                "spec": {
                    "notebook": "s3://b/n.ipynb",
                    "parameters": {"day": "{{ scheduledDate }}"},
                },
            },
            **spec,
        },
        "status": status or {},
    }


def run(slot: str, phase: str | None, origin: str = "schedule", done: str = "") -> dict[str, Any]:
    name = slot_run_name("daily", at(slot))
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if done:
        status["completionTime"] = done
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": slot,
            "labels": {"kubemill.dev/schedule": "daily", "kubemill.dev/origin": origin},
            "annotations": {"kubemill.dev/scheduled-time": slot},
        },
        "status": status,
    }


def created(result: Plan) -> list[str]:
    return [r["metadata"]["name"] for r, _, _ in result.create]


def reasons(result: Plan) -> list[str]:
    """The Events: those posted in any case, then those posted once their run exists."""
    return [reason for _, reason, _ in result.events] + [r for _, r, _ in result.create]


ACTIVE = run("2027-01-11T06:00:00Z", "Running")
DUE = at("2027-01-12T06:00:00.2Z")
AFTER_FIRST = {"lastConsideredTime": "2027-01-11T06:00:00Z"}


def test_run_names_are_one_per_slot_whatever_the_zone() -> None:
    slot = at("2027-03-28T01:00:00Z")
    berlin = slot.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    assert slot_run_name("daily", slot) == slot_run_name("daily", berlin) == "daily-20270328-010000"
    assert len(slot_run_name("x" * 47, slot)) == 63
    assert (
        manual_run_name("daily", "a")
        == manual_run_name("daily", "a")
        != manual_run_name("daily", "b")
    )


def test_nothing_before_the_first_slot_after_creation() -> None:
    result = plan(schedule(), [], at("2027-01-10T05:59:59Z"))
    assert result.create == [] and result.events == []
    assert result.status["nextScheduleTime"] == "2027-01-10T06:00:00Z"
    assert result.wake_at == at("2027-01-10T06:00:00Z")
    assert result.status["lastConsideredTime"] == CREATED


def test_a_due_slot_creates_its_run_with_rendered_parameters() -> None:
    result = plan(schedule(timeZone="Asia/Tokyo", schedule="30 8 * * *"), [],
                  at("2027-01-10T23:30:01Z"))  # fmt: skip
    assert created(result) == ["daily-20270110-233000"]
    body = result.create[0][0]
    # 23:30 UTC is 08:30 of the next day in Tokyo: the date is the zone's.
    assert body["spec"]["parameters"] == {"day": "2027-01-11"}
    assert body["metadata"]["labels"] == {
        "team": "reports",
        "app.kubernetes.io/managed-by": "kubemill",
        "kubemill.dev/schedule": "daily",
        "kubemill.dev/origin": "schedule",
    }
    assert body["metadata"]["annotations"] == {
        "note": "yes",
        "kubemill.dev/scheduled-time": "2027-01-10T23:30:00Z",
    }
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "NotebookSchedule",
        "sched-uid",
        True,
    )
    assert result.status["lastScheduleTime"] == "2027-01-10T23:30:00Z"
    assert result.status["lastConsideredTime"] == "2027-01-10T23:30:00Z"
    assert result.status["nextScheduleTime"] == "2027-01-11T23:30:00Z"
    assert result.status["activeCount"] == 0  # the new run shows once the watch has it


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("scheduledTime", "2027-03-28T03:00:00+02:00"),
        ("scheduledTimeUTC", "2027-03-28T01:00:00Z"),
        ("scheduledDate", "2027-03-28"),
        ("scheduleName", "daily"),
        ("runName", "daily-20270328-010000"),
    ],
)
def test_template_variables(variable: str, value: str) -> None:
    spec = schedule(timeZone="Europe/Berlin")
    spec["spec"]["runTemplate"]["spec"]["parameters"] = {
        "v": f"{{{{{variable}}}}}", "nested": [{"x": f"at {{{{ {variable} }}}}!"}], "n": 3
    }  # fmt: skip
    body = build_run(spec, at("2027-03-28T01:00:00Z"), "daily-20270328-010000", "schedule")
    assert body["spec"]["parameters"] == {"v": value, "nested": [{"x": f"at {value}!"}], "n": 3}


@pytest.mark.parametrize(
    ("parameter", "message"),
    [
        ("{{ scheduled_date }}", "unknown template variable {{ scheduled_date }}"),
        ("{{ scheduledDate", "unclosed or malformed"),
        ("{{ scheduledDate }} }}", "unclosed or malformed"),
    ],
)
def test_a_bad_template_makes_the_schedule_not_ready(parameter: str, message: str) -> None:
    spec = schedule()
    spec["spec"]["runTemplate"]["spec"]["parameters"] = {"day": parameter}
    result = plan(spec, [], at("2027-01-11T06:00:00Z"))
    assert result.create == []
    ready = result.status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "InvalidTemplate",
    )
    assert message in ready["message"] and reasons(result) == ["InvalidTemplate"]
    # The Event is posted once, not on every pass.
    again = plan({**spec, "status": result.status}, [], at("2027-01-11T06:00:05Z"))
    assert again.events == []


def ready_of(status: dict[str, Any]) -> tuple[str, str, str]:
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    return ready["status"], ready["reason"], ready["message"]


SEEN_10TH = {"lastConsideredTime": "2027-01-10T06:00:00Z"}
REFUSED = (
    'run daily-20270111-060000 was rejected: NotebookRun.kubemill.dev "daily-20270111-060000" '
    'is invalid: metadata.labels: Invalid value: "data science"; fix spec.runTemplate'
)


def test_a_template_whose_runs_are_refused_is_not_ready_until_one_is_accepted() -> None:
    """A rule only the API server knows (a webhook, a newer Kubernetes) refuses each run: the
    schedule says so, with the API server's message, and keeps saying it between slots."""
    first = plan(schedule(SEEN_10TH), [], at("2027-01-11T06:00:00Z"))
    assert created(first) == ["daily-20270111-060000"]
    refused = after_create(first.status, 1, at("2027-01-11T06:00:00Z"), refused=REFUSED)
    assert ready_of(refused) == ("False", "InvalidRunTemplate", REFUSED)
    suspended = next(c for c in refused["conditions"] if c["type"] == "Suspended")
    assert suspended["status"] == "False"
    # Between slots the plan keeps the verdict, with its transition time.
    later = plan(schedule(refused), [], at("2027-01-11T09:00:00Z"))
    assert ready_of(later.status) == ("False", "InvalidRunTemplate", REFUSED)
    since = next(c for c in refused["conditions"] if c["type"] == "Ready")["lastTransitionTime"]
    assert later.status["conditions"][0]["lastTransitionTime"] == since
    # The next slot's run is accepted (the rule was relaxed): Ready again.
    nxt = plan(schedule(later.status), [], at("2027-01-12T06:00:00Z"))
    assert created(nxt) == ["daily-20270112-060000"]
    accepted = after_create(nxt.status, 1, at("2027-01-12T06:00:00Z"), refused=None)
    assert ready_of(accepted) == ("True", "Scheduling", "")


def test_editing_a_refused_template_makes_the_schedule_ready_again() -> None:
    first = plan(schedule(SEEN_10TH), [], at("2027-01-11T06:00:00Z"))
    refused = after_create(first.status, 1, at("2027-01-11T06:00:00Z"), refused=REFUSED)
    edited = schedule(refused)
    edited["metadata"]["generation"] = 2
    result = plan(edited, [], at("2027-01-11T07:00:00Z"))
    assert ready_of(result.status)[:2] == ("True", "Scheduling")
    assert result.create == []


def test_an_accepted_run_leaves_other_ready_reasons_alone() -> None:
    suspended = plan(schedule(SEEN_10TH, suspend=True), [], at("2027-01-11T06:00:00Z"))
    assert after_create(suspended.status, 1, at("2027-01-11T06:00:00Z"), refused=None) == (
        suspended.status
    )
    # A manual trigger refused while suspended still says why.
    refused = after_create(suspended.status, 1, at("2027-01-11T06:00:00Z"), refused=REFUSED)
    assert ready_of(refused)[:2] == ("False", "InvalidRunTemplate")
    resumed = after_create(refused, 1, at("2027-01-11T06:00:01Z"), refused=None)
    assert ready_of(resumed) == ("False", "Suspended", "spec.suspend is true")


def test_an_unparsable_schedule_is_reported_and_fixing_it_runs_no_old_slot() -> None:
    result = plan(schedule(AFTER_FIRST, schedule="61 6 * * *"), [], at("2027-01-11T06:00:00Z"))
    ready = result.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert "minute" in ready["message"] and result.status["nextScheduleTime"] is None
    fixed = plan(schedule(result.status, schedule="1 6 * * *"), [], at("2027-01-13T07:00:00Z"))
    assert fixed.create == [] and fixed.events == []
    assert fixed.status["nextScheduleTime"] == "2027-01-14T06:01:00Z"


def test_a_schedule_that_never_fires_is_reported() -> None:
    result = plan(schedule(schedule="0 0 30 2 *"), [], at("2027-01-11T06:00:00Z"))
    ready = result.status["conditions"][0]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert result.create == [] and reasons(result) == ["InvalidSchedule"]


def test_after_downtime_only_the_newest_missed_slot_runs() -> None:
    status = {"lastConsideredTime": "2027-01-11T06:00:00Z", "observedSchedule": "0 6 * * * UTC"}
    result = plan(schedule(status), [], at("2027-01-21T07:00:00Z"))
    assert created(result) == ["daily-20270121-060000"]
    missed = next(m for _, r, m in result.events if r == "MissedSchedules")
    assert missed.startswith("skipped 9 missed slots before 2027-01-21T06:00:00Z")


def test_no_limit_of_100_missed_slots() -> None:
    """CronJob gives up after 100 missed slots; a per-second schedule misses 86400 a day."""
    status = {"lastConsideredTime": "2027-01-11T06:00:00Z", "observedSchedule": "* * * * * * UTC"}
    result = plan(schedule(status, schedule="* * * * * *"), [], at("2027-01-12T06:00:00.5Z"))
    assert created(result) == ["daily-20270112-060000"]
    assert any(m.startswith("skipped 86399 missed slots") for _, _, m in result.events)


def test_a_slot_past_its_starting_deadline_is_skipped_and_not_retried() -> None:
    status = {"lastConsideredTime": "2027-01-11T06:00:00Z"}
    result = plan(schedule(status, startingDeadlineSeconds=300), [], at("2027-01-12T06:05:01Z"))
    assert result.create == [] and "MissedDeadline" in reasons(result)
    assert result.status["lastConsideredTime"] == "2027-01-12T06:00:00Z"
    later = plan(
        schedule(result.status, startingDeadlineSeconds=300), [], at("2027-01-12T07:00:00Z")
    )
    assert later.create == [] and later.events == []


def test_within_the_deadline_a_late_slot_runs() -> None:
    status = {"lastConsideredTime": "2027-01-11T06:00:00Z"}
    result = plan(schedule(status, startingDeadlineSeconds=300), [], at("2027-01-12T06:04:59Z"))
    assert created(result) == ["daily-20270112-060000"]


def test_forbid_skips_the_slot_for_good() -> None:
    result = plan(schedule(AFTER_FIRST, concurrencyPolicy="Forbid"), [ACTIVE], DUE)
    assert result.create == [] and reasons(result) == ["SkippedActive"]
    assert "daily-20270111-060000 still running" in result.events[0][2]
    assert result.status["lastConsideredTime"] == "2027-01-12T06:00:00Z"
    # The run finishing later does not make the skipped slot run late (CronJob's would).
    finished = run("2027-01-11T06:00:00Z", "Succeeded", done="2027-01-12T06:30:00Z")
    later = plan(schedule(result.status, concurrencyPolicy="Forbid"), [finished],
                 at("2027-01-12T06:30:01Z"))  # fmt: skip
    assert later.create == [] and later.events == []


def test_replace_stops_the_active_run_and_starts_the_new_one() -> None:
    result = plan(schedule(AFTER_FIRST, concurrencyPolicy="Replace"), [ACTIVE], DUE)
    assert result.replace == [("daily-20270111-060000", "replaced by daily-20270112-060000")]
    assert created(result) == ["daily-20270112-060000"]
    assert reasons(result) == ["Replaced", "RunCreated"]


def test_allow_runs_alongside_and_is_the_default() -> None:
    result = plan(schedule(AFTER_FIRST), [ACTIVE], DUE)
    assert created(result) == ["daily-20270112-060000"] and result.replace == []
    assert result.status["active"] == [
        {"name": "daily-20270111-060000", "scheduledTime": "2027-01-11T06:00:00Z"}
    ]


def test_a_run_created_before_a_crash_is_not_created_again() -> None:
    """The status write after the create was lost; the run's annotation says it exists."""
    made = run("2027-01-12T06:00:00Z", "Pending")
    result = plan(schedule(AFTER_FIRST), [made], at("2027-01-12T06:00:03Z"))
    assert result.create == [] and result.events == []
    assert result.status["lastConsideredTime"] == "2027-01-12T06:00:00Z"


def test_suspend_stops_new_runs_and_resuming_runs_no_old_slot() -> None:
    suspended = plan(schedule(AFTER_FIRST, suspend=True), [], at("2027-01-12T06:00:01Z"))
    assert suspended.create == [] and suspended.wake_at is None
    assert suspended.status["nextScheduleTime"] is None
    conditions = {c["type"]: (c["status"], c["reason"]) for c in suspended.status["conditions"]}
    assert conditions == {"Ready": ("False", "Suspended"), "Suspended": ("True", "Suspended")}
    # Resumed three days later: the slots in between do not run.
    resumed = plan(schedule(suspended.status), [], at("2027-01-15T09:00:00Z"))
    assert resumed.create == [] and resumed.events == []
    assert resumed.status["nextScheduleTime"] == "2027-01-16T06:00:00Z"
    assert resumed.status["lastConsideredTime"] == "2027-01-15T09:00:00Z"


def test_editing_the_schedule_fires_no_run_for_an_earlier_slot() -> None:
    """CronJob's known bug: after an edit, a slot of the new schedule between the last run
    and now fires at once."""
    before = {**AFTER_FIRST, "observedSchedule": "0 6 * * * UTC"}
    result = plan(schedule(before, schedule="0 3 * * *"), [], at("2027-01-12T05:00:00Z"))
    assert result.create == []
    assert result.status["lastConsideredTime"] == "2027-01-12T05:00:00Z"
    assert result.status["observedSchedule"] == "0 3 * * * UTC"
    following = plan(schedule(result.status, schedule="0 3 * * *"), [], at("2027-01-13T03:00:01Z"))
    assert created(following) == ["daily-20270113-030000"]


def test_trigger_runs_the_template_once_per_annotation_value() -> None:
    token = "2027-01-12T05:11:12.345678Z"
    spec = schedule(AFTER_FIRST, annotations={"kubemill.dev/trigger": token})
    result = plan(spec, [ACTIVE], at("2027-01-12T05:11:13Z"))
    assert created(result) == [manual_run_name("daily", token)]
    body = result.create[0][0]
    assert body["metadata"]["labels"]["kubemill.dev/origin"] == "manual"
    assert body["spec"]["parameters"] == {"day": "2027-01-12"}
    assert result.status["lastTrigger"] == token
    again = plan({**spec, "status": result.status}, [ACTIVE], at("2027-01-12T05:11:20Z"))
    assert again.create == []


def test_history_limits_prune_the_earliest_finished_first() -> None:
    runs = [
        # Backfilled for the oldest slot but finished last: kept, the older results go.
        run("2027-01-01T06:00:00Z", "Succeeded", origin="backfill", done="2027-01-08T00:00:00Z"),
        run("2027-01-03T06:00:00Z", "Succeeded", done="2027-01-03T06:10:00Z"),
        run("2027-01-02T06:00:00Z", "Failed", done="2027-01-02T06:10:00Z"),
        run("2027-01-04T06:00:00Z", "Succeeded", done="2027-01-04T06:10:00Z"),
        run("2027-01-05T06:00:00Z", "Failed", done="2027-01-05T06:10:00Z"),
        run("2027-01-06T06:00:00Z", "Succeeded", done="2027-01-06T06:10:00Z"),
        run("2027-01-07T06:00:00Z", "Running"),
    ]
    pruned = [r["metadata"]["name"] for r in finished_to_prune(runs, 2, 1)]
    assert pruned == ["daily-20270103-060000", "daily-20270104-060000", "daily-20270102-060000"]
    assert [r["metadata"]["name"] for r in finished_to_prune(runs, 0, 0)][-1] == (
        "daily-20270105-060000"
    )
    result = plan(schedule(AFTER_FIRST, successfulRunsHistoryLimit=2), runs,
                  at("2027-01-11T07:00:00Z"))  # fmt: skip
    assert [name for name, _ in result.prune] == pruned
    assert result.status["activeCount"] == 1


def test_a_success_pruned_at_once_still_counts_as_the_last_success() -> None:
    runs = [run("2027-01-11T06:00:00Z", "Succeeded", done="2027-01-11T06:10:00Z")]
    result = plan(schedule(AFTER_FIRST, successfulRunsHistoryLimit=0), runs,
                  at("2027-01-11T07:00:00Z"))  # fmt: skip
    assert result.prune == [("daily-20270111-060000", "history limit (Succeeded)")]
    assert result.status["lastSuccessfulTime"] == "2027-01-11T06:10:00Z"


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
def test_manual_and_backfilled_runs_neither_block_nor_get_replaced(policy: str) -> None:
    others = [
        run("2027-01-11T10:00:00Z", "Running", origin="manual"),
        run("2027-01-01T06:00:00Z", "Running", origin="backfill"),
    ]
    result = plan(schedule(AFTER_FIRST, concurrencyPolicy=policy), others, DUE)
    assert created(result) == ["daily-20270112-060000"] and result.replace == []


def test_a_trigger_copied_from_before_the_schedule_existed_is_ignored() -> None:
    spec = schedule(annotations={"kubemill.dev/trigger": "2026-05-01T00:00:00Z"})
    assert plan(spec, [], at("2027-01-10T05:30:00Z")).create == []


def test_backfilled_runs_do_not_block_the_schedule_deletion() -> None:
    body = build_run(schedule(), at("2027-01-01T06:00:00Z"), "daily-20270101-060000", "backfill")
    assert body["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is False


def test_last_successful_time_only_moves_forward() -> None:
    old = {**AFTER_FIRST, "lastSuccessfulTime": "2027-01-11T07:00:00Z"}
    runs = [run("2027-01-10T06:00:00Z", "Succeeded", done="2027-01-10T06:10:00Z")]
    result = plan(schedule(old), runs, at("2027-01-11T08:00:00Z"))
    assert result.status["lastSuccessfulTime"] == "2027-01-11T07:00:00Z"
    newer = [run("2027-01-11T06:00:00Z", "Succeeded", done="2027-01-11T07:30:00Z")]
    result = plan(schedule(old), newer, at("2027-01-11T08:00:00Z"))
    assert result.status["lastSuccessfulTime"] == "2027-01-11T07:30:00Z"


def workflow_schedule(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """The schedule above with a workflow template instead of its run template."""
    body = schedule(status, **spec)
    body["spec"].pop("runTemplate")
    body["spec"]["workflowTemplate"] = {
        "metadata": {"labels": {"team": "reports", "kopf.zalando.org/x": "no"}},
        "spec": {
            "steps": [
                {
                    "name": "load",
                    "runTemplate": {
                        "metadata": {"labels": {"part": "load"}},
                        "spec": {
                            "notebook": "s3://b/load.ipynb",
                            "parameters": {"day": "{{ scheduledDate }}", "n": 1},
                        },
                    },
                },
                {
                    "name": "report",
                    "runTemplate": {
                        "spec": {
                            "notebook": "s3://b/report.ipynb",
                            "parametersFrom": [
                                {"name": "rows", "stepRef": {"name": "load", "result": "rows"}}
                            ],
                        }
                    },
                },
            ],
            "finally": [
                {
                    "name": "notify",
                    "runTemplate": {
                        "spec": {
                            "notebook": "s3://b/notify.ipynb",
                            "parameters": {"about": ["{{ runName }}"]},
                        }
                    },
                }
            ],
        },
    }
    return body


def workflow(slot: str, phase: str | None, origin: str = "schedule", done: str = "") -> Any:
    return {**run(slot, phase, origin, done), "kind": "NotebookWorkflow"}


def test_a_workflow_template_makes_one_workflow_per_slot() -> None:
    result = plan(workflow_schedule(), [], at("2027-01-10T06:00:01Z"))
    assert created(result) == ["daily-20270110-060000"]
    body, reason, message = result.create[0]
    assert (body["kind"], reason) == ("NotebookWorkflow", "RunCreated")
    assert message == "created workflow daily-20270110-060000 for slot 2027-01-10T06:00:00Z"
    assert body["metadata"]["labels"] == {
        "team": "reports",
        "app.kubernetes.io/managed-by": "kubemill",
        "kubemill.dev/schedule": "daily",
        "kubemill.dev/origin": "schedule",
    }
    assert body["metadata"]["annotations"] == {
        "kubemill.dev/scheduled-time": "2027-01-10T06:00:00Z"
    }
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("NotebookSchedule", "sched-uid")
    steps = {s["name"]: s for s in body["spec"]["steps"] + body["spec"]["finally"]}
    assert steps["load"]["runTemplate"]["spec"]["parameters"] == {"day": "2027-01-10", "n": 1}
    assert steps["load"]["runTemplate"]["metadata"] == {"labels": {"part": "load"}}
    assert steps["report"]["runTemplate"]["spec"]["parametersFrom"][0]["stepRef"]["name"] == "load"
    assert steps["notify"]["runTemplate"]["spec"]["parameters"] == {
        "about": ["daily-20270110-060000"]
    }
    # The template itself is left as it was.
    template = workflow_schedule()["spec"]["workflowTemplate"]["spec"]["steps"][0]
    assert template["runTemplate"]["spec"]["parameters"]["day"] == "{{ scheduledDate }}"


def test_a_triggered_workflow_is_named_and_labelled_as_a_manual_run() -> None:
    token = "2027-01-12T05:11:12Z"
    spec = workflow_schedule(AFTER_FIRST, annotations={"kubemill.dev/trigger": token})
    result = plan(spec, [], at("2027-01-12T05:11:13Z"))
    body, reason, message = result.create[0]
    assert body["metadata"]["name"] == manual_run_name("daily", token)
    assert body["metadata"]["labels"]["kubemill.dev/origin"] == "manual"
    assert (reason, message) == ("Triggered", f"created workflow {manual_run_name('daily', token)}"
                                 " (manual trigger)")  # fmt: skip
    backfilled = build_child(spec, at("2027-01-01T06:00:00Z"), "daily-20270101-060000", "backfill")
    assert backfilled["kind"] == "NotebookWorkflow"
    assert backfilled["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is False


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("steps", "spec.workflowTemplate.spec.steps[name=load].runTemplate.spec.parameters.day: "
                  "unknown template variable {{ nope }}"),
        ("finally", "spec.workflowTemplate.spec.finally[name=notify].runTemplate.spec.parameters"
                    ".about[0]: unknown template variable {{ nope }}"),
    ],
)  # fmt: skip
def test_a_bad_variable_in_any_step_makes_the_schedule_not_ready(field: str, message: str) -> None:
    spec = workflow_schedule()
    step = spec["spec"]["workflowTemplate"]["spec"][field][0]
    parameters = step["runTemplate"]["spec"]["parameters"]
    key = next(iter(parameters))
    parameters[key] = "{{ nope }}" if field == "steps" else ["{{ nope }}"]
    result = plan(spec, [], at("2027-01-10T06:00:01Z"))
    assert result.create == []
    assert ready_of(result.status)[:2] == ("False", "InvalidTemplate")
    assert result.events[0][2].startswith(message)


@pytest.mark.parametrize(("step", "for_each", "fits"), [
    ("s" * 23, False, True), ("s" * 24, False, False), ("s" * 19, True, True),
    ("s" * 20, True, False),
])  # fmt: skip
def test_workflow_run_names_must_fit_in_63_characters(
    step: str, for_each: bool, fits: bool
) -> None:
    """A 19-character schedule leaves 63 - 19 - 16 (slot) - 1 ("-") - 4 (attempt) = 23
    characters for a step's name, 19 with forEach (an item index)."""
    spec = workflow_schedule()
    spec["metadata"]["name"] = "d" * 19
    first = spec["spec"]["workflowTemplate"]["spec"]["steps"][0]
    first["name"] = step
    if for_each:
        first["forEach"] = {"parameter": "x", "items": [1]}
    result = plan(spec, [], at("2027-01-10T06:00:01Z"))
    if fits:
        assert len(created(result)) == 1
    else:
        assert result.create == [] and result.events[0][1] == "InvalidTemplate"
        assert "beyond 63 characters" in result.events[0][2]


def test_both_templates_are_refused() -> None:
    spec = workflow_schedule()
    spec["spec"]["runTemplate"] = schedule()["spec"]["runTemplate"]
    result = plan(spec, [], at("2027-01-10T06:00:01Z"))
    assert result.create == [] and ready_of(result.status)[1] == "InvalidTemplate"


def test_forbid_and_replace_see_active_workflows() -> None:
    active = workflow("2027-01-11T06:00:00Z", "Running")
    forbid = plan(workflow_schedule(AFTER_FIRST, concurrencyPolicy="Forbid"), [active], DUE)
    assert forbid.create == [] and reasons(forbid) == ["SkippedActive"]
    replace = plan(workflow_schedule(AFTER_FIRST, concurrencyPolicy="Replace"), [active], DUE)
    assert replace.replace == [("daily-20270111-060000", "replaced by daily-20270112-060000")]
    assert created(replace) == ["daily-20270112-060000"]
    ended = workflow("2027-01-11T06:00:00Z", "Failed", done="2027-01-11T07:00:00Z")
    allowed = plan(workflow_schedule(AFTER_FIRST, concurrencyPolicy="Forbid"), [ended], DUE)
    assert created(allowed) == ["daily-20270112-060000"]


def test_ended_workflows_are_pruned_and_the_last_success_counts() -> None:
    children = [
        workflow("2027-01-08T06:00:00Z", "Succeeded", done="2027-01-08T06:30:00Z"),
        workflow("2027-01-09T06:00:00Z", "Succeeded", done="2027-01-09T06:30:00Z"),
        workflow("2027-01-10T06:00:00Z", "Failed", done="2027-01-10T06:30:00Z"),
        workflow("2027-01-11T06:00:00Z", "Running"),
    ]
    result = plan(workflow_schedule(AFTER_FIRST, successfulRunsHistoryLimit=1,
                                    failedRunsHistoryLimit=0), children,
                  at("2027-01-11T07:00:00Z"))  # fmt: skip
    assert [name for name, _ in result.prune] == ["daily-20270108-060000", "daily-20270110-060000"]
    assert result.status["lastSuccessfulTime"] == "2027-01-09T06:30:00Z"
    assert result.status["active"] == [
        {"name": "daily-20270111-060000", "scheduledTime": "2027-01-11T06:00:00Z"}
    ]


def test_the_workflow_name_limits_are_the_workflow_crds() -> None:
    gen = hack_scripts.load("gen_workflow_crd")
    assert (RUN_NAME_LIMIT, STEP_SEPARATOR, ITEM_SUFFIX, ATTEMPT_SUFFIX) == (
        gen.NAME_LIMIT,
        gen.STEP_SEPARATOR,
        gen.ITEM_SUFFIX,
        gen.ATTEMPT_SUFFIX,
    )


def test_the_schedule_crd_is_generated_from_its_sources() -> None:
    """crds/kubemill.dev_notebookschedules.yaml is written by hack/gen_schedule_crd.py from
    the NotebookRun CRD and the cron pattern; run `make crds` after changing either."""
    root = Path(__file__).resolve().parents[2]
    gen_schedule_crd = hack_scripts.load("gen_schedule_crd")

    assert (root / "crds" / "kubemill.dev_notebookschedules.yaml").read_text() == (
        gen_schedule_crd.render()
    ), "the schedule CRD is stale: run make crds"
