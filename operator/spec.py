"""Reading a NotebookRun's spec: durations, the notebook source, the output folder.

The CRD schema rejects bad manifests at the API server; these functions still check what they
rely on, because a CRD can be older than the operator, with the same rules (runner/rules.py,
operator/schema_rules.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from kubemill.runner.rules import MIN_DURATION_SECONDS, duration_seconds

from .errors import InvalidSpec
from .schema_rules import NOTEBOOK_URL_PATTERN, OUTPUT_PREFIX_PATTERN
from .settings import Settings

__all__ = ["NOTEBOOK_MOUNT", "notebook_input", "output_folder", "parse_duration"]

#: Where a notebook taken from a ConfigMap appears inside the runner pod.
NOTEBOOK_MOUNT = "/var/run/kubemill/notebook"


def parse_duration(text: str, field: str) -> float:
    """Seconds in a duration such as `90s`, `10m`, `1h30m` or `1.5h`, by the CRD's own rule."""
    try:
        return duration_seconds(text if isinstance(text, str) else repr(text))
    except ValueError:
        raise InvalidSpec(
            f"{field} {text!r} is not a duration of at least {MIN_DURATION_SECONDS}s; write e.g. "
            "90s, 10m, 1h30m or 2h"
        ) from None


def notebook_input(spec: Mapping[str, Any]) -> str:
    """The runner's input: the URL as given, or the mounted ConfigMap file."""
    url = spec.get("notebook")
    source = spec.get("notebookFrom")
    if bool(url) == bool(source):
        raise InvalidSpec(
            "set exactly one of spec.notebook (an s3:// or https:// URL) or "
            "spec.notebookFrom.configMapKeyRef"
        )
    if url:
        if not re.fullmatch(NOTEBOOK_URL_PATTERN, url):
            raise InvalidSpec(f"spec.notebook {url!r} must be an s3://BUCKET/KEY or https:// URL")
        return str(url)
    ref = (source or {}).get("configMapKeyRef") or {}
    if not ref.get("name") or not ref.get("key"):
        raise InvalidSpec("spec.notebookFrom.configMapKeyRef needs both name and key")
    return f"{NOTEBOOK_MOUNT}/{ref['key']}"


def output_folder(spec: Mapping[str, Any], namespace: str, name: str, settings: Settings) -> str:
    """The run folder: <spec.output or the operator's prefix><namespace>/<name>/."""
    prefix = spec.get("output") or settings.output_prefix
    if not prefix:
        raise InvalidSpec(
            "spec.output is not set and the operator has no default output prefix; set "
            "spec.output to s3://BUCKET/PREFIX/ (or KUBEMILL_OUTPUT_PREFIX for the operator)"
        )
    if not str(prefix).startswith("s3://"):
        raise InvalidSpec(f"spec.output {prefix!r} must start with s3://")
    if spec.get("output") and not re.fullmatch(OUTPUT_PREFIX_PATTERN, str(prefix)):
        raise InvalidSpec(
            f"spec.output {prefix!r} must be an S3 prefix such as s3://my-bucket/results/"
        )
    return f"{str(prefix).rstrip('/')}/{namespace}/{name}/"
