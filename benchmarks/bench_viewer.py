"""The viewer through its real HTTP server against a local SeaweedFS, each figure beside the
floor of the raw S3 operations it needs, against issue 14's targets.

    python benchmarks/bench_viewer.py [--runs 100000] [--flat N] [--repeat 7] [--fresh]

Two buckets in one SeaweedFS: `results` holds `--runs` run folders
(`kubemill_testenv.runfolders`: run.json, results.json, output.ipynb, as the runner writes
them); `files` holds one folder of `--flat` small objects (default: as many as runs) and two
notebooks of about 5 MB and 50 MB (plots, tables and text, as reports have). Writing 100,000
runs takes about ten minutes here, so the populated SeaweedFS data folder is kept under
$KUBEMILL_CACHE/bench-viewer, keyed by the generators' version and the counts, and reused;
`--fresh` writes it again.

`kubemill view` runs as its own process (as a user runs it), once per bucket, with a new runs
index and page cache; this script is its HTTP client on one keep-alive connection, and times
the raw S3 operations with the runner's boto3 client:
- the runs index rebuilt when the viewer starts (from its start to the first 200 of
  /api/runs), against listing every key alone;
- the first page of /runs and searches (warm index), against one ListObjectsV2 page;
- a folder page of the flat folder, listed anew (its 5 s listing cache expired) and within
  the cache, against listing every key of it and against one ListObjectsV2 page;
- each notebook's page cold (page cache emptied) and cached, against the GetObject of the
  notebook and of an object the size of the page.
Times are medians of `--repeat` requests (3 for cold renders); nothing is asserted.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubemill.runner.storage import make_s3_client
from kubemill.viewer.s3lean import LeanS3
from kubemill_testenv import runfolders
from kubemill_testenv.runfolders import write_s3
from kubemill_testenv.s3server import S3Server, start_s3

#: Bumped whenever what `populate` writes changes (with runfolders.py's own text, the cache key).
NOTEBOOKS_VERSION = 1
RUNS_BUCKET = "results"
FILES_BUCKET = "files"
FLAT = "flat"
NOTEBOOKS = {"5 MB": 5, "50 MB": 50}

Row = tuple[str, str, str, str, str]


# --- what the store holds ------------------------------------------------------------------


def _png(rng: random.Random, width: int, height: int) -> bytes:
    """A real PNG of noise (incompressible, so its size is its weight in the notebook)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    rows = b"".join(b"\0" + rng.randbytes(width * 3) for _ in range(height))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\0\0\0"
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


def report_notebook(megabytes: int) -> bytes:
    """A report of about `megabytes` MB: per cell a plot (a 64 KB PNG), a table (HTML and
    text) and a few KB of log lines; every tenth cell also a 600 KB HTML output, the kind the
    page leaves out and loads on demand."""
    rng = random.Random(megabytes)
    cells: list[dict[str, Any]] = [
        {
            "cell_type": "markdown",
            "id": "intro",
            "metadata": {},
            "source": f"# A {megabytes} MB report\n\nPlots, tables and logs.",
        }
    ]
    size, i = 0, 0
    while size < megabytes * 1_000_000:
        i += 1
        png = base64.b64encode(_png(rng, 160, 133)).decode()
        rows = "".join(
            f"<tr><td>{r}</td><td>{rng.random():.4f}</td><td>{rng.randrange(10**6)}</td></tr>"
            for r in range(40)
        )
        table = f'<table class="dataframe"><tbody>{rows}</tbody></table>'
        log = "".join(f"step {i}.{n}: loss {rng.random():.6f}\n" for n in range(120))
        outputs: list[dict[str, Any]] = [
            {"output_type": "stream", "name": "stdout", "text": log},
            {
                "output_type": "execute_result",
                "execution_count": i,
                "metadata": {},
                "data": {"text/html": table, "text/plain": f"<table of 40 rows, cell {i}>"},
            },
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {"image/png": png, "text/plain": "<Figure size 640x480 with 1 Axes>"},
            },
        ]
        if i % 10 == 0:
            big = "".join(f"<p>row {n}: {rng.getrandbits(256):064x}</p>" for n in range(7500))
            outputs.append(
                {"output_type": "display_data", "metadata": {}, "data": {"text/html": big}}
            )
        cell = {
            "cell_type": "code",
            "execution_count": i,
            "id": f"cell-{i}",
            "metadata": {},
            "outputs": outputs,
            "source": f"df_{i} = load({i})\nplot(df_{i})\ndf_{i}.head(40)",
        }
        cells.append(cell)
        size += len(json.dumps(cell))
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    return json.dumps(notebook, indent=1).encode()


