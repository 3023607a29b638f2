"""Workflow benchmark: how soon a step's Job follows its upstream's success, against a plain client.

On a real control plane built by the test harness (no node agent, so no pod runs and no kernel is
measured), the benchmark plays the runner: once a step's Job has started it writes the run's
status as the run controller would after a successful notebook (phase Succeeded, `results`,
`outputUrl`, `completionTime`, `jobName`, through the status subresource). For every edge
upstream -> downstream it measures the time from that Succeeded write to the downstream's Job
being seen on a Job watch, for two NotebookWorkflow shapes:

- chain: 20 steps, step i takes `stepRef: {name: step(i-1), result: n}` (19 edges);
- fan-out: `root`, then 50 steps each taking a value from root (root's success -> 50 Jobs).

The baseline, in the same script, is Argo-style plain chaining: a client that watches for a
step's success (a marker ConfigMap the benchmark creates where it would write the run's status)
and at once creates the next step's parameter ConfigMap and Job, the same objects the operator
builds, for the same shapes. The operator runs as a local process under its ServiceAccount with
deploy/'s RBAC, as in bench_operator.py.

The run controller reconciles from the status it wrote last (`Reconciler._written`), not the
one its watch shows, so a Succeeded written from outside before the controller's last write
about the Job's start (the pod, then the Job's startTime, may come in two writes) is overwritten
by its next Pending: the stand-in runner therefore waits until the run's status has `attempts`
and `startTime`, as a real runner's success always comes after them, and the end of the script
checks that every run is still Succeeded. The wait is not part of any measured latency.
Usage: make bench-workflow  (or: python benchmarks/bench_workflow.py --rounds 3)
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemill.operator.jobs import build_job, build_parameter_config_maps
from kubemill.operator.settings import Settings
from kubemill.operator.spec import output_folder
from kubemill.operator.times import rfc3339
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
CONFIG_MAPS = "/api/v1/namespaces/{}/configmaps"
WORKFLOWS = "/apis/kubemill.dev/v1alpha1/namespaces/{}/notebookworkflows"
LABEL_RUN = "kubemill.dev/run"
#: The marker ConfigMaps of the plain baseline carry the finished Job's name in this label.
LABEL_DONE = "bench.kubemill.dev/done"
#: The baseline's Jobs carry their step's name in this label instead of kubemill's.
PLAIN_STEP = "bench.kubemill.dev/step"
SETTINGS = Settings(output_prefix="s3://bench/", runner_image="kubemill-runner:bench")


@dataclass(frozen=True)
class Shape:
    name: str
    #: (step, upstream step or None), upstreams first.
    steps: tuple[tuple[str, str | None], ...]

    def edges(self) -> list[tuple[str, str]]:
        return [(up, step) for step, up in self.steps if up is not None]


def chain(depth: int) -> Shape:
    steps = tuple((f"step{i}", f"step{i - 1}" if i else None) for i in range(depth))
    return Shape(f"chain of {depth}", steps)


def fan_out(width: int) -> Shape:
    steps = (("root", None), *((f"leaf{i}", "root") for i in range(width)))
    return Shape(f"fan-out 1->{width}", steps)


class Watcher:
    """Calls `on_event(type, object, monotonic time)` for every watch event of a collection,
    from its own thread, from now on."""

    def __init__(
        self, api: Any, path: str, on_event: Callable[[str, dict[str, Any], float], None]
    ) -> None:
        self.api, self.path, self.on_event = api, path, on_event
        self._stop = threading.Event()
        self._version = kube.get(api, path, limit=1)["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for event in kube.watch(self.api, self.path, self._version, timeout_seconds=5):
                    now = time.monotonic()
                    obj = event["object"]
                    self._version = obj["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self.on_event(event["type"], obj, now)
            except Exception:
                if self._stop.is_set():
                    return  # the control plane is going away with the benchmark
                raise

    def stop(self) -> None:
        self._stop.set()


class Timeline:
    """When things were first seen or done, by (what, name); waitable."""

    def __init__(self) -> None:
        self._at: dict[tuple[str, str], float] = {}
        self._cond = threading.Condition()

    def mark(self, what: str, name: str, at: float) -> None:
        with self._cond:
            self._at.setdefault((what, name), at)
            self._cond.notify_all()

    def get(self, what: str, name: str) -> float | None:
        with self._cond:
            return self._at.get((what, name))

    def wait(self, what: str, name: str, timeout: float) -> float:
        with self._cond:
            if not self._cond.wait_for(lambda: (what, name) in self._at, timeout):
                raise SystemExit(f"no {what} for {name} within {timeout}s")
            return self._at[(what, name)]


def namespace(api: Any, name: str) -> str:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kube.request(api, "POST", "/api/v1/namespaces", body=body)
    return name


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def value_of(step: str) -> int:
    """The result `n` a step records: any int that differs per step."""
    return sum(map(ord, step))


# --- kubemill: a NotebookWorkflow, the operator, and the benchmark as the runner ---


def workflow_body(name: str, shape: Shape) -> dict[str, Any]:
    steps = []
    for step, up in shape.steps:
        spec: dict[str, Any] = {"notebook": "s3://bench/n.ipynb"}
        if up is not None:
            spec["parametersFrom"] = [{"name": "x", "stepRef": {"name": up, "result": "n"}}]
        else:
            spec["parameters"] = {"x": 0}
        steps.append({"name": step, "runTemplate": {"spec": spec}})
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookWorkflow",
        "metadata": {"name": name},
        "spec": {"steps": steps},
    }


class OperatorSide:
    """Watches the namespace's runs and Jobs; succeeds each run once its Job has started."""

    def __init__(self, api: Any, ns: str) -> None:
        self.api, self.ns = api, ns
        self.times = Timeline()
        self.statuses: dict[str, dict[str, Any]] = {}
        self._started: queue.Queue[str] = queue.Queue()
        self.watchers = [
            Watcher(api, RUNS.format(ns), self._run_event),
            Watcher(api, JOBS.format(ns), self._job_event),
            Watcher(api, WORKFLOWS.format(ns), self._workflow_event),
        ]
        threading.Thread(target=self._play_runner, daemon=True).start()

    def _workflow_event(self, kind: str, workflow: dict[str, Any], now: float) -> None:
        phase = (workflow.get("status") or {}).get("phase")
        if phase:
            self.times.mark(f"workflow {phase}", workflow["metadata"]["name"], now)

    def _run_event(self, kind: str, run: dict[str, Any], now: float) -> None:
        name = run["metadata"]["name"]
        status = run.get("status") or {}
        self.statuses[name] = status
        if status.get("phase"):
            self.times.mark(f"phase {status['phase']}", name, now)
        if status.get("jobName"):
            self.times.mark("status jobName", name, now)
        # The operator has recorded the Job's start (its pod, then the Job controller's
        # startTime, may come in two writes): what a runner's success follows.
        started = int(status.get("attempts") or 0) >= 1 and bool(status.get("startTime"))
        started = started and status.get("phase") != "Succeeded"
        if started and self.times.get("started", name) is None:
            self.times.mark("started", name, now)
            self._started.put(name)

    def _job_event(self, kind: str, job: dict[str, Any], now: float) -> None:
        run = (job["metadata"].get("labels") or {}).get(LABEL_RUN)
        if kind == "ADDED" and run:
            self.times.mark("job seen", run, now)

    def _play_runner(self) -> None:
        while True:
            name = self._started.get()
            status = self.statuses[name]
            folder = output_folder({}, self.ns, name, SETTINGS)
            step = name.split("-", 1)[1]
            patch = {
                "status": {
                    "phase": "Succeeded",
                    "reason": "Succeeded",
                    "message": "the notebook ran",
                    "results": {"n": value_of(step)},
                    "outputUrl": f"{folder}output.ipynb",
                    "completionTime": rfc3339(),
                    "jobName": status["jobName"],
                }
            }
            began = time.monotonic()
            kube.merge_patch(self.api, f"{RUNS.format(self.ns)}/{name}/status", patch)
            self.times.mark("succeeded write", name, began)

    def run(self, workflow: str, shape: Shape, timeout: float) -> list[float]:
        kube.request(
            self.api, "POST", WORKFLOWS.format(self.ns), body=workflow_body(workflow, shape)
        )
        for step, _ in shape.steps:
            self.times.wait("phase Succeeded", f"{workflow}-{step}", timeout)
        self.times.wait("workflow Succeeded", workflow, timeout)
        return [
            self.times.wait("job seen", f"{workflow}-{down}", 0)
            - self.times.wait("succeeded write", f"{workflow}-{up}", 0)
            for up, down in shape.edges()
        ]

    def breakdown(self, workflow: str, shape: Shape) -> dict[str, list[float]]:
        """Where an edge's time goes: from the upstream's Succeeded write to that status on
        a run watch, to the downstream's Job on the Job watch, to its status naming the Job."""
        parts: dict[str, list[float]] = {"seen": [], "job": [], "status": []}
        for up, down in shape.edges():
            wrote = self.times.wait("succeeded write", f"{workflow}-{up}", 0)
            parts["seen"].append(self.times.wait("phase Succeeded", f"{workflow}-{up}", 0) - wrote)
            parts["job"].append(self.times.wait("job seen", f"{workflow}-{down}", 0) - wrote)
            parts["status"].append(
                self.times.wait("status jobName", f"{workflow}-{down}", 0) - wrote
            )
        return parts

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()


