"""What a NotebookSchedule should do now: pure functions from the schedule, its runs and the
clock to the runs to create and delete, the Events to post and the status to write.

A schedule's children are NotebookRuns (spec.runTemplate) or NotebookWorkflows
(spec.workflowTemplate); every rule below holds for both, as both have a status.phase that ends
in Succeeded or Failed and a status.completionTime, so "run" below means either.

The controller (schedule_controller.py) feeds in what the watches saw and carries the plan out.
Keeping the decisions here means every rule below is a table test without a cluster:

- Each slot has one deterministic NotebookRun name, `<schedule>-<YYYYMMDD-HHMMSS>` in UTC, the
  lock against duplicate runs: creating it twice fails with 409 and is success.
- `status.lastConsideredTime` is the watermark: every slot at or before it has been handled
  (a run was created, or it was skipped on purpose). Only later slots are ever looked at, so a
  slot skipped by Forbid never runs late, and creating, editing or resuming a schedule never
  fires a run for a slot before that moment (CronJob does both).
- After downtime only the newest missed slot runs, if it is within startingDeadlineSeconds,
  however many were missed: there is no limit of 100 that stops the schedule.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .cron import CronError, Schedule
from .errors import InvalidSchedule, InvalidSpec, InvalidTemplate
from .meta import (
    GROUP,
    LABEL_ORIGIN,
    LABEL_SCHEDULE,
    MANAGED_BY,
    SCHEDULED_TIME,
    TRIGGER,
    VERSION,
    copied_annotations,
    copied_labels,
    owner_reference,
)
from .status import TERMINAL, condition
from .times import parse_rfc3339, rfc3339

__all__ = [
    "TEMPLATE_VARIABLES",
    "Plan",
    "after_create",
    "build_child",
    "build_run",
    "build_workflow",
    "child_kind",
    "finished_to_prune",
    "manual_run_name",
    "parse_schedule",
    "plan",
    "render_parameters",
    "slot_run_name",
]

#: What `{{ … }}` in a string parameter of the run template may name.
TEMPLATE_VARIABLES = {
    "scheduledTime": "the slot in the schedule's time zone, e.g. 2027-03-28T06:00:00+02:00",
    "scheduledTimeUTC": "the slot in UTC, e.g. 2027-03-28T04:00:00Z",
    "scheduledDate": "the slot's date in the schedule's time zone, e.g. 2027-03-28",
    "scheduleName": "the NotebookSchedule's name",
    "runName": "the NotebookRun's name (with a workflowTemplate, the NotebookWorkflow's)",
}
#: Ready's reason while the API server refuses the runs the template makes.
REJECTED = "InvalidRunTemplate"
#: Counting missed slots stops here; the Event then says "more than".
MISSED_COUNT_LIMIT = 100_000
#: Longest schedule name: its runs add `-YYYYMMDD-HHMMSS` and stay within 63 characters.
MAX_SCHEDULE_NAME = 47
#: What a slot's name adds to the schedule's: `-YYYYMMDD-HHMMSS`, or `-manual-` and 8 hex digits.
SLOT_SUFFIX = 16
#: A workflow's runs are `<workflow>-<step>[-<item>][-r<attempt>]` within 63 characters: "-"
#: before the step, "-" and 3 digits for an item, "-r" and 2 digits for an attempt (the
#: NotebookWorkflow CRD's limits, hack/gen_workflow_crd.py, which a unit test keeps equal).
RUN_NAME_LIMIT, STEP_SEPARATOR, ITEM_SUFFIX, ATTEMPT_SUFFIX = 63, 1, 4, 4

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_UTC = datetime.UTC


def slot_run_name(schedule_name: str, slot: datetime.datetime) -> str:
    """The one name a slot's run can have, so no slot ever gets two runs."""
    return f"{schedule_name}-{slot.astimezone(_UTC):%Y%m%d-%H%M%S}"


