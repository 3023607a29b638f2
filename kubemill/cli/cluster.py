"""`kubemill trigger` and `kubemill backfill`: a NotebookSchedule's runs (or workflows, for a
workflowTemplate), now or for past slots;
`kubemill retry`: a failed NotebookWorkflow's failed and skipped steps, again.

They talk to the cluster through the official client (the `operator` extra; the runner image has
none, and says so), with the kubeconfig kubectl uses, loaded and its errors worded by the same
module as the operator's (kubemill.operator.client). Run names come from the operator's own
functions, so a backfill's runs have the names the schedule would have given them.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, TextIO

from kubemill.operator.client import NoCluster, connect, describe
from kubemill.operator.cron import Schedule
from kubemill.operator.errors import InvalidSpec
from kubemill.operator.meta import (
    GROUP,
    LABEL_SCHEDULE,
    PLURAL,
    SCHEDULE_PLURAL,
    TRIGGER,
    VERSION,
    WORKFLOW_PLURAL,
)
from kubemill.operator.schedules import (
    build_child,
    child_kind,
    manual_run_name,
    parse_schedule,
    slot_run_name,
)
from kubemill.operator.status import TERMINAL
from kubemill.operator.times import rfc3339
from kubemill.operator.workflows import MAX_ATTEMPTS, RETRY

from . import Handler
from .schedule import ScheduleCommand, UsageError, parse_moment, positive, usage_errors

__all__ = ["connection_options", "declare_backfill", "declare_retry", "declare_trigger"]

#: Exit code of a command that went wrong on the cluster's side (the runner's 1, too).
FAILED = 1
#: Seconds `kubemill trigger` waits for the operator to create the run, unless --timeout says.
TRIGGER_TIMEOUT = 120.0
#: A backfill larger than this needs --max: thousands of runs are rarely what was meant.
DEFAULT_MAX_RUNS = 100


def cluster_errors(command: ScheduleCommand) -> Handler:
    """The handler `kubemill` calls: a wait that gave up, an API server's refusal or an
    unreachable one is one line and exit 1 (a UsageError, one line and exit 2)."""

    @usage_errors
    def guarded(args: argparse.Namespace, out: TextIO) -> int:
        try:
            return command(args, out)
        except TimeoutError as exc:
            print(f"kubemill {args.command}: {exc}", file=sys.stderr)
            return FAILED
        except UsageError:
            raise
        except Exception as exc:
            problem = describe(exc)
            if problem is None:
                raise
            print(f"kubemill {args.command}: error: {problem}", file=sys.stderr)
            return FAILED

    return guarded


def declare_trigger(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Ask the operator to run a NotebookSchedule's template now (sets the "
        f"{TRIGGER} annotation), and wait until the run exists. The concurrency policy does "
        "not apply to a manual trigger."
    )
    parser.set_defaults(handler=cluster_errors(cmd_trigger))
    parser.add_argument("schedule", help="NotebookSchedule name")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the run")
    _cluster_options(parser)


def declare_backfill(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Create one run per past slot between --from and --to (both included; a "
        "bare date as --to means its whole day), named as the schedule names them, so a "
        "backfill repeated creates nothing twice. With concurrencyPolicy Forbid or Replace the "
        "runs go one at a time, each after the schedule's active runs finish."
    )
    parser.set_defaults(handler=cluster_errors(cmd_backfill))
    parser.add_argument("schedule", help="NotebookSchedule name")
    parser.add_argument("--from", dest="start", required=True, help="first slot (date or time)")
    parser.add_argument("--to", dest="end", required=True, help="last slot (date or time)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs, create none")
    parser.add_argument(
        "--max",
        type=positive,
        default=DEFAULT_MAX_RUNS,
        help=f"refuse more runs than this (default {DEFAULT_MAX_RUNS})",
    )
    _cluster_options(parser)


def declare_retry(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Re-run a failed NotebookWorkflow's failed and skipped steps (and its finally steps) "
        f"as its next attempt, reusing the steps that succeeded: sets the {RETRY} annotation "
        "(which a GitOps tool may set too) and waits until the operator has started the "
        "attempt. The runs of earlier attempts stay, to look at."
    )
    parser.set_defaults(handler=cluster_errors(cmd_retry))
    parser.add_argument("workflow", help="NotebookWorkflow name")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the operator")
    _cluster_options(parser, "workflow's")


def connection_options(parser: argparse.ArgumentParser, namespace: str) -> None:
    """-n/--namespace (`namespace` says whose), --kubeconfig and --context, as kubectl's."""
    parser.add_argument("-n", "--namespace", help=f"{namespace} (default: kubeconfig's)")
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def _cluster_options(parser: argparse.ArgumentParser, whose: str = "schedule's") -> None:
    connection_options(parser, f"the {whose} namespace")
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds to wait for the operator (trigger) or for active runs (backfill with "
        "Forbid or Replace); default: trigger 120, backfill as long as it takes",
    )


