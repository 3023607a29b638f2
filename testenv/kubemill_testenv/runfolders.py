"""Synthetic run folders shaped like the runner's (run.json, results.json, output.ipynb), for the
viewer's runs index: its tests and its benchmark write thousands of them.

The run.json fields are those `kubemill.runner.run` writes (the integration tests check the
index against runs of the real runner); the values are spread over namespaces, schedules,
workflows, statuses and a year of start times, deterministically from the run's number.
"""

from __future__ import annotations

import datetime
import json
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = [
    "EPOCH",
    "NAMESPACES",
    "REGIONS",
    "STATUSES",
    "folder_of",
    "run_files",
    "synthetic_run",
    "write_local",
    "write_s3",
]

NAMESPACES = ("analytics", "ml", "finance", "ops", "growth")
REGIONS = ("eu", "us", "apac", "latam", "africa", "nordics", "dach", "benelux")
#: (status, reason) with their weights out of 100.
STATUSES = (
    ("Succeeded", None, 84),
    ("Failed", "CellError", 10),
    ("Failed", "CellTimeout", 2),
    ("Failed", "RunTimeout", 1),
    ("Failed", "KernelDied", 2),
    ("Prepared", None, 1),
)
#: Run 0 starts here; run i starts i x 5 minutes later (100,000 runs span about a year).
EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
_OUTPUT = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}\n'


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def folder_of(i: int) -> str:
    """Run i's folder: <namespace>/<run name>, as the operator lays out its output prefix."""
    return f"{NAMESPACES[i % len(NAMESPACES)]}/run-{i:06d}"


def synthetic_run(i: int) -> dict[str, Any]:
    """Run i's run.json."""
    rng = random.Random(i)
    namespace = NAMESPACES[i % len(NAMESPACES)]
    name = folder_of(i).rsplit("/", 1)[1]
    start = EPOCH + datetime.timedelta(minutes=5 * i, seconds=rng.random())
    duration = round(rng.uniform(2, 600), 3)
    status, reason = rng.choices(
        [(s, r) for s, r, _ in STATUSES], weights=[w for _, _, w in STATUSES]
    )[0]
    identity: dict[str, str] = {
        "run": name,
        "runUid": f"{i:08x}-0000-4000-8000-000000000000",
        "namespace": namespace,
        "pod": f"{name}-x{i % 97:02d}-p",
        "job": f"{name}-x{i % 97:02d}",
    }
    kind = (i // 5) % 10  # independent of the namespace (i % 5)
    if kind < 5:
        identity["schedule"] = f"{namespace}-daily-{i % 7}"
    elif kind < 8:
        identity["workflow"] = f"{namespace}-pipeline-{i % 3}"
        identity["step"] = ("extract", "transform", "check")[(i // 50) % 3]
    region = REGIONS[rng.randrange(len(REGIONS))]
    parameters = {
        "region": region,
        "alpha": round(rng.random(), 3),
        "day": (start.date()).isoformat(),
        "tag": f"batch{i % 1000:03d}",
    }
    results: dict[str, Any] = {}
    if status == "Succeeded":
        results = {
            "rows": rng.randrange(10**6),
            "accuracy": round(rng.random(), 4),
            "table": f"s3://warehouse/{namespace}/{name}/table-{region}.parquet",
        }
    document: dict[str, Any] = {
        "kubemillVersion": "0.1.0",
        "status": status,
        "input": {
            "uri": f"s3://notebooks/{namespace}/report-{i % 13}.ipynb",
            "sha256": f"{rng.getrandbits(256):064x}",
            "etag": f"{rng.getrandbits(128):032x}",
        },
        "output": f"s3://results/{folder_of(i)}/output.ipynb",
        "parameters": parameters,
        "secretParameters": {"db_password": {"fromEnv": "KUBEMILL_SECRET_0"}} if i % 4 == 0 else {},
        "kernel": {"name": "python3", "language": "python", "languageVersion": "3.11.7"},
        "runner": {"python": "3.11.7", "platform": "Linux"},
        "startTime": _iso(start),
        "durationSeconds": duration,
        "checkpoints": int(duration // 10),
        "endTime": _iso(start + datetime.timedelta(seconds=duration)),
        "identity": identity,
        "cells": [
            {"index": 1, "id": "c1", "startTime": _iso(start), "durationSeconds": 0.1},
        ],
        "results": results,
    }
    if status == "Failed":
        document["failure"] = {
            "reason": reason,
            "message": f"cell In [3] raised KeyError: 'column_{i % 50}'",
            "cell": 4,
            "executionCount": 3,
            "ename": "KeyError",
            "evalue": f"'column_{i % 50}'",
            "traceback": "Traceback (most recent call last):\n  ...\nKeyError",
        }
    if identity.get("step") == "check":
        document["upstream"] = [
            {
                "name": name.replace("run-", "up-"),
                "namespace": namespace,
                "uid": "u",
                "outputUrl": "s3://results/x/output.ipynb",
                "parameters": ["table"],
            }
        ]
    return document


def run_files(i: int, document: dict[str, Any] | None = None) -> dict[str, bytes]:
    """Run i's folder as the runner leaves it: {path: bytes}."""
    document = document if document is not None else synthetic_run(i)
    folder = folder_of(i)
    return {
        f"{folder}/output.ipynb": _OUTPUT,
        f"{folder}/results.json": json.dumps(document["results"], indent=2).encode(),
        f"{folder}/run.json": json.dumps(document, indent=2).encode(),
    }


def _parallel(fn: Callable[[int], None], numbers: Iterable[int], workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(fn, numbers):
            pass


def write_local(root: Path, numbers: Iterable[int]) -> None:
    """Write runs `numbers` under `root`, run.json last as the runner does."""

    def one(i: int) -> None:
        for path, data in run_files(i).items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)

    for i in numbers:
        one(i)


def write_s3(
    client: Any, bucket: str, prefix: str, numbers: Iterable[int], workers: int = 32
) -> None:
    """Write runs `numbers` under s3://bucket/prefix, `workers` PUTs at a time."""

    def one(i: int) -> None:
        for path, data in run_files(i).items():
            client.put_object(Bucket=bucket, Key=prefix + path, Body=data)

    _parallel(one, numbers, workers)
