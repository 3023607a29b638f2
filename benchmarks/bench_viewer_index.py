"""The viewer's runs index at 100,000 runs: rebuild, refresh, the runs view's first page, a deep
page, filters, facets and searches, against issue 14's targets.

    python benchmarks/bench_viewer_index.py [--runs 100000] [--s3-runs 0]

Synthetic run folders (`kubemill_testenv.runfolders`: run.json, results.json, output.ipynb as
the runner writes them) go into a local folder, and with `--s3-runs N` also into a local
SeaweedFS, where writing them is timed too (three PUTs per run). Query times are medians of
`--repeat` warm runs, from a fresh thread's connection for the first one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubemill.viewer.runindex import RunFilter, RunIndex, Sort
from kubemill.viewer.runindex_sources import LocalObjects, S3Objects
from kubemill.viewer.runindex_sql import EVERY_RUN
from kubemill_testenv.runfolders import write_local, write_s3

Row = tuple[str, str, str, str]


def _median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def _queries(index: RunIndex, repeat: int) -> list[Row]:
    rows: list[Row] = []

    def measure(what: str, fn: Callable[[], Any], target: str = "< 200 ms") -> None:
        ms, result = _median_ms(fn, repeat)
        count = f"{result.total:,} runs" if hasattr(result, "total") else ""
        rows.append((what, f"{ms:.1f} ms", target, count))

    def deep_cursor(pages: int, filters: RunFilter = EVERY_RUN) -> str | None:
        cursor = None
        for _ in range(pages):
            cursor = index.query(filters, cursor=cursor).next_cursor
        return cursor

    measure("first page, newest first (50 runs + total)", lambda: index.query())
    page_200 = deep_cursor(200)
    measure("page 201 by cursor (runs 10,001-10,050)", lambda: index.query(cursor=page_200))
    measure("first page by name", lambda: index.query(sort=Sort.NAME))
    failed = RunFilter(statuses=frozenset({"Failed"}))
    measure("status = Failed", lambda: index.query(failed))
    month = RunFilter(
        namespaces=frozenset({"ml"}),
        started_from=_day("2026-06-01"),
        started_before=_day("2026-07-01"),
    )
    measure("namespace ml, June", lambda: index.query(month))
    measure("schedule filter", lambda: index.query(RunFilter(schedules=frozenset({"ml-daily-3"}))))
    measure("search 'apac' (1 run in 8)", lambda: index.query(RunFilter(text="apac")))
    measure("search 'batch007' (1 in 1,000)", lambda: index.query(RunFilter(text="batch007")))
    measure("search 'run-012345' (a name)", lambda: index.query(RunFilter(text="run-012345")))
    measure(
        "search 'table eu' + status Succeeded",
        lambda: index.query(RunFilter(text="table eu", statuses=frozenset({"Succeeded"}))),
    )
    apac_deep = deep_cursor(20, RunFilter(text="apac"))
    measure(
        "search 'apac', page 21 by cursor",
        lambda: index.query(RunFilter(text="apac"), cursor=apac_deep),
    )
    measure("facets (4 dimensions)", lambda: index.facets())
    measure(
        "facets under a search",
        lambda: index.facets(RunFilter(text="apac", namespaces=frozenset({"ml"}))),
    )
    return rows


def _day(text: str) -> Any:
    import datetime

    return datetime.datetime.fromisoformat(text + "T00:00:00+00:00")


def _table(title: str, rows: list[Row]) -> str:
    lines = [
        f"### {title}",
        "",
        "| measured | time | target | result |",
        "| --- | ---: | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def bench_local(workdir: Path, runs: int, repeat: int) -> list[Row]:
    store = workdir / "store"
    began = time.perf_counter()
    write_local(store, range(runs))
    written = time.perf_counter() - began
    objects = LocalObjects(store)
    index = RunIndex(workdir / "index")
    stats = index.rebuild(objects)
    size = sum(p.stat().st_size for p in (workdir / "index").glob("runs-*"))
    rows: list[Row] = [
        (f"write {runs:,} run folders (files)", f"{written:.1f} s", "", ""),
        (
            "rebuild",
            f"{stats.seconds:.1f} s",
            "< 2 min",
            f"{stats.runs:,} runs, {stats.keys:,} keys, index {size / 1e6:.0f} MB",
        ),
    ]
    stats = index.refresh(objects)
    rows.append(("refresh, nothing changed (walk only)", f"{stats.seconds:.1f} s", "", ""))
    write_local(store, range(runs, runs + 100))
    stats = index.refresh(objects)
    rows.append(("refresh, 100 new runs", f"{stats.seconds:.1f} s", "", f"{stats.read} read"))
    rows += _queries(index, repeat)
    index.close()
    return rows


def bench_s3(workdir: Path, runs: int, repeat: int) -> list[Row]:
    import os

    from kubemill.runner.storage import make_s3_client
    from kubemill_testenv.s3server import start_s3

    server = start_s3(workdir / "seaweedfs")
    try:
        os.environ.update(server.env())
        client = make_s3_client(server.endpoint_url, "us-east-1", connections=32)
        client.create_bucket(Bucket="results")
        began = time.perf_counter()
        write_s3(client, "results", "runs/", range(runs), workers=32)
        written = time.perf_counter() - began
        objects = S3Objects(client, "s3://results/runs/")
        began = time.perf_counter()
        listed = sum(1 for _ in objects.walk())
        walked = time.perf_counter() - began
        index = RunIndex(workdir / "s3-index")
        stats = index.rebuild(objects)
        rows: list[Row] = [
            (f"write {runs:,} run folders (3 PUTs each)", f"{written:.1f} s", "", ""),
            (f"walk {listed:,} keys (ListObjectsV2)", f"{walked:.1f} s", "", ""),
            ("rebuild", f"{stats.seconds:.1f} s", "< 2 min", f"{stats.read:,} GETs"),
        ]
        stats = index.refresh(objects)
        rows.append(("refresh, nothing changed (walk only)", f"{stats.seconds:.1f} s", "", ""))
        rows += _queries(index, repeat)
        index.close()
        return rows
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="run folders in a local folder")
    parser.add_argument("--s3-runs", type=int, default=0, help="run folders in SeaweedFS (0: none)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each query (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-viewer-index-") as tmp:
        workdir = Path(tmp)
        if args.runs:
            print(
                _table(
                    f"Local folder, {args.runs:,} runs",
                    bench_local(workdir, args.runs, args.repeat),
                )
            )
            print()
        if args.s3_runs:
            print(
                _table(
                    f"SeaweedFS, {args.s3_runs:,} runs",
                    bench_s3(workdir, args.s3_runs, args.repeat),
                )
            )


if __name__ == "__main__":
    main()
