"""Domain errors of the operator, converted to kopf errors, conditions and Events at the edge.

Each carries the condition reason it becomes, so the edge never guesses it from the message.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "InvalidSchedule",
    "InvalidSpec",
    "InvalidTemplate",
    "TransientError",
]


class InvalidSpec(Exception):
    """The NotebookRun cannot be run as written; the message says what to change."""

    #: The status reason (and Event reason) this error becomes.
    reason = "InvalidSpec"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSchedule(InvalidSpec):
    """A NotebookSchedule's spec.schedule or spec.timeZone cannot be used."""

    reason = "InvalidSchedule"


class InvalidTemplate(InvalidSpec):
    """A NotebookSchedule's runTemplate cannot be turned into a run (the operator's own check)."""

    reason = "InvalidTemplate"


class AlreadyExists(Exception):
    """The object to create exists already: adopt it (its name is deterministic)."""


class TransientError(Exception):
    """An API call failed in a way that may pass (a quota, RBAC, the API server's health): try
    again with backoff. The message is the API server's, with its HTTP status, since a run's
    status or a schedule's Event may show it."""