def cache_key(runs: int, flat: int) -> str:
    digest = hashlib.sha256(Path(runfolders.__file__).read_bytes())
    digest.update(f"{NOTEBOOKS_VERSION}|{runs}|{flat}".encode())
    return digest.hexdigest()[:12]


def populate(client: Any, runs: int, flat: int) -> None:
    for bucket in (RUNS_BUCKET, FILES_BUCKET):
        client.create_bucket(Bucket=bucket)
    began = time.perf_counter()
    write_s3(client, RUNS_BUCKET, "", range(runs), workers=32)
    print(f"wrote {runs:,} run folders in {time.perf_counter() - began:.0f} s", flush=True)
    from concurrent.futures import ThreadPoolExecutor

    def one(n: int) -> None:
        client.put_object(Bucket=FILES_BUCKET, Key=f"{FLAT}/object-{n:06d}.txt", Body=b"x\n")

    began = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        for _ in pool.map(one, range(flat)):
            pass
    print(f"wrote {flat:,} objects in {time.perf_counter() - began:.0f} s", flush=True)
    for label, megabytes in NOTEBOOKS.items():
        data = report_notebook(megabytes)
        client.put_object(Bucket=FILES_BUCKET, Key=_notebook_key(label), Body=data)


def _notebook_key(label: str) -> str:
    return f"reports/report-{label.replace(' ', '').lower()}.ipynb"


@contextmanager
def seaweedfs(runs: int, flat: int, fresh: bool) -> Iterator[S3Server]:
    """SeaweedFS over the cached data folder for these counts, populated first if need be."""
    cache = Path(os.environ.get("KUBEMILL_CACHE", Path.home() / ".cache" / "kubemill"))
    folder = cache / "bench-viewer" / f"s3-{runs}-{flat}-{cache_key(runs, flat)}"
    done = folder / "populated"
    if fresh or not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
    server = start_s3(folder)
    try:
        os.environ.update(server.env())  # boto3's credential chain, here and in the viewer
        if not done.exists():
            client = make_s3_client(server.endpoint_url, "us-east-1", connections=32)
            populate(client, runs, flat)
            done.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
        yield server
    finally:
        server.stop()


# --- timing -------------------------------------------------------------------------------


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


class Client:
    """One keep-alive HTTP connection to the viewer."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self._connection = http.client.HTTPConnection(parts.hostname or "", parts.port)

    def get(self, path: str) -> tuple[int, bytes]:
        self._connection.request("GET", path)
        response = self._connection.getresponse()
        return response.status, response.read()

    def ok(self, path: str) -> bytes:
        status, body = self.get(path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
        return body


#: The `kubemill` measured: this environment's, or another checkout's (`--kubemill`).
KUBEMILL = [str(Path(sys.executable).with_name("kubemill"))]


@contextmanager
def viewer(server: S3Server, root: str, workdir: Path) -> Iterator[tuple[Client, float]]:
    """`kubemill view ROOT` as its own process, with a new page cache and runs index; yields a
    client and the seconds from its start until its runs index answered (the rebuild)."""
    env = {**os.environ, **server.env()}
    cache = workdir / "cache"
    command = [
        KUBEMILL[0],
        "view",
        root,
        "--no-browser",
        "--port=0",
        f"--cache-dir={cache}",
        f"--index-dir={workdir / 'index'}",
        "--refresh-seconds=86400",  # no refresh pass while the requests are timed
    ]
    log = (workdir / "viewer.log").open("wb")
    began = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if " at http" not in line:
            raise RuntimeError(f"kubemill view did not start: {line!r}, see {workdir}/viewer.log")
        client = Client(line.split(" at ")[1].split()[0])
        while client.get("/api/runs?limit=1")[0] == 503:
            time.sleep(0.2)  # the index is being built; the viewer says so with 503
        built = time.perf_counter() - began
        yield client, built
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


# --- the cases ----------------------------------------------------------------------------


class Raw:
    """The raw S3 requests a figure is compared with, made two ways: signed HTTP requests on
    a urllib3 pool (`s3lean`, the floor: no client could do less) and boto3's client (what
    most Python code would spend)."""

    def __init__(self, server: S3Server, lean: bool) -> None:
        self.client = make_s3_client(server.endpoint_url, "us-east-1")
        self.lean = LeanS3.of(self.client, 4) if lean else None
        self.name = "raw" if lean else "boto3"

    def list_page(self, bucket: str, prefix: str, delimiter: str | None, token: str | None) -> Any:
        if self.lean is not None:
            return self.lean.list_page(
                bucket, prefix, delimiter=delimiter, token=token, max_keys=1000
            )
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 1000}
        if delimiter:
            args["Delimiter"] = delimiter
        if token:
            args["ContinuationToken"] = token
        return self.client.list_objects_v2(**args)

    def list_all(self, bucket: str, prefix: str, delimiter: str | None) -> int:
        pages, token = 0, None
        while True:
            response = self.list_page(bucket, prefix, delimiter, token)
            pages += 1
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return pages

    def get(self, bucket: str, key: str) -> int:
        if self.lean is not None:
            data = self.lean.get(bucket, key)
            assert data is not None, key
            return len(data)
        return len(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())


def floors(fn: Callable[[Raw], Any], repeat: int) -> tuple[float, str, Any]:
    """The floor: the faster of the two ways' medians (ms; signed requests win on small
    answers, boto3 on big bodies, read in bigger blocks), a cell naming both, fn's result."""
    lean, result = median_ms(lambda: fn(RAW[0]), repeat)
    boto, _ = median_ms(lambda: fn(RAW[1]), repeat)
    return min(lean, boto), f"raw {_ms(lean)}, boto3 {_ms(boto)}", result


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


