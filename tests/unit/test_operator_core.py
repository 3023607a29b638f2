"""The controllers' shared core: caches read from worker threads while watch events change
them, the work queue's shutdown, and API errors turned into typed errors."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from kubemill.operator.cache import Cache
from kubemill.operator.client import describe, refusal
from kubemill.operator.errors import AlreadyExists, InvalidSpec, TransientError
from kubemill.operator.handlers import Reconciler
from kubemill.operator.settings import Settings
from kubemill.operator.workqueue import WorkQueue


def body(uid: str, name: str = "r", **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": uid, "managedFields": [{}]},
        "spec": {"containers": [{"name": "runner"}], "parameters": {"big": "x" * 100}},
        "status": dict(status),
    }


def test_the_cache_keeps_one_copy_per_uid_and_forgets_deleted_and_moved_objects() -> None:
    cache = Cache()
    cache.apply(("ns", "a"), None, body("1"))  # the initial listing
    cache.apply(("ns", "a"), "MODIFIED", body("1", phase="Running"))
    cache.apply(("ns", "a"), "ADDED", body("2"))
    assert [o["status"] for o in cache.get(("ns", "a"))] == [{"phase": "Running"}, {}]
    assert "managedFields" not in cache.get(("ns", "a"))[0]["metadata"]
    cache.apply(("ns", "b"), "MODIFIED", body("2"))  # relabelled: it leaves its old key
    assert [o["metadata"]["uid"] for o in cache.get(("ns", "a"))] == ["1"]
    cache.apply(("ns", "a"), "DELETED", body("1"))
    assert cache.get(("ns", "a")) == [] and cache.first(("ns", "a")) is None
    assert len(cache) == 1


def test_the_cache_can_be_read_from_any_thread_while_events_change_it() -> None:
    """kopf's own indexes failed here with "dictionary changed size during iteration"."""
    cache = Cache()
    stop = threading.Event()
    failures: list[BaseException] = []

    def events() -> None:
        counter = 0
        while not stop.is_set():
            counter += 1
            cache.apply(("ns", "r"), "ADDED", body(str(counter % 50)))
            cache.apply(("ns", "r"), "DELETED", body(str((counter + 25) % 50)))

    writer = threading.Thread(target=events)
    writer.start()
    try:
        for _ in range(20_000):
            for obj in cache.get(("ns", "r")):
                assert obj["metadata"]["name"] == "r"
    except BaseException as exc:  # pragma: no cover - what the test is for
        failures.append(exc)
    finally:
        stop.set()
        writer.join()
    assert failures == []


def test_a_finished_run_is_kept_without_its_parameters() -> None:
    reconciler = Reconciler(object(), Settings())  # type: ignore[arg-type]
    run = {**body("run"), "kind": "NotebookRun"}
    reconciler.runs.apply(("ns", "r"), "ADDED", run)
    assert reconciler.runs.get(("ns", "r"))[0]["spec"]["parameters"] == {"big": "x" * 100}
    reconciler.runs.apply(("ns", "r"), "MODIFIED", {**run, "status": {"phase": "Succeeded"}})
    assert "parameters" not in reconciler.runs.get(("ns", "r"))[0]["spec"]


def test_stop_lets_the_item_under_way_finish_and_starts_no_other() -> None:
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def work(key: Any) -> None:
        if key == "slow":
            started.set()
            assert release.wait(30)
        done.append(key)

    queue = WorkQueue(work, workers=1)
    queue.add("slow")
    assert started.wait(30)
    queue.add("queued")  # waits behind "slow" on the one worker
    stopped: list[tuple[bool, list[str]]] = []
    stopper = threading.Thread(target=lambda: stopped.append((queue.stop(30), list(done))))
    stopper.start()
    release.set()
    stopper.join(30)
    # stop() returned only after "slow" finished, and "queued" never started.
    assert stopped == [(True, ["slow"])]
    queue.add("after")
    queue.add_after("later", 0)
    assert done == ["slow"]


def test_stop_gives_up_after_its_deadline_and_says_so() -> None:
    release = threading.Event()
    started = threading.Event()

    def work(key: Any) -> None:
        started.set()
        release.wait(30)

    queue = WorkQueue(work, workers=1)
    queue.add("stuck")
    assert started.wait(30)
    try:
        assert queue.stop(0.05) is False
    finally:
        release.set()


class ApiError(Exception):
    __module__ = "kubernetes.client.exceptions"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, "Reason"
        self.body = json.dumps({"kind": "Status", "message": message})


@pytest.mark.parametrize(
    ("status", "kind"),
    [(409, AlreadyExists), (400, InvalidSpec), (413, InvalidSpec), (422, InvalidSpec)]
    + [(code, TransientError) for code in (401, 403, 404, 429, 500, 503)],
)
def test_a_refused_create_becomes_the_error_type_that_says_what_to_do(
    status: int, kind: type[Exception]
) -> None:
    error = refusal(ApiError(status, "no"), "r", "rejected: ", "refused: ", "; fix it")
    assert type(error) is kind
    if kind is InvalidSpec:
        assert str(error) == "rejected: no; fix it"
    if kind is TransientError:
        assert str(error) == f"refused: no (HTTP {status})"


def test_api_and_connection_errors_are_one_line_other_errors_are_bugs() -> None:
    assert describe(ApiError(403, "forbidden")) == "the API server answered 403: forbidden"
    assert describe(ValueError("x")) is None
