"""The operator is SIGKILLed at random points while 50 runs are applied and executed; after each
restart it must pick up where it was: every run ends exactly once, no run gets two Jobs."""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import pytest
from kubernetes import client

from kubemill_testenv import kube, wait
from kubemill_testenv.operatorproc import RUNS
from tests.e2e.test_notebookrun import create_run

pytestmark = pytest.mark.e2e

RUN_COUNT = 50
TERMINAL = ("Succeeded", "Failed")


class PhaseRecorder:
    """Every phase each run is seen in, in order, from a watch that runs during the test."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.collection = RUNS.format(namespace)
        self.phases: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PhaseRecorder:
        self._version = wait.resource_version(self.api, self.collection)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for event in kube.watch(self.api, self.collection, self._version, timeout_seconds=5):
                obj = event["object"]
                self._version = obj["metadata"]["resourceVersion"]
                if event["type"] == "BOOKMARK":
                    continue
                phase = (obj.get("status") or {}).get("phase")
                seen = self.phases.setdefault(obj["metadata"]["name"], [])
                if phase and (not seen or seen[-1] != phase):
                    seen.append(phase)
                if self._stop.is_set():
                    return


def test_killed_operator_loses_no_run_and_duplicates_no_job(
    api: client.ApiClient, operator: Any, run_namespace: str, results_bucket: str
) -> None:
    seed = int(os.environ.get("KUBEMILL_CHAOS_SEED", str(time.time_ns() % 10**6)))
    rng = random.Random(seed)
    kill_while_creating = set(rng.sample(range(RUN_COUNT), 3))
    names = [f"chaos-{i:02d}" for i in range(RUN_COUNT)]
    notebook = f"s3://{results_bucket}/notebooks/values.ipynb"
    with PhaseRecorder(api, run_namespace) as recorder:
        for index, name in enumerate(names[:RUN_COUNT]):
            create_run(api, run_namespace, name, notebook=notebook, parameters={"value": index})
            if index in kill_while_creating:
                operator.kill()
                if rng.random() < 0.5:  # sometimes runs are created while it is down
                    create_run(
                        api, run_namespace, f"{name}-down", notebook=notebook,
                        parameters={"value": -index},
                    )  # fmt: skip
                    names.append(f"{name}-down")
                operator.start()
        # Kill it twice more while the runs execute and finish.
        for _ in range(2):
            time.sleep(rng.uniform(1.0, 6.0))  # a random moment to kill at is the point here
            operator.kill()
            operator.start()

        finished: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 600
        for name in names:
            finished[name] = wait.wait_for(
                api, RUNS.format(run_namespace),
                lambda e, o: e != "DELETED" and (o.get("status") or {}).get("phase") in TERMINAL,
                name=name, timeout=max(1, deadline - time.monotonic()),
                what=f"run {name} to finish (seed {seed})",
            )  # fmt: skip

    jobs = kube.get(api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs")["items"]
    per_run: dict[str, int] = {}
    for job in jobs:
        run = job["metadata"]["labels"]["kubemill.dev/run"]
        per_run[run] = per_run.get(run, 0) + 1
    assert per_run == {name: 1 for name in names}, f"seed {seed}"
    for name, run in finished.items():
        status = run["status"]
        assert status["phase"] == "Succeeded", (seed, name, status)
        value = int(name.split("-")[1]) * (-1 if name.endswith("-down") else 1)
        assert status["results"]["repr"] == repr(value), (seed, name)
        seen = recorder.phases.get(name, [])
        terminal = [p for p in seen if p in TERMINAL]
        assert len(terminal) <= 1 and (not terminal or seen[-1] == terminal[0]), (seed, seen)
    events = kube.get(api, f"/api/v1/namespaces/{run_namespace}/events")["items"]
    succeeded: dict[str, int] = {}
    for event in events:
        if event["reason"] == "Succeeded":
            involved = event["involvedObject"]["name"]
            succeeded[involved] = succeeded.get(involved, 0) + event.get("count", 1)
    assert all(count == 1 for count in succeeded.values()), (seed, succeeded)
    assert operator.starts >= 6


def test_sigterm_lets_the_workers_finish_and_the_next_operator_finds_the_rest(
    api: client.ApiClient, operator: Any, run_namespace: str, results_bucket: str
) -> None:
    """A rollout or a node drain sends SIGTERM: the operator stops taking work, lets the
    workers finish what they are doing, and exits 0 within the Deployment's grace period
    (30 s). What it had not started, its successor does."""
    names = [f"term-{i:02d}" for i in range(20)]
    notebook = f"s3://{results_bucket}/notebooks/values.ipynb"
    for index, name in enumerate(names):
        create_run(api, run_namespace, name, notebook=notebook, parameters={"value": index})
    # SIGTERM once the operator is busy with them: the first Job exists.
    wait.wait_for(
        api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs", lambda e, o: e != "DELETED",
        timeout=120, what="the operator to create a Job",
    )  # fmt: skip
    before = len(operator.log.read_text(errors="replace"))
    code, seconds = operator.terminate(grace=30)
    log = operator.log.read_text(errors="replace")[before:]
    print(f"SIGTERM to exit: {seconds:.1f}s")
    assert code == 0, log[-4000:]
    assert "stopping: letting the workers finish" in log, log[-4000:]
    assert "unfinished" not in log and "stopped" in log.split("letting the workers finish")[1]
    operator.start()
    for name in names:
        wait.wait_for(
            api, RUNS.format(run_namespace),
            lambda e, o: e != "DELETED" and (o.get("status") or {}).get("phase") in TERMINAL,
            name=name, timeout=300, what=f"run {name} to finish after the restart",
        )  # fmt: skip
    jobs = kube.get(api, f"/apis/batch/v1/namespaces/{run_namespace}/jobs")["items"]
    assert sorted(j["metadata"]["labels"]["kubemill.dev/run"] for j in jobs) == names
    runs = kube.get(api, RUNS.format(run_namespace))["items"]
    assert {r["metadata"]["name"]: r["status"]["phase"] for r in runs} == dict.fromkeys(
        names, "Succeeded"
    )
