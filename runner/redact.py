"""Keeping secret parameter values out of everything the runner writes.

Redaction works on string values, never on serialized JSON text: replacing inside the text could
hit a key or an escape sequence and corrupt the notebook.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "Redactor"]

MASK = "***"


class Redactor:
    """Replaces every occurrence of any secret value with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._values = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def tree(self, value: Any) -> Any:
        """A copy of a JSON-like structure with every string value redacted (keys are kept)."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v) for v in value]
        return value