def cmd_trigger(args: argparse.Namespace, out: TextIO) -> int:
    api = _Api(args.kubeconfig, args.context)
    namespace = args.namespace or api.default_namespace
    schedule = api.schedule(namespace, args.schedule)
    now = datetime.datetime.now(datetime.UTC)
    token = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = manual_run_name(args.schedule, token)
    try:
        parse_schedule(schedule.get("spec") or {})
        build_child(schedule, now, name, "manual")
    except InvalidSpec as exc:
        raise UsageError(f"the schedule cannot run: {exc.message}") from None
    api.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        SCHEDULE_PLURAL,
        args.schedule,
        {"metadata": {"annotations": {TRIGGER: token}}},
    )
    plural, resource = _children(schedule)
    if args.no_wait:
        out.write(f"{resource}/{name} requested\n")
        return 0
    _until(
        api,
        namespace,
        plural,
        {"label_selector": f"{LABEL_SCHEDULE}={args.schedule}"},
        lambda runs: name in runs,
        args.timeout or TRIGGER_TIMEOUT,
        f"the operator to create {name}",
    )
    out.write(f"{resource}/{name} created\n")
    return 0


def _children(schedule: Mapping[str, Any]) -> tuple[str, str]:
    """The plural and the kubectl resource name of what the schedule creates."""
    if child_kind(schedule) == "NotebookWorkflow":
        return WORKFLOW_PLURAL, "notebookworkflow.kubemill.dev"
    return PLURAL, "notebookrun.kubemill.dev"


def _slots(
    schedule: Schedule, start: datetime.datetime, end: datetime.datetime, most: int
) -> list[datetime.datetime]:
    """The slots in [start, end], at most `most` of them (a year of a per-second schedule is
    not worth listing to refuse it)."""
    return list(islice(schedule.slots(start - datetime.timedelta(microseconds=1), end), most))


def cmd_backfill(args: argparse.Namespace, out: TextIO) -> int:
    api = _Api(args.kubeconfig, args.context)
    namespace = args.namespace or api.default_namespace
    schedule = api.schedule(namespace, args.schedule)
    spec = schedule.get("spec") or {}
    try:
        cron = parse_schedule(spec)
    except InvalidSpec as exc:
        raise UsageError(f"the schedule cannot run: {exc.message}") from None
    start = parse_moment(args.start, cron.zone)
    end = parse_moment(args.end, cron.zone, end_of_day=True)
    now = datetime.datetime.now(datetime.UTC)
    if end > now:
        end = now
    if start > end:
        raise UsageError("--from must be before --to (and in the past)")
    slots = _slots(cron, start, end, args.max + 1)
    if len(slots) > args.max:
        raise UsageError(
            f"there are more than --max {args.max} slots between {rfc3339(start)} and "
            f"{rfc3339(end)}: narrow the range or raise --max"
        )
    policy = spec.get("concurrencyPolicy", "Allow")
    sequential = policy != "Allow"
    out.write(
        f"{len(slots)} slot{'s' if len(slots) != 1 else ''} of {namespace}/{args.schedule} "
        f"({spec.get('schedule')} {spec.get('timeZone', 'UTC')}), "
        + ("one at a time (concurrencyPolicy " + policy + ")\n" if sequential else "all at once\n")
    )
    plural, resource = _children(schedule)
    # Both kinds: after a switch between runTemplate and workflowTemplate, a slot that ran as
    # the other kind has run (the operator counts it too), and its runs may still be active.
    kinds = (plural, *(p for p in (PLURAL, WORKFLOW_PLURAL) if p != plural))
    existing = {
        r["metadata"]["name"] for p in kinds for r in api.children(namespace, p, args.schedule)
    }
    created = skipped = 0
    for slot in slots:
        name = slot_run_name(args.schedule, slot)
        if name in existing:
            out.write(f"{name} exists already ({rfc3339(slot)})\n")
            skipped += 1
            continue
        if args.dry_run:
            out.write(f"{name} would be created ({rfc3339(slot)})\n")
            continue
        if sequential:
            for each in kinds:
                _until(
                    api,
                    namespace,
                    each,
                    {"label_selector": f"{LABEL_SCHEDULE}={args.schedule}"},
                    _none_active,
                    args.timeout,
                    f"the active runs of {args.schedule} to finish (concurrencyPolicy {policy})",
                )
        try:
            run = build_child(schedule, slot, name, "backfill")
        except InvalidSpec as exc:
            raise UsageError(f"the schedule cannot run: {exc.message}") from None
        try:
            api.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, run)
        except api.error as exc:
            if exc.status != 409:
                raise
            out.write(f"{name} exists already ({rfc3339(slot)})\n")
            skipped += 1
            continue
        created += 1
        out.write(f"{resource}/{name} created ({rfc3339(slot)})\n")
    if not args.dry_run:
        out.write(f"created {created}, {skipped} existed already\n")
    return 0


