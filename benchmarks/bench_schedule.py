"""Schedule benchmark: how late NotebookSchedules fire, next to CronJobs with the same schedule.

On a real control plane built by the test harness (no node agent, so pods stay Pending: only
creation is measured), --count CronJobs and --count NotebookSchedules, all on "* * * * *" with
concurrencyPolicy Allow, sit in two namespaces at the same time; the CronJobs are served by
kube-controller-manager's cronjob-controller, the NotebookSchedules by the operator (under its
own ServiceAccount, with deploy/'s RBAC). Watches record the wall-clock time each object is
first seen, and the lag is measured from its slot (the time the schedule said):

- CronJob: slot (the Job's batch.kubernetes.io/cronjob-scheduled-timestamp annotation, else
  the unix minute in its name) to the Job;
- NotebookSchedule: slot (the run's kubemill.dev/scheduled-time annotation) to the NotebookRun,
  and to the run's Job (labelled kubemill.dev/run).

Only the --minutes whole slots after every object exists and the operator has written every
schedule's status are counted. Prints p50/p90/p99/max per kind, slots seen, missed or fired
twice, per-minute p99s, and the operator's CPU seconds over those minutes and memory at the end.
Usage: make bench-schedule  (or: python benchmarks/bench_schedule.py --count 200 --minutes 3)
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from kubemill_testenv import kube
from kubemill_testenv.controlplane import ControlPlane, binary_dir
from kubemill_testenv.kubeconfig import api_client
from kubemill_testenv.operatorproc import (
    BENCH_SETTINGS,
    RUNS,
    OperatorProcess,
    install,
    start_operator,
)

JOBS = "/apis/batch/v1/namespaces/{}/jobs"
CRONJOBS = "/apis/batch/v1/namespaces/{}/cronjobs"
SCHEDULES = "/apis/kubemill.dev/v1alpha1/namespaces/{}/notebookschedules"
CRON = "* * * * *"
CRON_NS, SCHEDULE_NS = "bench-cronjobs", "bench-schedules"
CRONJOB_SLOT = "batch.kubernetes.io/cronjob-scheduled-timestamp"
RUN_SLOT = "kubemill.dev/scheduled-time"
LABEL_RUN, LABEL_SCHEDULE = "kubemill.dev/run", "kubemill.dev/schedule"
RUN_NAME = re.compile(r"^(?P<schedule>.+)-(?P<slot>\d{8}-\d{6})$")
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


class Watcher:
    """Records, for each object of one collection, when it was first seen on a watch (wall
    clock), its metadata, and how many times it was ADDED (twice means deleted and re-made)."""

    def __init__(self, api: Any, path: str, label_selector: str | None = None) -> None:
        self.api, self.path = api, path
        self.query = {"labelSelector": label_selector} if label_selector else {}
        self.seen: dict[str, float] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.added: collections.Counter[str] = collections.Counter()
        self.relists = 0
        self._stop = threading.Event()
        self._version = self._list(record=False)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _list(self, record: bool) -> str:
        listed = kube.get(self.api, self.path, **self.query)
        if record:  # after a 410: anything new is seen now, later than it could have been
            now = time.time()
            for obj in listed["items"]:
                self._record(obj, now)
        return str(listed["metadata"]["resourceVersion"])

    def _record(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        if name not in self.seen:
            self.seen[name] = now
            self.meta[name] = obj["metadata"]
            self.added[name] += 1

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for event in kube.watch(
                    self.api, self.path, self._version, timeout_seconds=60, **self.query
                ):
                    now = time.time()
                    obj = event["object"]
                    self._version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "ADDED":
                        if obj["metadata"]["name"] in self.seen:
                            self.added[obj["metadata"]["name"]] += 1
                        self._record(obj, now)
            except ApiException as exc:
                if exc.status != 410:
                    raise
                self.relists += 1
                self._version = self._list(record=True)
            except Exception:
                if self._stop.is_set():
                    return  # the control plane is going away
                time.sleep(0.2)  # a dropped connection: resume from the last version


def parse_time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def cronjob_slot(meta: dict[str, Any], sources: collections.Counter[str]) -> float | None:
    slot = parse_time((meta.get("annotations") or {}).get(CRONJOB_SLOT))
    if slot is not None:
        sources["annotation"] += 1
        return slot
    suffix = meta["name"].rsplit("-", 1)[-1]
    if suffix.isdigit():  # the cronjob-controller names Jobs <cronjob>-<slot in unix minutes>
        sources["name"] += 1
        return int(suffix) * 60.0
    return None


def run_slot(name: str, meta: dict[str, Any] | None) -> float | None:
    slot = parse_time(((meta or {}).get("annotations") or {}).get(RUN_SLOT))
    if slot is None and (match := RUN_NAME.match(name)):
        moment = datetime.datetime.strptime(match["slot"], "%Y%m%d-%H%M%S")
        slot = moment.replace(tzinfo=datetime.UTC).timestamp()
    return slot


class Series:
    """One kind of lag: per (owner, slot in the window), the objects seen and their lags."""

    def __init__(self, label: str, owners: list[str], slots: list[float]) -> None:
        self.label, self.owners, self.slots = label, owners, slots
        self.lag: dict[tuple[str, float], list[float]] = collections.defaultdict(list)
        self.outside: collections.Counter[str] = collections.Counter()
        self.recreated = 0

    def add(self, owner: str | None, slot: float | None, seen: float, added: int) -> None:
        self.recreated += added - 1
        if owner is None or slot is None:
            self.outside["unattributed"] += 1
        elif slot % 60:
            self.outside["off the minute"] += 1
        elif slot < self.slots[0]:
            self.outside["before the window"] += 1
        elif slot > self.slots[-1]:
            self.outside["after the window"] += 1
        else:
            self.lag[(owner, slot)].append(seen - slot)

    def lags(self) -> list[float]:
        return [min(v) for v in self.lag.values()]

    def missed(self) -> list[tuple[str, float]]:
        return [(o, s) for o in self.owners for s in self.slots if (o, s) not in self.lag]

    def twice(self) -> list[tuple[str, float]]:
        return [k for k, v in self.lag.items() if len(v) > 1]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # comm may hold spaces; state is field 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hhmm(slot: float) -> str:
    return datetime.datetime.fromtimestamp(slot, datetime.UTC).strftime("%H:%M")


def namespace(api: Any, name: str) -> str:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kube.request(api, "POST", "/api/v1/namespaces", body=body)
    return name


def cronjob_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name},
        "spec": {
            "schedule": CRON,
            "concurrencyPolicy": "Allow",
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {"name": "main", "image": "busybox", "command": ["true"]}
                            ],
                        }
                    }
                }
            },
        },
    }


def schedule_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": CRON,
            "concurrencyPolicy": "Allow",
            "runTemplate": {
                "spec": {
                    "notebook": "s3://bench/n.ipynb",
                    "parameters": {"day": "{{ scheduledDate }}"},
                }
            },
        },
    }


def wait_scheduled(api: Any, count: int, timeout: float) -> None:
    """Until the operator has written every schedule's status (its first pass over each)."""
    deadline = time.monotonic() + timeout
    while True:
        items = kube.get(api, SCHEDULES.format(SCHEDULE_NS))["items"]
        done = sum(1 for s in items if (s.get("status") or {}).get("nextScheduleTime"))
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the operator wrote only {done} of {count} schedule statuses")
        time.sleep(0.5)  # a poll of one list; the operator needs seconds for 200 schedules


