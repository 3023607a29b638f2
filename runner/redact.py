"""Keeping secret parameter values out of everything the runner writes.

Only content is redacted (cell sources, outputs, recorded results, kubemill's metadata), never
structure: a short secret must not turn `"cell_type": "code"` into an invalid notebook. Each
secret is also masked in its escaped spellings (repr and JSON), which is how it appears in an
exception message or a printed dict.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "Redactor"]

MASK = "***"
#: Notebook metadata that kubemill or papermill write, and so may hold parameter values.
_CONTENT_METADATA = ("kubemill", "papermill")


def _spellings(secret: str) -> set[str]:
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return {f for f in forms if f}


class Redactor:
    """Replaces every occurrence of any secret value with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= _spellings(secret)
        # Longest first, so a secret that contains another is masked whole.
        self._values = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self._values)

    def text(self, value: str) -> str:
        for secret in self._values:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def tree(self, value: Any) -> Any:
        """A copy of a JSON-like structure with every string redacted, keys included."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.tree(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.tree(v) for v in value]
        return value

    def notebook(self, nb: dict[str, Any]) -> dict[str, Any]:
        """A redacted copy of a notebook; adjacent stream outputs are joined first, so a
        secret printed in several pieces is still found."""
        if not self._values:
            return nb
        metadata = {
            k: self.tree(v) if k in _CONTENT_METADATA else v
            for k, v in (nb.get("metadata") or {}).items()
        }
        return {**nb, "metadata": metadata, "cells": [self._cell(c) for c in nb["cells"]]}

    def _cell(self, cell: dict[str, Any]) -> dict[str, Any]:
        out = {**cell, "source": self.text(cell.get("source", ""))}
        if "outputs" in cell:
            out["outputs"] = [self._output(o) for o in _joined_streams(cell["outputs"])]
        return out

    def _output(self, output: dict[str, Any]) -> dict[str, Any]:
        kind = output.get("output_type")
        if kind == "stream":
            return {**output, "text": self.text(output.get("text", ""))}
        if kind == "error":
            return {
                **output,
                "ename": self.text(output.get("ename", "")),
                "evalue": self.text(output.get("evalue", "")),
                "traceback": [self.text(line) for line in output.get("traceback", [])],
            }
        redacted = dict(output)
        if isinstance(output.get("data"), dict):
            redacted["data"] = {mime: self.tree(v) for mime, v in output["data"].items()}
        if isinstance(output.get("metadata"), dict):
            redacted["metadata"] = self.tree(output["metadata"])
        return redacted


def _joined_streams(outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    joined: list[dict[str, Any]] = []
    for output in outputs:
        last = joined[-1] if joined else None
        if (
            last is not None
            and output.get("output_type") == "stream"
            and last.get("output_type") == "stream"
            and last.get("name") == output.get("name")
        ):
            joined[-1] = {**last, "text": last.get("text", "") + output.get("text", "")}
        else:
            joined.append(output)
    return joined
