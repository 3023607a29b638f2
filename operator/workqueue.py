"""A coalescing work queue, like controller-runtime's: a key queued while it waits is queued
once; a key queued while it is being worked on is worked on once more afterwards; a key can
also be queued for later (a retry's backoff, a schedule's next slot).

Watch events for a run arrive in bursts (the Job, its pod, their status updates); the status
is recomputed from the latest state anyway, so one pass per burst is enough. Doing that work on
a few threads of its own also keeps kopf's handler threads free for creating Jobs.

`stop` ends it the way a pod's shutdown needs: no new item starts, and the items being worked on
finish (a Job created, its status written) within a deadline.
"""

from __future__ import annotations

import collections
import contextvars
import heapq
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["QueuedController", "WorkQueue"]

_log = logging.getLogger(__name__)


def _name(key: Hashable) -> str:
    """A key as a person reads it: `namespace/name`."""
    return "/".join(map(str, key)) if isinstance(key, tuple) else str(key)


class WorkQueue:
    def __init__(self, work: Callable[[Hashable], None], *, workers: int = 4) -> None:
        self._work = work
        self._workers = workers
        self._order: collections.deque[Hashable] = collections.deque()
        self._queued: set[Hashable] = set()
        self._active: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._failures: dict[Hashable, int] = {}
        #: Delayed keys: a heap of (monotonic due time, sequence, key), and each key's earliest
        #: due time, so that repeated requests for one key keep one entry that counts.
        self._timers: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._sequence = 0
        self._stopping = False

    def add(self, key: Hashable) -> None:
        """Queue `key`; the workers run in a copy of the caller's context (kopf's included)."""
        with self._cond:
            if not self._threads and not self._stopping:
                self._start(contextvars.copy_context())
            self._add(key)

    def _add(self, key: Hashable) -> None:
        if self._stopping:
            return
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._order.append(key)
            self._cond.notify_all()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue `key` once `delay` seconds have passed (a schedule's next slot); an earlier
        request for the same key stands, a later one is folded into it."""
        due = time.monotonic() + max(0.0, delay)
        with self._cond:
            if self._stopping:
                return
            if not self._threads:
                self._start(contextvars.copy_context())
            if self._due.get(key, float("inf")) <= due:
                return
            self._due[key] = due
            self._sequence += 1
            heapq.heappush(self._timers, (due, self._sequence, key))
            self._cond.notify_all()

    def add_if_started(self, key: Hashable) -> None:
        """Queue `key` from a thread outside kopf: only once a kopf handler has started the
        workers (in its context, which posting Events needs); before that, the first passes
        over every object read what the caller had to say anyway."""
        with self._cond:
            if self._threads:
                self._add(key)

    def retry(self, key: Hashable) -> None:
        """Queue `key` again after an exponential backoff (1 s, 2 s, … at most 60 s)."""
        with self._cond:
            failures = self._failures[key] = self._failures.get(key, 0) + 1
        self.add_after(key, min(60.0, 2.0 ** (failures - 1)))

    def forget(self, key: Hashable) -> None:
        """`key` succeeded: its next failure starts the backoff from the beginning."""
        with self._cond:
            self._failures.pop(key, None)

    def stop(self, timeout: float) -> bool:
        """Start no more items and wait up to `timeout` seconds for the ones being worked on;
        True if they all finished. What was still queued is not lost: the next operator's
        first pass over every object finds the same work."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            active = sorted(map(_name, self._active))
        if active:
            _log.info("stopping: waiting for %s", ", ".join(active))
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            left = sorted(map(_name, self._active))
        if left:
            _log.warning("stopped with %s unfinished after %.0fs", ", ".join(left), timeout)
        return not left

    def _start(self, context: contextvars.Context) -> None:
        timers = threading.Thread(
            target=context.copy().run, args=(self._wake,), name="kubemill-timers", daemon=True
        )
        timers.start()
        self._threads.append(timers)
        for number in range(self._workers):
            thread = threading.Thread(
                target=context.copy().run,
                args=(self._loop,),
                name=f"kubemill-status-{number}",
                daemon=True,  # status work is redone from the watches after a restart
            )
            thread.start()
            self._threads.append(thread)

    def _wake(self) -> None:
        """Moves delayed keys into the queue when they are due."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    due, _, key = heapq.heappop(self._timers)
                    if self._due.get(key) == due:
                        del self._due[key]
                        self._add(key)
                timeout = self._timers[0][0] - now if self._timers else None
                self._cond.wait(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._order and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                key = self._order.popleft()
                self._queued.discard(key)
                self._active.add(key)
            try:
                self._work(key)
            except Exception:
                _log.exception("status update for %s failed; it is retried on its next event", key)
            finally:
                with self._cond:
                    self._active.discard(key)
                    if key in self._again and not self._stopping:
                        self._again.discard(key)
                        self._queued.add(key)
                        self._order.append(key)
                        self._cond.notify_all()


class QueuedController:
    """Calls `reconcile(key)` for each queued key on the queue's threads, and queues a key
    again with backoff when its pass fails, whatever the failure."""

    #: A pass over one object, reading what the controller's caches hold.
    reconcile: Callable[[Any], None]
    #: The errors that are expected now and then (logged at INFO, not WARNING).
    transient: tuple[type[Exception], ...] = ()

    def __init__(self, what: str, *, workers: int) -> None:
        self._what = what
        self._queue = WorkQueue(self._work, workers=workers)

    def enqueue(self, key: Hashable) -> None:
        """Reconcile soon; bursts of events for one key become one pass."""
        self._queue.add(key)

    def enqueue_after(self, key: Hashable, delay: float) -> None:
        """Reconcile in `delay` seconds, however many events come meanwhile: one pass for a
        burst of news that is not urgent."""
        self._queue.add_after(key, delay)

    def poke(self, key: Hashable) -> None:
        """Reconcile soon, on news from outside kopf's watches (an Event about a child)."""
        self._queue.add_if_started(key)

    def stop(self, timeout: float) -> bool:
        """Finish the passes under way (at most `timeout` seconds) and start no more."""
        return self._queue.stop(timeout)

    def _work(self, key: Hashable) -> None:
        try:
            self.reconcile(key)
        except Exception as exc:  # any failure is retried with backoff, as controllers do
            level = logging.INFO if isinstance(exc, self.transient) else logging.WARNING
            _log.log(level, "reconciling %s %s failed (%s); retrying", self._what, key, exc)
            self._queue.retry(key)
        else:
            self._queue.forget(key)
