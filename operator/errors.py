"""Domain errors of the operator, converted to kopf errors, conditions and Events at the edge."""

from __future__ import annotations

__all__ = ["InvalidSpec"]


class InvalidSpec(Exception):
    """The NotebookRun cannot be run as written; the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