def manual_run_name(schedule_name: str, token: str) -> str:
    """A triggered run's name, from the trigger annotation's value: one run per trigger."""
    return f"{schedule_name}-manual-{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def parse_schedule(spec: Mapping[str, Any]) -> Schedule:
    """The spec's schedule, or InvalidSchedule; also one that parses but never fires
    (`0 0 30 2 *`), which the CRD's pattern cannot tell."""
    try:
        schedule = Schedule.parse(str(spec.get("schedule", "")), str(spec.get("timeZone") or "UTC"))
        schedule.next_after(datetime.datetime(2000, 1, 1, tzinfo=_UTC))
    except CronError as exc:
        raise InvalidSchedule(exc.message) from None
    return schedule


def _render(value: Any, variables: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                known = ", ".join(sorted(variables))
                raise InvalidTemplate(
                    f"{where}: unknown template variable {{{{ {name} }}}}; use one of {known}"
                )
            return variables[name]

        text = _PLACEHOLDER.sub(substitute, value)
        if "{{" in _PLACEHOLDER.sub("", value) or "}}" in _PLACEHOLDER.sub("", value):
            raise InvalidTemplate(
                f"{where}: {value!r} has an unclosed or malformed {{{{ }}}} placeholder; "
                "write e.g. {{ scheduledDate }}"
            )
        return text
    if isinstance(value, list):
        return [_render(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _render(v, variables, f"{where}.{k}") for k, v in value.items()}
    return value


def template_variables(
    schedule: Mapping[str, Any], slot: datetime.datetime, run_name: str
) -> dict[str, str]:
    zone = parse_schedule(schedule.get("spec") or {}).zone
    local = slot.astimezone(zone)
    return {
        "scheduledTime": local.isoformat(),
        "scheduledTimeUTC": rfc3339(slot),
        "scheduledDate": local.date().isoformat(),
        "scheduleName": str(schedule["metadata"]["name"]),
        "runName": run_name,
    }


def render_parameters(
    parameters: Mapping[str, Any],
    variables: Mapping[str, str],
    where: str = "spec.runTemplate.spec.parameters",
) -> Any:
    """The template's parameters with every `{{ variable }}` in their strings filled in;
    `where` is the field an error names."""
    return _render(dict(parameters), variables, where)


def child_kind(schedule: Mapping[str, Any]) -> str:
    """NotebookWorkflow for a schedule with spec.workflowTemplate, else NotebookRun."""
    spec = schedule.get("spec") or {}
    return "NotebookWorkflow" if "workflowTemplate" in spec else "NotebookRun"


def build_child(
    schedule: Mapping[str, Any], slot: datetime.datetime, name: str, origin: str
) -> dict[str, Any]:
    """The NotebookRun or NotebookWorkflow (as the template says) for one slot or trigger."""
    spec = schedule.get("spec") or {}
    if "runTemplate" in spec and "workflowTemplate" in spec:
        # The CRD refuses this; said here too for a CRD applied without its rules.
        raise InvalidTemplate(
            "spec.runTemplate and spec.workflowTemplate are both set; keep exactly one"
        )
    if child_kind(schedule) == "NotebookWorkflow":
        return build_workflow(schedule, slot, name, origin)
    return build_run(schedule, slot, name, origin)


def build_run(
    schedule: Mapping[str, Any], slot: datetime.datetime, name: str, origin: str
) -> dict[str, Any]:
    """The NotebookRun for one slot (origin "schedule" or "backfill") or trigger ("manual")."""
    template = (schedule.get("spec") or {}).get("runTemplate") or {}
    spec = dict(template.get("spec") or {})
    if "parameters" in spec:
        variables = template_variables(schedule, slot, name)
        spec["parameters"] = render_parameters(spec["parameters"], variables)
    return _child("NotebookRun", schedule, template, slot, name, origin, spec)


def build_workflow(
    schedule: Mapping[str, Any], slot: datetime.datetime, name: str, origin: str
) -> dict[str, Any]:
    """The NotebookWorkflow for one slot or trigger: the template with every step's (and
    finally step's) string parameters rendered. InvalidTemplate when a run of the workflow
    would be named beyond 63 characters (the CRD checks this too, where its budget allows)."""
    template = (schedule.get("spec") or {}).get("workflowTemplate") or {}
    spec = dict(template.get("spec") or {})
    variables: dict[str, str] | None = None
    for part in ("steps", "finally"):
        steps = []
        for step in spec.get(part) or []:
            step_name = str(step.get("name", ""))
            longest = (
                len(name)
                + STEP_SEPARATOR
                + len(step_name)
                + (ITEM_SUFFIX if "forEach" in step else 0)
                + ATTEMPT_SUFFIX
            )
            if longest > RUN_NAME_LIMIT:
                budget = RUN_NAME_LIMIT - SLOT_SUFFIX - STEP_SEPARATOR - ATTEMPT_SUFFIX
                raise InvalidTemplate(
                    f"spec.workflowTemplate.spec.{part}[name={step_name}]: its runs would be "
                    f"named {name}-{step_name}…, beyond {RUN_NAME_LIMIT} characters; the "
                    f"schedule's name and each step's may have at most {budget} characters "
                    f"together ({budget - ITEM_SUFFIX} for a step with forEach)"
                )
            run_template = step.get("runTemplate") or {}
            run_spec = run_template.get("spec") or {}
            if "parameters" in run_spec:
                variables = variables or template_variables(schedule, slot, name)
                where = (
                    f"spec.workflowTemplate.spec.{part}[name={step_name}]"
                    ".runTemplate.spec.parameters"
                )
                run_spec = {
                    **run_spec,
                    "parameters": render_parameters(run_spec["parameters"], variables, where),
                }
                step = {**step, "runTemplate": {**run_template, "spec": run_spec}}
            steps.append(step)
        if part in spec:
            spec[part] = steps
    return _child("NotebookWorkflow", schedule, template, slot, name, origin, spec)


def _child(
    kind: str,
    schedule: Mapping[str, Any],
    template: Mapping[str, Any],
    slot: datetime.datetime,
    name: str,
    origin: str,
    spec: dict[str, Any],
) -> dict[str, Any]:
    """Backfilled children are created by people, with kubemill backfill: they do not block
    the schedule's deletion, which would need permission on its finalizers (OpenShift)."""
    meta = schedule["metadata"]
    template_meta = template.get("metadata") or {}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {
                **copied_labels(template_meta.get("labels")),
                **MANAGED_BY,
                LABEL_SCHEDULE: meta["name"],
                LABEL_ORIGIN: origin,
            },
            "annotations": {
                **copied_annotations(template_meta.get("annotations")),
                SCHEDULED_TIME: rfc3339(slot),
            },
            "ownerReferences": [
                owner_reference(schedule, "NotebookSchedule", block_deletion=origin != "backfill")
            ],
        },
        "spec": spec,
    }