#: The floors' two clients, made once SeaweedFS is up.
RAW: list[Raw] = []


def bench_runs(server: S3Server, runs: int, repeat: int, workdir: Path) -> list[Row]:
    began = time.perf_counter()
    pages = RAW[0].list_all(RUNS_BUCKET, "", None)
    walk = time.perf_counter() - began
    rows: list[Row] = []
    with viewer(server, f"s3://{RUNS_BUCKET}/", workdir) as (client, built):
        rows.append(
            (
                f"runs index rebuilt at start ({runs:,} runs)",
                f"{built:.1f} s",
                f"{walk:.1f} s (LIST all {pages} pages, no GET)",
                f"{built / walk:.1f}x",
                "< 2 min",
            )
        )
        floor, cell, _ = floors(lambda raw: raw.list_page(RUNS_BUCKET, "", "/", None), repeat)
        for what, path in (
            ("/runs, first page (50 runs, facets)", "/runs"),
            ("/api/runs, first page", "/api/runs"),
            ("/runs?q=apac (1 run in 8)", "/runs?q=apac"),
            ("/runs?q=batch007 (1 in 1,000)", "/runs?q=batch007"),
            ("/runs?q=table+eu&status=Succeeded", "/runs?q=table+eu&status=Succeeded"),
            ("/runs?namespace=ml&status=Failed", "/runs?namespace=ml&status=Failed"),
        ):
            client.ok(path)  # this connection's first use of the index
            ms, _ = median_ms(lambda path=path: client.ok(path), repeat)
            rows.append((what, _ms(ms), f"{cell}, 1 LIST", f"{ms / floor:.1f}x", "< 200 ms"))
    return rows