def sleep_until(moment: float) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 1.0))


def log_problems(path: Path, offset: int = 0) -> collections.Counter[str]:
    """WARNING/ERROR/CRITICAL lines and tracebacks in the operator's log after `offset`."""
    levels: collections.Counter[str] = collections.Counter()
    with path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    for line in text.splitlines():
        for level in ("WARNING", "ERROR", "CRITICAL", "Traceback"):
            if level in line:
                levels[level] += 1
    return levels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="CronJobs, and NotebookSchedules")
    parser.add_argument("--minutes", type=int, default=3, help="slots measured per object")
    parser.add_argument(
        "--settle", type=float, default=5.0,
        help="seconds the first measured slot comes at least after set-up is done",
    )  # fmt: skip
    parser.add_argument(
        "--grace", type=float, default=120.0,
        help="seconds after the window to wait for objects still missing",
    )  # fmt: skip
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubemill-bench-schedule-"))
    cp = ControlPlane(workdir=work / "cluster", bin_dir=binary_dir())
    cp.start()
    operator: OperatorProcess | None = None
    kcm = next(p for p in cp.processes if p.name == "kube-controller-manager")
    apiserver = next(p for p in cp.processes if p.name == "kube-apiserver")
    try:
        api = api_client(cp.kubeconfig)
        install(cp)
        operator = start_operator(cp, api, work, BENCH_SETTINGS)
        assert operator.process is not None
        pid = operator.process.pid  # setpriv execs the operator: the same process

        namespace(api, CRON_NS)
        namespace(api, SCHEDULE_NS)
        # One client per watch, so no watch waits for a pooled connection.
        cron_jobs = Watcher(api_client(cp.kubeconfig), JOBS.format(CRON_NS))
        runs = Watcher(api_client(cp.kubeconfig), RUNS.format(SCHEDULE_NS))
        run_jobs = Watcher(api_client(cp.kubeconfig), JOBS.format(SCHEDULE_NS), LABEL_RUN)

        cronjobs = [f"cron-{i:03d}" for i in range(args.count)]
        schedules = [f"sched-{i:03d}" for i in range(args.count)]
        began = time.monotonic()
        for cronjob, schedule in zip(cronjobs, schedules, strict=True):  # interleaved: same age
            kube.request(api, "POST", CRONJOBS.format(CRON_NS), body=cronjob_body(cronjob))
            kube.request(api, "POST", SCHEDULES.format(SCHEDULE_NS), body=schedule_body(schedule))
        created = time.monotonic() - began
        wait_scheduled(api, args.count, timeout=300)
        ready = time.time()
        log_offset = operator.log.stat().st_size
        first = (ready // 60 + 1) * 60
        if first - ready < args.settle:
            first += 60
        slots = [first + 60 * i for i in range(args.minutes)]
        window_end = slots[-1] + 60
        print(
            f"set-up done at {hhmm(ready)}:{ready % 60:04.1f} UTC ({created:.1f} s to create the "
            f"{2 * args.count} objects); measuring slots {hhmm(slots[0])} to {hhmm(slots[-1])}",
            flush=True,
        )

        sleep_until(first - 0.5)
        cpu_before = cpu_seconds(pid)
        kcm_before, apiserver_before = cpu_seconds(kcm.pid), cpu_seconds(apiserver.pid)
        sleep_until(window_end - 0.5)
        cpu_window = cpu_seconds(pid) - cpu_before
        kcm_window = cpu_seconds(kcm.pid) - kcm_before
        apiserver_window = cpu_seconds(apiserver.pid) - apiserver_before

        expected = args.count * args.minutes
        cron_names = {f"{c}-{int(s // 60)}" for c in cronjobs for s in slots}
        run_names = {
            f"{sc}-{datetime.datetime.fromtimestamp(s, datetime.UTC):%Y%m%d-%H%M%S}"
            for sc in schedules
            for s in slots
        }
        deadline = time.time() + args.grace
        while time.time() < deadline and not (
            cron_names <= cron_jobs.seen.keys()
            and run_names <= runs.seen.keys()
            and run_names
            <= {m.get("labels", {}).get(LABEL_RUN) for m in list(run_jobs.meta.values())}
        ):
            time.sleep(0.5)  # the watch threads fill `seen`
        waited = max(0.0, time.time() - window_end)
        memory = rss_mib(pid)
        cpu_total = cpu_seconds(pid)
        startup_problems = log_problems(operator.log) - log_problems(operator.log, log_offset)
        later_problems = log_problems(operator.log, log_offset)
        for watcher in (cron_jobs, runs, run_jobs):
            watcher.stop()
    finally:
        if operator is not None:
            operator.stop()
        cp.stop()

    sources: collections.Counter[str] = collections.Counter()
    cron = Series("CronJob: slot → Job", cronjobs, slots)
    for name, seen in dict(cron_jobs.seen).items():
        meta = cron_jobs.meta[name]
        owner = next((o["name"] for o in meta.get("ownerReferences") or []), None)
        cron.add(owner, cronjob_slot(meta, sources), seen, cron_jobs.added[name])
    run = Series("NotebookSchedule: slot → NotebookRun", schedules, slots)
    for name, seen in dict(runs.seen).items():
        meta = runs.meta[name]
        owner = (meta.get("labels") or {}).get(LABEL_SCHEDULE)
        run.add(owner, run_slot(name, meta), seen, runs.added[name])
    job = Series("NotebookSchedule: slot → its Job", schedules, slots)
    for name, seen in dict(run_jobs.seen).items():
        run_name = (run_jobs.meta[name].get("labels") or {}).get(LABEL_RUN, "")
        match = RUN_NAME.match(run_name)
        owner = ((runs.meta.get(run_name) or {}).get("labels") or {}).get(LABEL_SCHEDULE)
        owner = owner or (match["schedule"] if match else None)
        job.add(owner, run_slot(run_name, runs.meta.get(run_name)), seen, run_jobs.added[name])

    print(
        f'\n{args.count} CronJobs and {args.count} NotebookSchedules, all "{CRON}", at the same '
        f"time for {args.minutes} minutes ({hhmm(slots[0])}-{hhmm(slots[-1])} UTC); lag from "
        "the slot to the object's first appearance on a watch (seconds)"
    )
    print("| | slots seen / expected | missed | fired twice | p50 | p90 | p99 | max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for series in (cron, run, job):
        lags = series.lags()
        print(
            f"| {series.label} | {len(lags)} / {expected} | {len(series.missed())} "
            f"| {len(series.twice()) + series.recreated} | {percentile(lags, 0.5):.2f} "
            f"| {percentile(lags, 0.9):.2f} | {percentile(lags, 0.99):.2f} "
            f"| {max(lags, default=float('nan')):.2f} |"
        )

    print("\np99 (and max) per slot, seconds")
    print("| slot (UTC) | " + " | ".join(s.label for s in (cron, run, job)) + " |")
    print("| --- " * 4 + "|")
    for slot in slots:
        cells = []
        for series in (cron, run, job):
            lags = [min(v) for (_, s), v in series.lag.items() if s == slot]
            cells.append(
                f"{percentile(lags, 0.99):.2f} ({max(lags, default=float('nan')):.2f}), "
                f"n={len(lags)}"
            )
        print(f"| {hhmm(slot)} | " + " | ".join(cells) + " |")

    for series in (cron, run, job):
        problems = [f"missed {o}@{hhmm(s)}" for o, s in series.missed()[:10]] + [
            f"twice {o}@{hhmm(s)}" for o, s in series.twice()[:10]
        ]
        if problems or series.recreated:
            print(f"\n{series.label}: {', '.join(problems)}"
                  f"{f'; {series.recreated} re-created' if series.recreated else ''}")  # fmt: skip
        if series.outside:
            print(f"{series.label}, not counted: {dict(series.outside)}")
    print(
        f"\nCronJob slots read from: {dict(sources)}; watch relists: "
        f"{cron_jobs.relists + runs.relists + run_jobs.relists}; waited {waited:.0f} s after "
        "the window for stragglers"
    )
    print(
        f"operator: {cpu_window:.1f} CPU seconds over the {args.minutes} measured minutes "
        f"({cpu_window / args.minutes:.1f} s per slot of {args.count} schedules; "
        f"{cpu_total:.1f} s since start), resident memory at the end {memory:.0f} MiB"
    )
    print(
        f"kube-controller-manager (shared: its cronjob-controller serves the CronJobs, its "
        f"job-controller the Jobs of both kinds): {kcm_window:.1f} CPU seconds; kube-apiserver "
        f"(shared): {apiserver_window:.1f}; same window"
    )
    print(
        f"operator log {operator.log if operator else '?'}: during set-up "
        f"{dict(startup_problems) or 'clean'}, after it {dict(later_problems) or 'clean'}"
    )


if __name__ == "__main__":
    main()