def _scheduled(run: Mapping[str, Any]) -> datetime.datetime | None:
    return parse_rfc3339((run["metadata"].get("annotations") or {}).get(SCHEDULED_TIME))


def _order(run: Mapping[str, Any]) -> tuple[str, str, str]:
    slot = _scheduled(run)
    meta = run["metadata"]
    return (rfc3339(slot) if slot else "", meta.get("creationTimestamp") or "", meta["name"])


def _finished_order(run: Mapping[str, Any]) -> tuple[str, tuple[str, str, str]]:
    return (str((run.get("status") or {}).get("completionTime") or ""), _order(run))


def finished_to_prune(
    runs: Sequence[Mapping[str, Any]], successful_limit: int, failed_limit: int
) -> list[Mapping[str, Any]]:
    """Finished runs beyond the history limits, the earliest finished first (then the oldest
    slot): a backfill of old slots keeps its fresh results, not last month's runs."""
    doomed: list[Mapping[str, Any]] = []
    for phase, limit in (("Succeeded", successful_limit), ("Failed", failed_limit)):
        finished = sorted(
            (r for r in runs if (r.get("status") or {}).get("phase") == phase),
            key=_finished_order,
        )
        doomed.extend(finished[: max(0, len(finished) - max(0, limit))])
    return doomed


