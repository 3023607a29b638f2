"""`kubemill schedule preview`, `kubemill trigger` and `kubemill backfill`.

preview needs nothing but the standard library (it runs in the runner image too); trigger and
backfill talk to the cluster through the official client (the `operator` extra), with the same
kubeconfig kubectl uses. Slots and run names come from the operator's own functions, so what
preview prints is what the operator fires, and a backfill's runs have the names the schedule
would have given them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from kubemill.operator.cron import CronError, Schedule
from kubemill.operator.errors import InvalidSpec
from kubemill.operator.meta import GROUP, LABEL_SCHEDULE, PLURAL, SCHEDULE_PLURAL, TRIGGER, VERSION
from kubemill.operator.schedules import (
    build_run,
    manual_run_name,
    parse_schedule,
    rfc3339,
    slot_run_name,
)
from kubemill.operator.status import TERMINAL

__all__ = ["main", "preview_slots"]

#: Exit codes, as the runner's: 2 for bad input, 1 for anything else that went wrong.
BAD_INPUT, FAILED = 2, 1
#: Seconds `kubemill trigger` waits for the operator to create the run, unless --timeout says.
TRIGGER_TIMEOUT = 120.0
#: A backfill larger than this needs --max: thousands of runs are rarely what was meant.
DEFAULT_MAX_RUNS = 100


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


class UsageError(Exception):
    pass


def _moment(text: str, zone: ZoneInfo, *, end_of_day: bool = False) -> datetime.datetime:
    """A --from/--to value: a date or an ISO date-time, in the schedule's zone unless it has an
    offset. A bare date as --to means the end of that day, so --to 2027-03-05 includes it."""
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            if end_of_day:
                day += datetime.timedelta(days=1)
            moment = datetime.datetime.combine(day, datetime.time(), zone)
            return moment - datetime.timedelta(microseconds=1) if end_of_day else moment
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{text!r} is not a date or time; write e.g. 2027-03-27 or 2027-03-27T06:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def _note(schedule: Schedule, slot: datetime.datetime) -> str:
    """Why a slot is not simply a wall-clock time the expression names, around DST changes."""
    local = slot.astimezone(schedule.zone)
    naive = local.replace(tzinfo=None)
    if not schedule.cron.matches(naive):
        return "DST starts: the scheduled time does not exist; runs at the first valid time"
    other = naive.replace(fold=1 - local.fold).replace(tzinfo=schedule.zone)
    if other.utcoffset() != local.utcoffset():
        if schedule.cron.every_hour:
            return f"DST ends: {'second' if local.fold else 'first'} pass of a repeated hour"
        return "DST ends: this time happens twice; runs once, on the first"
    return ""


def preview_slots(
    expression: str, time_zone: str, start: datetime.datetime, count: int
) -> list[dict[str, str]]:
    """The next `count` slots from `start` (inclusive), as the operator fires them."""
    schedule = Schedule.parse(expression, time_zone)
    slots: list[dict[str, str]] = []
    moment = start - datetime.timedelta(microseconds=1)
    for _ in range(count):
        moment = schedule.next_after(moment)
        local = moment.astimezone(schedule.zone)
        slots.append(
            {
                "time": local.isoformat(),
                "utc": rfc3339(moment),
                "zone": local.tzname() or "",
                "note": _note(schedule, moment),
            }
        )
    return slots


def _from_file(path: str) -> tuple[str, str]:
    """spec.schedule and spec.timeZone of the NotebookSchedule in a manifest ('-': stdin)."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    found = [d for d in docs if d.get("kind") == "NotebookSchedule"]
    if len(found) != 1:
        raise UsageError(f"{path} holds {len(found)} NotebookSchedules; preview needs exactly one")
    spec = found[0].get("spec") or {}
    if not isinstance(spec.get("schedule"), str):
        raise UsageError(f"{path}: the NotebookSchedule has no spec.schedule")
    return spec["schedule"], str(spec.get("timeZone") or "UTC")


def cmd_preview(args: argparse.Namespace, out: Any) -> int:
    if bool(args.schedule) == bool(args.file):
        raise UsageError('give a schedule ("30 2 * * *") or -f MANIFEST, not both or neither')
    expression, time_zone = _from_file(args.file) if args.file else (args.schedule, "UTC")
    time_zone = args.time_zone or time_zone
    try:
        zone = Schedule.parse("@daily", time_zone).zone
        start = (
            _moment(args.start, zone)
            if args.start
            else datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        )
        slots = preview_slots(expression, time_zone, start, args.count)
    except CronError as exc:
        raise UsageError(exc.message) from None
    if args.json:
        json.dump({"schedule": expression, "timeZone": time_zone, "slots": slots}, out, indent=2)
        out.write("\n")
        return 0
    shown = []
    for slot in slots:
        local = datetime.datetime.fromisoformat(slot["time"])
        shown.append(f"{local:%a %Y-%m-%d %H:%M:%S} {slot['zone']}")
    width = max((len(text) for text in shown), default=0)
    for text, slot in zip(shown, slots, strict=True):
        note = f"  {slot['note']}" if slot["note"] else ""
        out.write(f"{text:<{width}}  {slot['utc']}{note}\n")
    return 0