def cmd_retry(args: argparse.Namespace, out: TextIO) -> int:
    api = _Api(args.kubeconfig, args.context)
    namespace = args.namespace or api.default_namespace
    workflow = api.get(namespace, WORKFLOW_PLURAL, args.workflow, "NotebookWorkflow")
    status = workflow.get("status") or {}
    if status.get("phase") != "Failed":
        raise UsageError(
            f"NotebookWorkflow {namespace}/{args.workflow} is {status.get('phase') or 'Pending'}"
            ": only a failed workflow is retried"
        )
    attempt = int(status.get("attempt") or 1)
    if attempt >= MAX_ATTEMPTS:
        raise UsageError(
            f"NotebookWorkflow {namespace}/{args.workflow} has had {attempt} attempts, the most "
            "there can be; create a new workflow to run it again"
        )
    token = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    api.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, WORKFLOW_PLURAL, args.workflow,
        {"metadata": {"annotations": {RETRY: token}}},
    )  # fmt: skip
    failed = [
        s["name"] + (f"[{s['item']}]" if "item" in s else "")
        for s in status.get("steps") or []
        if s.get("phase") in ("Failed", "Skipped")
    ]
    if args.no_wait:
        out.write(f"notebookworkflow.kubemill.dev/{args.workflow} retry requested\n")
        return 0

    def started(found: Mapping[str, Mapping[str, Any]]) -> bool:
        seen = (found.get(args.workflow) or {}).get("status") or {}
        return int(seen.get("attempt") or 1) > attempt

    _until(
        api,
        namespace,
        WORKFLOW_PLURAL,
        {"field_selector": f"metadata.name={args.workflow}"},
        started,
        args.timeout or TRIGGER_TIMEOUT,
        f"the operator to start attempt {attempt + 1} of {args.workflow}",
    )
    out.write(
        f"notebookworkflow.kubemill.dev/{args.workflow} attempt {attempt + 1}: re-running "
        f"{', '.join(failed) or 'the finally steps'}\n"
    )
    return 0


def _none_active(runs: Mapping[str, Mapping[str, Any]]) -> bool:
    return all((r.get("status") or {}).get("phase") in TERMINAL for r in runs.values())


class _Api:
    """The few calls trigger and backfill make, through the official client."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            connection = connect(kubeconfig, context)
        except NoCluster as exc:
            raise UsageError(str(exc)) from None
        from kubernetes import client

        self.default_namespace = connection.namespace
        self.custom = client.CustomObjectsApi(client.ApiClient(connection.configuration))
        self.error = client.ApiException

    def schedule(self, namespace: str, name: str) -> dict[str, Any]:
        return self.get(namespace, SCHEDULE_PLURAL, name, "NotebookSchedule")

    def get(self, namespace: str, plural: str, name: str, kind: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
        except self.error as exc:
            if exc.status == 404:
                raise UsageError(f"{kind} {namespace}/{name} not found") from None
            raise
        return found

    def children(self, namespace: str, plural: str, schedule: str) -> list[dict[str, Any]]:
        """The schedule's runs or workflows (`plural`)."""
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, label_selector=f"{LABEL_SCHEDULE}={schedule}"
        )
        return list(listed.get("items") or [])


def _until(
    api: _Api,
    namespace: str,
    plural: str,
    selector: Mapping[str, str],
    done: Callable[[Mapping[str, dict[str, Any]]], bool],
    timeout: float,
    what: str,
) -> None:
    """Watch the objects `selector` (a label or field selector) picks until `done(objects by
    name)` holds; `timeout` 0 waits as long as it takes (a backfill behind a long notebook)."""
    from kubernetes import watch

    deadline = time.monotonic() + timeout if timeout else float("inf")
    version = None
    runs: dict[str, dict[str, Any]] = {}
    while True:
        if version is None:  # first, and after the watch's version expired (410 Gone)
            listed = api.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, **selector
            )
            runs = {r["metadata"]["name"]: r for r in listed.get("items") or []}
            version = listed["metadata"]["resourceVersion"]
        if done(runs):
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}")
        stream = watch.Watch().stream(
            api.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            **selector,
            resource_version=version,
            timeout_seconds=max(1, min(300, int(min(left, 1e9)))),
        )
        try:
            for event in stream:
                run = event["object"]
                version = run["metadata"]["resourceVersion"]
                if event["type"] == "DELETED":
                    runs.pop(run["metadata"]["name"], None)
                else:
                    runs[run["metadata"]["name"]] = run
                if done(runs):
                    return
        except api.error as exc:
            if exc.status != 410:
                raise
            version = None
