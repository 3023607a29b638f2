"""Timestamps as the runner writes them: UTC, ISO 8601, millisecond precision."""

from __future__ import annotations

import time

__all__ = ["iso"]


def iso(epoch: float | None = None) -> str:
    moment = time.time() if epoch is None else epoch
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    return f"{whole}.{int(moment % 1 * 1000):03d}Z"