class _Api:
    """The few calls trigger and backfill make, through the official client."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        try:
            from kubernetes import client, config
        except ImportError:
            raise UsageError(
                "this command needs the Kubernetes client: pip install 'kubemill[operator]'"
            ) from None
        try:
            config.load_kube_config(config_file=kubeconfig, context=context)
            contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
            chosen = next((c for c in contexts if c.get("name") == context), current)
            self.default_namespace = (chosen or {}).get("context", {}).get("namespace", "default")
        except config.ConfigException as exc:
            if kubeconfig or context:
                raise UsageError(f"cannot use the kubeconfig: {exc}") from None
            try:
                config.load_incluster_config()
            except config.ConfigException:
                raise UsageError(
                    f"no cluster to talk to: {exc}; set KUBECONFIG or pass --kubeconfig"
                ) from None
            self.default_namespace = "default"
        self.custom = client.CustomObjectsApi()
        self.error = client.ApiException

    def schedule(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, SCHEDULE_PLURAL, name
            )
        except self.error as exc:
            if exc.status == 404:
                raise UsageError(f"NotebookSchedule {namespace}/{name} not found") from None
            raise
        return found

    def runs(self, namespace: str, schedule: str) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=f"{LABEL_SCHEDULE}={schedule}"
        )
        return list(listed.get("items") or [])


def _until(
    api: _Api,
    namespace: str,
    schedule: str,
    done: Callable[[Mapping[str, dict[str, Any]]], bool],
    timeout: float,
    what: str,
) -> None:
    """Watch the schedule's runs until `done(runs by name)` holds; `timeout` 0 waits as long
    as it takes (a backfill behind a long notebook)."""
    from kubernetes import watch

    deadline = time.monotonic() + timeout if timeout else float("inf")
    version = None
    runs: dict[str, dict[str, Any]] = {}
    while True:
        if version is None:  # first, and after the watch's version expired (410 Gone)
            listed = api.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, label_selector=f"{LABEL_SCHEDULE}={schedule}"
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
            PLURAL,
            label_selector=f"{LABEL_SCHEDULE}={schedule}",
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


def cmd_trigger(args: argparse.Namespace, out: Any) -> int:
    api = _Api(args.kubeconfig, args.context)
    namespace = args.namespace or api.default_namespace
    schedule = api.schedule(namespace, args.schedule)
    now = datetime.datetime.now(datetime.UTC)
    token = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    name = manual_run_name(args.schedule, token)
    try:
        parse_schedule(schedule.get("spec") or {})
        build_run(schedule, now, name, "manual")
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
    if args.no_wait:
        out.write(f"notebookrun.kubemill.dev/{name} requested\n")
        return 0
    _until(
        api,
        namespace,
        args.schedule,
        lambda runs: name in runs,
        args.timeout or TRIGGER_TIMEOUT,
        f"the operator to create {name}",
    )
    out.write(f"notebookrun.kubemill.dev/{name} created\n")
    return 0


def _slots(
    schedule: Schedule, start: datetime.datetime, end: datetime.datetime, most: int
) -> list[datetime.datetime]:
    """The slots in [start, end], at most `most` of them (a year of a per-second schedule is
    not worth listing to refuse it)."""
    return list(islice(schedule.slots(start - datetime.timedelta(microseconds=1), end), most))


def cmd_backfill(args: argparse.Namespace, out: Any) -> int:
    api = _Api(args.kubeconfig, args.context)
    namespace = args.namespace or api.default_namespace
    schedule = api.schedule(namespace, args.schedule)
    spec = schedule.get("spec") or {}
    try:
        cron = parse_schedule(spec)
    except InvalidSpec as exc:
        raise UsageError(f"the schedule cannot run: {exc.message}") from None
    start = _moment(args.start, cron.zone)
    end = _moment(args.end, cron.zone, end_of_day=True)
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
    existing = {r["metadata"]["name"] for r in api.runs(namespace, args.schedule)}
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
            _until(
                api,
                namespace,
                args.schedule,
                _none_active,
                args.timeout,
                f"the active runs of {args.schedule} to finish (concurrencyPolicy {policy})",
            )
        try:
            run = build_run(schedule, slot, name, "backfill")
        except InvalidSpec as exc:
            raise UsageError(f"the schedule cannot run: {exc.message}") from None
        try:
            api.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, run)
        except api.error as exc:
            if exc.status != 409:
                raise
            out.write(f"{name} exists already ({rfc3339(slot)})\n")
            skipped += 1
            continue
        created += 1
        out.write(f"notebookrun.kubemill.dev/{name} created ({rfc3339(slot)})\n")
    if not args.dry_run:
        out.write(f"created {created}, {skipped} existed already\n")
    return 0


def _none_active(runs: Mapping[str, Mapping[str, Any]]) -> bool:
    return all((r.get("status") or {}).get("phase") in TERMINAL for r in runs.values())


def _cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n", "--namespace", help="the schedule's namespace (default: kubeconfig's)"
    )
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds to wait for the operator (trigger) or for active runs (backfill with "
        "Forbid or Replace); default: trigger 120, backfill as long as it takes",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kubemill", description="NotebookSchedule commands.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    schedule = commands.add_parser("schedule", help="check a cron schedule")
    actions = schedule.add_subparsers(dest="action", metavar="ACTION", required=True)
    preview = actions.add_parser(
        "preview",
        help="print the next slots exactly as the operator fires them",
        description="Print the next slots of a schedule as the operator fires them, "
        "daylight-saving changes included.",
    )
    preview.add_argument("schedule", nargs="?", help='cron schedule, e.g. "30 2 * * *" or @daily')
    preview.add_argument(
        "-f", "--file", help="take schedule and time zone from a NotebookSchedule manifest"
    )
    preview.add_argument(
        "--time-zone", "--tz", help="IANA time zone (default: the manifest's, else UTC)"
    )
    preview.add_argument(
        "--from", dest="start", help="first moment, a date or ISO time in the zone (default now)"
    )
    preview.add_argument("--count", type=_positive, default=10, help="how many slots (default 10)")
    preview.add_argument("--json", action="store_true", help="print JSON for scripts")

    trigger = commands.add_parser(
        "trigger",
        help="run a NotebookSchedule's template now",
        description="Ask the operator to run a NotebookSchedule's template now (sets the "
        f"{TRIGGER} annotation), and wait until the run exists. The concurrency policy does "
        "not apply to a manual trigger.",
    )
    trigger.add_argument("schedule", help="NotebookSchedule name")
    trigger.add_argument("--no-wait", action="store_true", help="do not wait for the run")
    _cluster_options(trigger)

    backfill = commands.add_parser(
        "backfill",
        help="create the runs of past slots",
        description="Create one run per past slot between --from and --to (both included; a "
        "bare date as --to means its whole day), named as the schedule names them, so a "
        "backfill repeated creates nothing twice. With concurrencyPolicy Forbid or Replace the "
        "runs go one at a time, each after the schedule's active runs finish.",
    )
    backfill.add_argument("schedule", help="NotebookSchedule name")
    backfill.add_argument("--from", dest="start", required=True, help="first slot (date or time)")
    backfill.add_argument("--to", dest="end", required=True, help="last slot (date or time)")
    backfill.add_argument("--dry-run", action="store_true", help="list the runs, create none")
    backfill.add_argument(
        "--max",
        type=_positive,
        default=DEFAULT_MAX_RUNS,
        help=f"refuse more runs than this (default {DEFAULT_MAX_RUNS})",
    )
    _cluster_options(backfill)
    return parser


COMMANDS: Mapping[str, Callable[[argparse.Namespace, Any], int]] = {
    "schedule": cmd_preview,
    "trigger": cmd_trigger,
    "backfill": cmd_backfill,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, sys.stdout)
    except UsageError as exc:
        print(f"kubemill {args.command}: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    except TimeoutError as exc:
        print(f"kubemill {args.command}: {exc}", file=sys.stderr)
        return FAILED
    except Exception as exc:
        problem = _cluster_problem(exc)
        if problem is None:
            raise
        print(f"kubemill {args.command}: error: {problem}", file=sys.stderr)
        return FAILED


def _cluster_problem(exc: Exception) -> str | None:
    """What an error of the Kubernetes client or its HTTP library says, in one line."""
    module = type(exc).__module__
    if module.startswith("kubernetes"):
        status, reason = getattr(exc, "status", None), getattr(exc, "reason", "")
        try:
            message = json.loads(getattr(exc, "body", "") or "{}").get("message", reason)
        except ValueError:
            message = reason
        return f"the API server answered {status}: {message}"
    if module.startswith("urllib3"):
        return f"cannot reach the API server: {exc}"
    return None
