"""Times as the Kubernetes API writes them: RFC 3339, UTC, whole seconds (`…T06:00:00Z`)."""

from __future__ import annotations

import datetime
from typing import Any

__all__ = ["now", "parse_rfc3339", "rfc3339"]


def now() -> datetime.datetime:
    """The current time, in UTC."""
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime | None = None) -> str:
    """`moment` (default: now) as the API server writes times, e.g. `2027-03-28T04:00:00Z`."""
    return (moment or now()).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
