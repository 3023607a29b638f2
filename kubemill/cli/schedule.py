"""`kubemill schedule preview`: a cron schedule's next slots, exactly as the operator fires them.

It needs nothing beyond the runner's dependencies (it works in the runner image too): the slots
come from the operator's own pure functions (`kubemill.operator.cron`), so what preview prints is
what the operator fires. Also home to what the schedule commands share: `UsageError`, the
`--from`/`--to` moments, and `usage_errors`, their error edge.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from kubemill.operator.cron import CronError, Schedule
from kubemill.operator.times import rfc3339
from kubemill.runner.contract import ExitCode

from . import Handler

__all__ = [
    "BAD_INPUT",
    "UsageError",
    "declare_schedule",
    "parse_moment",
    "positive",
    "preview_slots",
    "usage_errors",
]

#: Exit code of a command line or schedule that cannot work: the runner's, for one meaning.
BAD_INPUT = int(ExitCode.BAD_INPUT)

#: A schedule command: parsed arguments and where to print, an exit code out.
ScheduleCommand = Callable[[argparse.Namespace, TextIO], int]


class UsageError(Exception):
    """What the user must change: printed as one line, `kubemill COMMAND: error: …`, exit 2."""


def usage_errors(command: ScheduleCommand) -> Handler:
    """The handler `kubemill` calls: prints to stdout, and a UsageError is one line and exit 2."""

    @functools.wraps(command)
    def guarded(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        try:
            return command(args, sys.stdout)
        except UsageError as exc:
            print(f"kubemill {args.command}: error: {exc}", file=sys.stderr)
            return BAD_INPUT

    return guarded


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def parse_moment(text: str, zone: ZoneInfo, *, end_of_day: bool = False) -> datetime.datetime:
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


def cmd_preview(args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.schedule) == bool(args.file):
        raise UsageError('give a schedule ("30 2 * * *") or -f MANIFEST, not both or neither')
    expression, time_zone = _from_file(args.file) if args.file else (args.schedule, "UTC")
    time_zone = args.time_zone or time_zone
    try:
        zone = Schedule.parse("@daily", time_zone).zone
        start = (
            parse_moment(args.start, zone)
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


def declare_schedule(parser: argparse.ArgumentParser) -> None:
    parser.description = "Check a cron schedule before a NotebookSchedule uses it."
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
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
    preview.add_argument("--count", type=positive, default=10, help="how many slots (default 10)")
    preview.add_argument("--json", action="store_true", help="print JSON for scripts")

    preview.set_defaults(handler=usage_errors(cmd_preview))