def bench_files(server: S3Server, flat: int, repeat: int, workdir: Path) -> tuple[list[Row], str]:
    rows: list[Row] = []
    notes = []
    with viewer(server, f"s3://{FILES_BUCKET}/", workdir) as (client, _):
        list_all, all_cell, pages = floors(
            lambda raw: raw.list_all(FILES_BUCKET, f"{FLAT}/", "/"), 3
        )
        list_one, one_cell, _ = floors(
            lambda raw: raw.list_page(FILES_BUCKET, f"{FLAT}/", "/", None), repeat
        )
        # Apart by more than the listing cache's 5 s, so each request lists the folder anew.
        cold: list[float] = []
        for _ in range(max(3, repeat // 2)):
            time.sleep(5.5)
            began = time.perf_counter()
            client.ok(f"/tree/{FLAT}/?sort=time&order=desc")
            cold.append((time.perf_counter() - began) * 1000)
        ms = statistics.median(cold)
        rows.append(
            (
                f"folder of {flat:,} objects, first page, listed anew",
                _ms(ms),
                f"{all_cell}, LIST all {pages} pages",
                f"{ms / list_all:.1f}x",
                "",
            )
        )
        client.ok(f"/tree/{FLAT}/")
        warm, _ = median_ms(lambda: client.ok(f"/tree/{FLAT}/?sort=name"), repeat)
        rows.append(
            (
                "the same, next request within 5 s (listing kept)",
                _ms(warm),
                f"{one_cell}, 1 LIST",
                f"{warm / list_one:.1f}x",
                "< 200 ms",
            )
        )
        page_cache = workdir / "cache"
        for label in NOTEBOOKS:
            key = _notebook_key(label)
            path = "/view/" + urllib.parse.quote(key)
            get_nb, nb_cell, size = floors(lambda raw, key=key: raw.get(FILES_BUCKET, key), repeat)
            times = []
            for _ in range(3):
                for file in page_cache.rglob("*"):
                    if file.is_file():
                        file.unlink()
                began = time.perf_counter()
                page = client.ok(path)
                times.append((time.perf_counter() - began) * 1000)
            cold_ms = statistics.median(times)
            rows.append(
                (
                    f"{label} notebook page, cold (GET, render, store)",
                    _ms(cold_ms),
                    f"{nb_cell}, GET {size / 1e6:.1f} MB notebook",
                    f"{cold_ms / get_nb:.1f}x",
                    "",
                )
            )
            blob = f"bench/html-{len(page)}"
            RAW[1].client.put_object(Bucket=FILES_BUCKET, Key=blob, Body=os.urandom(len(page)))
            get_html, html_cell, _ = floors(
                lambda raw, blob=blob: raw.get(FILES_BUCKET, blob), 2 * repeat
            )
            client.ok(path)
            cached, _ = median_ms(lambda path=path: client.ok(path), 2 * repeat)
            rows.append(
                (
                    f"{label} notebook page, cached",
                    _ms(cached),
                    f"{html_cell}, GET {len(page) / 1e6:.2f} MB (the page's size)",
                    f"{cached / get_html:.2f}x",
                    "< 1.5x",
                )
            )
            frames = page.count(b'class="km-frame"') + page.count(b'class="km-lazy"')
            notes.append(
                f"{label} notebook ({size / 1e6:.1f} MB): its page is {len(page) / 1e6:.2f} MB "
                f"of HTML, sent once; {frames} outputs load on demand"
            )
            outputs = _lazy_outputs(page)[: repeat + 1]
            if outputs:
                urls = [path + "?output=" + which for which in outputs]
                began = time.perf_counter()
                client.ok(urls[0])
                first = (time.perf_counter() - began) * 1000
                rest = iter(urls[1:] or urls)
                ms, _ = median_ms(lambda rest=rest: client.ok(next(rest)), len(urls) - 1 or 1)
                rows.append(
                    (
                        f"{label} notebook, an output loaded on demand: first, then others",
                        f"{_ms(first)}, then {_ms(ms)}",
                        "",
                        "",
                        "",
                    )
                )
    return rows, "\n".join(notes)


def _lazy_outputs(page: bytes) -> list[str]:
    found = []
    for part in page.split(b"?output=")[1:]:
        end = min(i for i in (part.find(b'"'), part.find(b"&"), len(part)) if i >= 0)
        found.append(part[:end].decode())
    return found


def table(title: str, rows: list[Row]) -> str:
    lines = [
        f"### {title}",
        "",
        "| measured | median | floor: the S3 requests alone | ratio | target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000, help="run folders in S3")
    parser.add_argument("--flat", type=int, help="objects in one folder (default: --runs)")
    parser.add_argument("--repeat", type=int, default=7, help="requests per figure (median)")
    parser.add_argument("--fresh", action="store_true", help="populate SeaweedFS again")
    parser.add_argument(
        "--kubemill", help="the kubemill executable to measure (another checkout's, to compare)"
    )
    args = parser.parse_args()
    if args.kubemill:
        KUBEMILL[0] = args.kubemill
    flat = args.runs if args.flat is None else args.flat
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}", flush=True)
    with (
        seaweedfs(args.runs, flat, args.fresh) as server,
        tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp,
    ):
        runs_dir, files_dir = Path(tmp, "runs"), Path(tmp, "files")
        runs_dir.mkdir()
        files_dir.mkdir()
        RAW[:] = [Raw(server, lean=True), Raw(server, lean=False)]
        runs_rows = bench_runs(server, args.runs, args.repeat, runs_dir)
        files_rows, notes = bench_files(server, flat, args.repeat, files_dir)
    print(table(f"Runs view, {args.runs:,} runs in SeaweedFS", runs_rows))
    print()
    print(table(f"Folders and notebooks, {flat:,} objects in one folder", files_rows))
    print()
    print(notes)
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
