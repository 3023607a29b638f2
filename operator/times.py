"""Times as the Kubernetes API writes them: RFC 3339, UTC, whole seconds (`…T06:00:00Z`)."""

from __future__ import annotations

import datetime

from kubemill.runner.clock import parse_rfc3339

__all__ = ["now", "parse_rfc3339", "rfc3339"]


def now() -> datetime.datetime:
    """The current time, in UTC."""
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime | None = None) -> str:
    """`moment` (default: now) as the API server writes times, e.g. `2027-03-28T04:00:00Z`."""
    return (moment or now()).astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