@dataclass
class Plan:
    """What to do now; the controller does it in this order: replace, create, patch status,
    post Events, prune. A prune that fails does not hold up the schedule."""

    #: Runs to create, each with the Event (reason, message) to post once it exists.
    create: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)
    #: (run name, why) of runs to delete before creating: replaced by a newer slot.
    replace: list[tuple[str, str]] = field(default_factory=list)
    #: (run name, why) of finished runs beyond a history limit, deleted last.
    prune: list[tuple[str, str]] = field(default_factory=list)
    #: (type, reason, message) Events on the schedule.
    events: list[tuple[str, str, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    #: When to look again even if nothing changes: the next slot.
    wake_at: datetime.datetime | None = None
    #: The run created for the due slot, if any: lastScheduleTime is reverted if it is rejected.
    slot_run: str | None = None


def _fingerprint(spec: Mapping[str, Any]) -> str:
    return f"{spec.get('schedule', '')} {spec.get('timeZone') or 'UTC'}"


def _is_active(run: Mapping[str, Any]) -> bool:
    return (run.get("status") or {}).get("phase") not in TERMINAL


def plan(
    schedule: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> Plan:
    """Decide, from the schedule, its runs (as last seen) and the time, what to do."""
    meta = schedule["metadata"]
    spec: Mapping[str, Any] = schedule.get("spec") or {}
    old: Mapping[str, Any] = schedule.get("status") or {}
    generation = int(meta.get("generation", 1))
    previous = old.get("conditions") or []
    stamp = rfc3339(now)
    result = Plan()
    status: dict[str, Any] = {
        k: v for k, v in old.items() if k not in ("conditions", "active", "activeCount")
    }
    status["observedGeneration"] = generation
    suspended = bool(spec.get("suspend"))

    try:
        cron = parse_schedule(spec)
        probe = datetime.datetime(2000, 1, 1, tzinfo=_UTC)
        build_child(schedule, probe, slot_run_name(meta["name"], probe), "schedule")
    except InvalidSpec as exc:
        reason = exc.reason
        status["nextScheduleTime"] = None
        status["conditions"] = [
            condition("Ready", False, reason, exc.message, generation, previous, stamp),
            condition("Suspended", suspended, "Suspended", "", generation, previous, stamp),
        ]
        if _condition_reason(previous, "Ready") != reason:
            result.events.append(("Warning", reason, exc.message))
        result.status = _finish(status, runs, set())
        return result

    # The watermark: slots at or before it are handled. Runs the schedule created carry their
    # slot, so a crash between creating a run and writing this status loses nothing.
    created = parse_rfc3339(meta.get("creationTimestamp")) or now
    considered = max(
        [created, parse_rfc3339(old.get("lastConsideredTime")) or created]
        + [s for r in runs if _origin(r) == "schedule" and (s := _scheduled(r))]
    )
    changed = "observedSchedule" in old and old["observedSchedule"] != _fingerprint(spec)
    resumed = _condition_status(previous, "Suspended") == "True" and not suspended
    # Fixed after being unusable: the slots it could not run are not run now either.
    repaired = _condition_reason(previous, "Ready") in ("InvalidSchedule", "InvalidTemplate")
    if changed or resumed or repaired:
        # Slots before this moment belong to a schedule that was off, or was another schedule.
        considered = max(considered, now)
    status["observedSchedule"] = _fingerprint(spec)

    # The concurrency policy is about the runs the schedule starts itself: a manual trigger or
    # a backfill is never blocked or replaced by it (as jobs made from a CronJob by hand).
    active = [r for r in runs if _is_active(r) and _origin(r) == "schedule"]
    # While suspended the watermark stays put (moving it with the clock would rewrite the
    # status on every pass); resuming moves it to that moment instead.
    latest = None if suspended else cron.latest_at_or_before(now, after=considered)
    if latest is not None:
        missed = cron.count(considered, now, limit=MISSED_COUNT_LIMIT) - 1
        _fire(result, schedule, cron, latest, missed, active, now)
        considered = latest
        if result.create:
            status["lastScheduleTime"] = rfc3339(latest)
            result.slot_run = result.create[0][0]["metadata"]["name"]
    status["lastConsideredTime"] = rfc3339(considered)

    token = (meta.get("annotations") or {}).get(TRIGGER)
    requested = parse_rfc3339(token)
    # A token older than the schedule came with a copy of another schedule (kubectl get -o yaml,
    # a restore): it was that schedule's trigger, not a request to this one.
    if token and token != old.get("lastTrigger") and not (requested and requested < created):
        moment = (requested or now).replace(microsecond=0)
        name = manual_run_name(meta["name"], token)
        manual = build_child(schedule, moment, name, "manual")
        noun = _noun(schedule)
        result.create.append((manual, "Triggered", f"created {noun} {name} (manual trigger)"))
        status["lastTrigger"] = token

    creating = {r["metadata"]["name"] for r, _, _ in result.create}
    replaced = {name for name, _ in result.replace}
    kept = [r for r in runs if r["metadata"]["name"] not in replaced]
    for old_run in finished_to_prune(
        kept,
        int(spec.get("successfulRunsHistoryLimit", 3)),
        int(spec.get("failedRunsHistoryLimit", 1)),
    ):
        if old_run["metadata"]["name"] not in creating:
            phase = old_run["status"]["phase"]
            result.prune.append((old_run["metadata"]["name"], f"history limit ({phase})"))

    status["nextScheduleTime"] = None if suspended else rfc3339(cron.next_after(now))
    result.wake_at = None if suspended else cron.next_after(now)
    rejected = _rejection(previous, generation)
    if suspended:
        ready = (False, "Suspended", "spec.suspend is true")
    elif rejected is not None:
        # Until a run made from this template is accepted, or the template changes.
        ready = (False, REJECTED, rejected)
    else:
        ready = (True, "Scheduling", "")
    status["conditions"] = [
        condition("Ready", *ready, generation, previous, stamp),
        condition(
            "Suspended",
            suspended,
            "Suspended" if suspended else "Active",
            "",
            generation,
            previous,
            stamp,
        ),
    ]
    gone = replaced | {name for name, _ in result.prune}
    result.status = _finish(status, runs, gone)
    return result


def _fire(
    result: Plan,
    schedule: Mapping[str, Any],
    cron: Schedule,
    slot: datetime.datetime,
    missed: int,
    active: Sequence[Mapping[str, Any]],
    now: datetime.datetime,
) -> None:
    """Run the newest due slot, or say why not."""
    meta, spec = schedule["metadata"], schedule.get("spec") or {}
    when = rfc3339(slot)
    if missed > 0:
        count = f"at least {missed}" if missed + 1 >= MISSED_COUNT_LIMIT else str(missed)
        result.events.append(
            (
                "Warning",
                "MissedSchedules",
                f"skipped {count} missed slot{'s' if missed != 1 else ''} before {when} (the "
                "operator was down or behind); only the latest runs, use kubemill backfill for "
                "the others",
            )
        )
    deadline = spec.get("startingDeadlineSeconds")
    late = (now - slot).total_seconds()
    if deadline is not None and late > int(deadline):
        result.events.append(
            (
                "Warning",
                "MissedDeadline",
                f"slot {when} not run: it is {late:.0f}s late, more than startingDeadlineSeconds "
                f"({deadline})",
            )
        )
        return
    name = slot_run_name(meta["name"], slot)
    others = [r for r in active if r["metadata"]["name"] != name]
    policy = spec.get("concurrencyPolicy", "Allow")
    if others and policy == "Forbid":
        names = ", ".join(r["metadata"]["name"] for r in others)
        result.events.append(
            (
                "Normal",
                "SkippedActive",
                f"slot {when} skipped: {names} still running (concurrencyPolicy Forbid)",
            )
        )
        return
    if others and policy == "Replace":
        for run in others:
            result.replace.append((run["metadata"]["name"], f"replaced by {name}"))
            result.events.append(
                (
                    "Normal",
                    "Replaced",
                    f"stopped {run['metadata']['name']} for {name} (concurrencyPolicy Replace)",
                )
            )
    result.create.append(
        (
            build_child(schedule, slot, name, "schedule"),
            "RunCreated",
            f"created {_noun(schedule)} {name} for slot {when}",
        )
    )


def _noun(schedule: Mapping[str, Any]) -> str:
    return "workflow" if child_kind(schedule) == "NotebookWorkflow" else "run"


def _rejection(conditions: Sequence[Mapping[str, Any]], generation: int) -> str | None:
    """The API server's message when the last run made from this generation's template was
    refused; None otherwise."""
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    if ready is None or ready.get("reason") != REJECTED:
        return None
    if ready.get("observedGeneration") != generation:
        return None
    return str(ready.get("message") or "")


def after_create(
    status: Mapping[str, Any],
    generation: int,
    now: datetime.datetime,
    *,
    refused: str | None,
) -> dict[str, Any]:
    """The status once a run made from the template was created (`refused` None) or refused by
    the API server (its message, e.g. an invalid label value or a rule only an admission webhook
    knows): Ready=False with reason InvalidRunTemplate, so a schedule whose every run is refused
    does not look healthy; and Ready again as soon as one is accepted."""
    conditions = list(status.get("conditions") or [])
    suspended = _condition_status(conditions, "Suspended") == "True"
    if refused is not None:
        ready = condition("Ready", False, REJECTED, refused, generation, conditions, rfc3339(now))
    elif _condition_reason(conditions, "Ready") == REJECTED:
        reason = "Suspended" if suspended else "Scheduling"
        message = "spec.suspend is true" if suspended else ""
        ready = condition(
            "Ready", not suspended, reason, message, generation, conditions, rfc3339(now)
        )
    else:
        return dict(status)
    others = [c for c in conditions if c.get("type") != "Ready"]
    return {**status, "conditions": [ready, *others]}


def _origin(run: Mapping[str, Any]) -> str:
    return str((run["metadata"].get("labels") or {}).get(LABEL_ORIGIN, ""))


def _condition_status(conditions: Sequence[Mapping[str, Any]], kind: str) -> str | None:
    return next((str(c.get("status")) for c in conditions if c.get("type") == kind), None)


def _condition_reason(conditions: Sequence[Mapping[str, Any]], kind: str) -> str | None:
    return next((str(c.get("reason")) for c in conditions if c.get("type") == kind), None)


def _finish(
    status: dict[str, Any], runs: Sequence[Mapping[str, Any]], gone: set[str]
) -> dict[str, Any]:
    """Fill in what follows from the runs: the active ones (but those about to be deleted) and
    the last success (of all, so a success pruned at once still counts)."""
    active = sorted(
        (r for r in runs if _is_active(r) and r["metadata"]["name"] not in gone), key=_order
    )
    status["active"] = [
        {
            "name": r["metadata"]["name"],
            **({"scheduledTime": rfc3339(s)} if (s := _scheduled(r)) else {}),
        }
        for r in active
    ]
    status["activeCount"] = len(active)
    successes = [
        t
        for r in runs
        if (r.get("status") or {}).get("phase") == "Succeeded"
        and (t := parse_rfc3339(r["status"].get("completionTime")))
    ]
    last = parse_rfc3339(status.get("lastSuccessfulTime"))
    if successes and (last is None or max(successes) > last):
        status["lastSuccessfulTime"] = rfc3339(max(successes))
    return status
