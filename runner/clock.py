"""Timestamps as the runner writes them: UTC, ISO 8601, millisecond precision; and reading
them back, or any RFC 3339 time (the operator's and the viewer's too)."""

from __future__ import annotations

import datetime
import time
from typing import Any

__all__ = ["iso", "parse_rfc3339"]


def iso(epoch: float | None = None) -> str:
    moment = time.time() if epoch is None else epoch
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment))
    return f"{whole}.{int(moment % 1 * 1000):03d}Z"


def parse_rfc3339(text: Any) -> datetime.datetime | None:
    """A time the API server, kubemill or a person wrote (`Z` or an offset, with or without a
    fraction), in UTC; None for a missing or unreadable one, which callers treat as unknown."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.astimezone(datetime.UTC)
