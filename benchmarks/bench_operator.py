"""Operator benchmark: NotebookRun to Job, against a plain API client creating the same objects.

On a real control plane built by the test harness (no node agent, so pods stay Pending and no
kernel is measured): a plain client creates N ConfigMaps and Jobs one after the other; then N
NotebookRuns are created the same way and the operator (under its own ServiceAccount, with
deploy/'s RBAC) creates their Jobs. Each run has a parameter, so the operator also creates its
parameter ConfigMap, as the plain client does. Prints total time until every Job exists,
p50/p99 of create-to-Job latency, and the operator's resident memory with 1,000 runs present.
Usage: make bench-operator  (or: python benchmarks/bench_operator.py -n 300)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubemill.operator.jobs import build_job, build_parameter_config_maps
from kubemill.operator.settings import Settings
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
SETTINGS = Settings(output_prefix="s3://bench/", runner_image="kubemill-runner:bench")


class JobWatcher:
    """Records when each Job of a namespace is first seen on a watch."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.seen: dict[str, float] = {}
        self.by_run: dict[str, float] = {}
        self._stop = threading.Event()
        self._version = kube.get(api, JOBS.format(namespace), limit=1)["metadata"][
            "resourceVersion"
        ]
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            for event in kube.watch(
                self.api, JOBS.format(self.namespace), self._version, timeout_seconds=5
            ):
                obj = event["object"]
                self._version = obj["metadata"]["resourceVersion"]
                if event["type"] == "ADDED":
                    now = time.monotonic()
                    self.seen.setdefault(obj["metadata"]["name"], now)
                    run = obj["metadata"].get("labels", {}).get("kubemill.dev/run")
                    if run:
                        self.by_run.setdefault(run, now)

    def wait_count(self, count: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(self.seen)} of {count} Jobs after {timeout}s")
            time.sleep(0.05)  # the watch thread fills `seen`; checking it is cheap
        return max(self.seen.values())

    def stop(self) -> None:
        self._stop.set()


def namespace(api: Any, name: str) -> str:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kube.request(api, "POST", "/api/v1/namespaces", body=body)
    return name


def run_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {"name": name},
        "spec": {"notebook": "s3://bench/n.ipynb", "parameters": {"i": 1}},
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--runs", type=int, default=300)
    parser.add_argument("--memory-runs", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kubemill-bench-operator-"))
    cp = ControlPlane(workdir=work / "cluster", bin_dir=binary_dir())
    cp.start()
    operator: OperatorProcess | None = None
    try:
        api = api_client(cp.kubeconfig)
        install(cp)
        operator = start_operator(cp, api, work, BENCH_SETTINGS)

        # A plain client creating what the operator would create: the parameter ConfigMap,
        # then the Job.
        plain_ns = namespace(api, "bench-plain")
        plain_latency: list[float] = []
        began = time.monotonic()
        for i in range(args.runs):
            run = run_body(f"run-{i:04d}")
            run["metadata"].update(namespace=plain_ns, uid=f"00000000-0000-0000-0000-{i:012d}")
            config_maps = build_parameter_config_maps(run)
            job = build_job(run, SETTINGS)
            for obj in (*config_maps, job):
                obj["metadata"].pop("ownerReferences")
            t0 = time.monotonic()
            for config_map in config_maps:
                kube.request(api, "POST", CONFIG_MAPS.format(plain_ns), body=config_map)
            kube.request(api, "POST", JOBS.format(plain_ns), body=job)
            plain_latency.append(time.monotonic() - t0)
        plain_total = time.monotonic() - began

        runs_ns = namespace(api, "bench-runs")
        watcher = JobWatcher(api, runs_ns)
        created: dict[str, float] = {}
        began = time.monotonic()
        for i in range(args.runs):
            name = f"run-{i:04d}"
            kube.request(api, "POST", RUNS.format(runs_ns), body=run_body(name))
            created[name] = time.monotonic()
        runs_created = time.monotonic() - began
        last = watcher.wait_count(args.runs, timeout=600)
        operator_total = last - began
        latency = [watcher.by_run[n] - t for n, t in created.items()]
        watcher.stop()

        # Memory with many runs present: the rest of --memory-runs, in a third namespace.
        more = args.memory_runs - args.runs
        memory_ns = namespace(api, "bench-memory")
        watcher = JobWatcher(api, memory_ns)
        for i in range(more):
            kube.request(api, "POST", RUNS.format(memory_ns), body=run_body(f"run-{i:04d}"))
        watcher.wait_count(more, timeout=900)
        watcher.stop()
        assert operator.process is not None
        memory = rss_mib(operator.process.pid)
    finally:
        if operator is not None:
            operator.stop()
        cp.stop()

    print(f"\n{args.runs} objects, created one after the other by one client (seconds)")
    print("| | total until every Job exists | p50 latency | p99 latency |")
    print("| --- | --- | --- | --- |")
    print(f"| plain client, ConfigMaps and Jobs | {plain_total:.2f} "
          f"| {statistics.median(plain_latency):.3f} "
          f"| {percentile(plain_latency, 0.99):.3f} |")  # fmt: skip
    print(f"| NotebookRuns via the operator | {operator_total:.2f} "
          f"({operator_total / plain_total:.2f}x) | {statistics.median(latency):.3f} "
          f"| {percentile(latency, 0.99):.3f} |")  # fmt: skip
    print(
        f"\n(the client alone took {runs_created:.2f} s to create the {args.runs} NotebookRuns: "
        "CRD objects pass schema, CEL and admission-policy validation)"
    )
    print(f"\noperator resident memory with {args.memory_runs} runs (and their Jobs): "
          f"{memory:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
