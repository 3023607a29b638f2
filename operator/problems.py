"""Why a run does not start, when only an Event says so.

The job controller reports a pod it cannot create (a missing ServiceAccount, an exceeded quota,
Pod Security) only as a `FailedCreate` Event on the Job, and the kubelet reports a volume it
cannot mount (a missing ConfigMap or Secret) only as a `FailedMount` Event on the pod: the Job
and the pod stay as they were. So the operator watches exactly those Events, selected by the
API server (`involvedObject.kind=Job,reason=FailedCreate`, `involvedObject.kind=Pod,
reason=FailedMount`) rather than streaming every Event of the cluster through kopf, and hands
them to the reconciler, which decides in `status.derive_status` whether one still holds.

An Event names its Job or pod by uid, and only the reconciler knows which run a uid belongs to
(from the Job and pod watches). The two meet in `Problems` under one lock: an Event that arrives
before its Job's watch event is kept until the reconciler claims the uid, and one that arrives
after queues the run at once; there is no window between the two in which one is missed.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from .status import Problem
from .times import rfc3339

__all__ = ["SELECTORS", "EventWatcher", "Problems", "problem_from_event"]

_log = logging.getLogger(__name__)

#: The Events that name what keeps a run from starting, as server-side field selectors.
SELECTORS = (
    "involvedObject.kind=Job,reason=FailedCreate",
    "involvedObject.kind=Pod,reason=FailedMount",
)
#: Seconds an Event about a uid no run has claimed is kept: long enough for the Job and pod
#: watches to catch up with a new object, short enough that Events about other Jobs and pods of
#: the cluster do not pile up. A problem that persists is reported again (the Event repeats).
UNCLAIMED_SECONDS = 300.0


class Problems:
    """The latest problem per (uid, reason), and which run each uid belongs to."""

    def __init__(
        self,
        notify: Callable[[Hashable], None],
        *,
        unclaimed_seconds: float = UNCLAIMED_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notify = notify
        self._unclaimed_seconds = unclaimed_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._problems: dict[str, dict[str, Problem]] = {}
        self._owner: dict[str, Hashable] = {}
        self._claimed: dict[Hashable, set[str]] = {}
        #: Unclaimed uids in order of arrival, with the time they arrived.
        self._unclaimed: collections.OrderedDict[str, float] = collections.OrderedDict()

    def report(self, problem: Problem) -> None:
        """Keep `problem`; queue its run when the run is known."""
        with self._lock:
            kept = self._problems.setdefault(problem.uid, {})
            before = kept.get(problem.reason)
            if before is not None and before.seen > problem.seen:
                return  # an older Event delivered late (a relist)
            kept[problem.reason] = problem
            owner = self._owner.get(problem.uid)
            if owner is None:
                self._unclaimed[problem.uid] = self._clock()
                self._unclaimed.move_to_end(problem.uid)
                self._expire()
        if owner is not None:
            self._notify(owner)

    def observe(self, key: Hashable, uids: Iterable[str]) -> list[Problem]:
        """Claim `uids` (the run's Job and pods as the reconciler sees them now) for the run
        `key`, drop what was kept for its uids that are gone, and return its problems."""
        wanted = set(uids)
        with self._lock:
            for uid in self._claimed.get(key, set()) - wanted:
                self._owner.pop(uid, None)
                self._problems.pop(uid, None)
            self._claimed[key] = wanted
            found: list[Problem] = []
            for uid in wanted:
                self._owner[uid] = key
                self._unclaimed.pop(uid, None)
                found += self._problems.get(uid, {}).values()
            return found

    def release(self, key: Hashable) -> None:
        """The run ended or is gone: nothing about it is needed any more."""
        self.observe(key, ())
        with self._lock:
            self._claimed.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._problems)

    def _expire(self) -> None:
        cutoff = self._clock() - self._unclaimed_seconds
        while self._unclaimed:
            uid, arrived = next(iter(self._unclaimed.items()))
            if arrived > cutoff:
                break
            del self._unclaimed[uid]
            self._problems.pop(uid, None)


def problem_from_event(event: Any) -> Problem | None:
    """A Problem from a core/v1 Event as the official client returns it (a V1Event)."""
    involved = event.involved_object
    if involved is None or not involved.uid:
        return None
    series = getattr(event, "series", None)
    moment = (
        event.last_timestamp
        or (series.last_observed_time if series is not None else None)
        or event.event_time
        or event.first_timestamp
        or event.metadata.creation_timestamp
    )
    return Problem(
        uid=involved.uid,
        kind=involved.kind or "",
        reason=event.reason or "",
        message=(event.message or "").strip(),
        seen=rfc3339(moment),
    )


class EventWatcher:
    """Lists, then watches, the Events `SELECTORS` pick, in every watched namespace (or all),
    on daemon threads of its own, and reports each to `problems`. A broken watch is listed
    again, after a pause that doubles up to a minute while the API server is unreachable."""

    def __init__(self, core: Any, problems: Problems, namespaces: Iterable[str] = ()) -> None:
        self._core = core
        self._problems = problems
        self._namespaces: list[str | None] = [*namespaces] or [None]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for namespace in self._namespaces:
            for selector in SELECTORS:
                thread = threading.Thread(
                    target=self._run,
                    args=(namespace, selector),
                    name=f"kubemill-events-{selector.split(',')[1]}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _run(self, namespace: str | None, selector: str) -> None:
        from kubernetes import watch
        from kubernetes.client import ApiException

        pause = 1.0
        while not self._stop.is_set():
            try:
                if namespace is None:
                    listing = self._core.list_event_for_all_namespaces
                    args: tuple[str, ...] = ()
                else:
                    listing = self._core.list_namespaced_event
                    args = (namespace,)
                listed = listing(*args, field_selector=selector)
                for event in listed.items:
                    self._report(event)
                version = listed.metadata.resource_version
                pause = 1.0
                while not self._stop.is_set():
                    stream = watch.Watch().stream(
                        listing, *args, field_selector=selector, resource_version=version,
                        timeout_seconds=300, allow_watch_bookmarks=True,
                    )  # fmt: skip
                    for item in stream:
                        if item["type"] == "BOOKMARK":
                            # The client hands a bookmark's object over as a plain dict.
                            version = item["raw_object"]["metadata"]["resourceVersion"]
                            continue
                        obj = item["object"]
                        version = obj.metadata.resource_version
                        if item["type"] in ("ADDED", "MODIFIED"):
                            self._report(obj)
            except ApiException as exc:
                if exc.status != 410:  # 410: the watch fell behind; list again at once
                    _log.warning("watching Events (%s) failed: %s", selector, exc.reason)
                    self._stop.wait(pause)
                    pause = min(60.0, pause * 2)
            except Exception as exc:  # the connection dropped: list again, as informers do
                _log.warning("watching Events (%s) failed: %s", selector, exc)
                self._stop.wait(pause)
                pause = min(60.0, pause * 2)

    def _report(self, event: Any) -> None:
        problem = problem_from_event(event)
        if problem is not None:
            self._problems.report(problem)