# --- the plain baseline: a client chaining Jobs on marker ConfigMaps ---


class PlainSide:
    """A plain client creates a step's parameter ConfigMap and Job as soon as a marker says its
    upstream succeeded; the benchmark creates the marker when a Job appears."""

    def __init__(self, api: Any, ns: str) -> None:
        self.api, self.ns = api, ns
        self.times = Timeline()
        self._dependents: dict[str, list[str]] = {}
        self._appeared: queue.Queue[str] = queue.Queue()
        self.watchers = [
            Watcher(api, JOBS.format(ns), self._job_event),
            Watcher(api, CONFIG_MAPS.format(ns), self._marker_event),
        ]
        threading.Thread(target=self._play_runner, daemon=True).start()

    def _job_event(self, kind: str, job: dict[str, Any], now: float) -> None:
        run = (job["metadata"].get("labels") or {}).get(PLAIN_STEP)
        if kind == "ADDED" and run:
            self.times.mark("job seen", run, now)
            self._appeared.put(run)

    def _marker_event(self, kind: str, config_map: dict[str, Any], now: float) -> None:
        """The plain client: on a step's success, create what follows it, right away."""
        done = (config_map["metadata"].get("labels") or {}).get(LABEL_DONE)
        if kind != "ADDED" or not done:
            return
        self.times.mark("succeeded seen", done, now)
        for dependent in self._dependents.get(done, []):
            self._create(dependent, int(config_map["data"]["n"]))

    def _create(self, name: str, value: int) -> None:
        run = {
            "metadata": {"name": name, "namespace": self.ns, "uid": f"plain-{name}"},
            "spec": {"notebook": "s3://bench/n.ipynb", "parameters": {"x": value}},
        }
        config_maps = build_parameter_config_maps(run)
        job = build_job(run, SETTINGS)
        for obj in (*config_maps, job):
            obj["metadata"].pop("ownerReferences")
        # Neither kubemill's labels nor its finalizers: the operator watches those, and would
        # spend its time on the baseline's Jobs and pods.
        for meta in (job["metadata"], job["spec"]["template"]["metadata"]):
            meta.pop("finalizers", None)
            meta["labels"] = {PLAIN_STEP: name}
        for config_map in config_maps:
            kube.request(self.api, "POST", CONFIG_MAPS.format(self.ns), body=config_map)
        kube.request(self.api, "POST", JOBS.format(self.ns), body=job)

    def _play_runner(self) -> None:
        while True:
            name = self._appeared.get()
            step = name.split("-", 1)[1]
            marker = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{name}-done", "labels": {LABEL_DONE: name}},
                "data": {"n": str(value_of(step))},
            }
            began = time.monotonic()
            kube.request(self.api, "POST", CONFIG_MAPS.format(self.ns), body=marker)
            self.times.mark("succeeded write", name, began)

    def run(self, workflow: str, shape: Shape, timeout: float) -> list[float]:
        for step, up in shape.steps:
            if up is not None:
                self._dependents.setdefault(f"{workflow}-{up}", []).append(f"{workflow}-{step}")
        first = [step for step, up in shape.steps if up is None]
        for step in first:
            self._create(f"{workflow}-{step}", 0)
        for step, _ in shape.steps:
            self.times.wait("succeeded seen", f"{workflow}-{step}", timeout)
        return [
            self.times.wait("job seen", f"{workflow}-{down}", 0)
            - self.times.wait("succeeded write", f"{workflow}-{up}", 0)
            for up, down in shape.edges()
        ]

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=20, help="steps of the chain")
    parser.add_argument("--width", type=int, default=50, help="steps fanning out of root")
    parser.add_argument("--rounds", type=int, default=3, help="workflows of each shape")
    args = parser.parse_args()
    shapes = [chain(args.depth), fan_out(args.width)]
    work = Path(tempfile.mkdtemp(prefix="kubemill-bench-workflow-"))
    cp = ControlPlane(workdir=work / "cluster", bin_dir=binary_dir())
    cp.start()
    operator: OperatorProcess | None = None
    ours: dict[str, list[float]] = {s.name: [] for s in shapes}
    plain: dict[str, list[float]] = {s.name: [] for s in shapes}
    parts: dict[str, dict[str, list[float]]] = {
        s.name: {"seen": [], "job": [], "status": []} for s in shapes
    }
    overwritten: list[str] = []
    #: The operator's CPU seconds and the wall seconds, from creating each workflow to its end.
    usage: dict[str, list[float]] = {s.name: [0.0, 0.0] for s in shapes}
    sides: list[PlainSide | OperatorSide] = []
    try:
        api = api_client(cp.kubeconfig)
        install(cp)
        operator = start_operator(cp, api, work, BENCH_SETTINGS)
        baseline = PlainSide(api, namespace(api, "bench-plain"))
        kubemill = OperatorSide(api, namespace(api, "bench-workflow"))
        sides += [baseline, kubemill]
        for round_ in range(args.rounds):
            for index, shape in enumerate(shapes):
                name = f"wf{round_}{'cf'[index]}"
                plain[shape.name] += baseline.run(name, shape, timeout=120)
                assert operator.process is not None
                cpu, began = cpu_seconds(operator.process.pid), time.monotonic()
                ours[shape.name] += kubemill.run(name, shape, timeout=120)
                usage[shape.name][0] += cpu_seconds(operator.process.pid) - cpu
                usage[shape.name][1] += time.monotonic() - began
                for key, values in kubemill.breakdown(name, shape).items():
                    parts[shape.name][key] += values
        # A Succeeded written by the stand-in runner that the run controller overwrote later.
        runs = kube.get(api, RUNS.format(kubemill.ns))["items"]
        overwritten = [
            r["metadata"]["name"] for r in runs if r["status"].get("phase") != "Succeeded"
        ]
    except SystemExit:
        # A step that never got its Job or never ended: what the cluster and operator say.
        for path in (WORKFLOWS, RUNS):
            for item in kube.get(api, path.format("bench-workflow"))["items"]:
                print(item["metadata"]["name"], json.dumps(item.get("status"))[:1500])
        print(operator.log_tail() if operator else "")
        raise
    finally:
        for side in sides:
            side.stop()
        if operator is not None:
            operator.stop()
        cp.stop()

    print(
        f"\n{args.rounds} workflows of each shape; seconds from the upstream's Succeeded write "
        "to the downstream's Job on a Job watch"
    )
    print("| shape | edges | side | first | p50 | p99 | max | p99 ours/plain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for shape in shapes:
        mine, theirs = ours[shape.name], plain[shape.name]
        ratio = percentile(mine, 0.99) / percentile(theirs, 0.99)
        for side, values, shown in (
            ("plain client", theirs, ""),
            ("kubemill", mine, f"{ratio:.2f}x"),
        ):
            print(f"| {shape.name} | {len(values)} | {side} | {min(values):.3f} "
                  f"| {statistics.median(values):.3f} "
                  f"| {percentile(values, 0.99):.3f} | {max(values):.3f} | {shown} |")  # fmt: skip
    print("\nkubemill, where an edge's time goes (p50 / p99 seconds after the Succeeded write):")
    print("| shape | upstream Succeeded on a run watch | downstream Job on the Job watch "
          "| downstream status names its Job |")  # fmt: skip
    print("| --- | --- | --- | --- |")
    for shape in shapes:
        cells = [
            f"{statistics.median(v):.3f} / {percentile(v, 0.99):.3f}"
            for v in (parts[shape.name][k] for k in ("seen", "job", "status"))
        ]
        print(f"| {shape.name} | {' | '.join(cells)} |")
    print("\nkubemill operator, from creating a workflow to its Succeeded (mean per workflow):")
    for shape in shapes:
        cpu, wall = (x / args.rounds for x in usage[shape.name])
        print(f"- {shape.name}: {cpu:.2f} CPU-seconds in {wall:.2f} s")
    print(
        f"\nevery workflow ended Succeeded; step runs not Succeeded at the end: "
        f"{', '.join(overwritten) or 'none'}"
    )


if __name__ == "__main__":
    main()
