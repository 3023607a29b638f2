"""SIGTERM that arrives before the run has installed its own handler.

In a container the runner is the first process (PID 1), and PID 1 gets only the signals it has a
handler for: a SIGTERM sent while Python is still importing nbclient and boto3 (an eviction, a
deleted pod, a Job's deadline) would be dropped, and the run would go on until the kubelet's
SIGKILL at the end of the grace period, without a summary. `kubemill run` calls `hold()` first
thing; the run takes what came meanwhile with `take()` once its own handler is in, and stops as
if the signal had come then.
"""

from __future__ import annotations

import signal

__all__ = ["hold", "take"]

_held: list[int] = []


def _remember(signum: int, _frame: object) -> None:
    if signum not in _held:
        _held.append(signum)


def hold() -> None:
    """Remember SIGTERM until the run takes it (SIGINT keeps Python's KeyboardInterrupt)."""
    signal.signal(signal.SIGTERM, _remember)


def take() -> list[int]:
    """The signals held since `hold()`, each once, and forget them."""
    taken = list(_held)
    _held.clear()
    return taken
