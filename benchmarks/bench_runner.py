"""Runner benchmark: bare nbclient (the floor), papermill and `kubemill run`, side by side.

Every tool runs as its own process, in rotation, on the same notebooks and the same real
kernel, writing to a local file and to S3 on a local SeaweedFS. Prints medians and the ratio of
each median to the floor's. Usage: make bench  (or: python benchmarks/bench_runner.py -n 5)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubemill_testenv.s3server import WRITER_KEY, start_s3

ROOT = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent
BUCKET = "bench"

FLOOR = r"""
import sys, nbformat
from nbclient import NotebookClient
source, target = sys.argv[1], sys.argv[2]
nb = nbformat.read(source, as_version=4)
NotebookClient(nb, kernel_name="python3").execute()
data = nbformat.writes(nb).encode()
if target.startswith("s3://"):
    import boto3
    bucket, key = target[5:].split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
else:
    open(target, "wb").write(data)
"""


def notebook(cells: list[str]) -> dict[str, object]:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "source": source,
                "outputs": [],
                "execution_count": None,
            }
            for i, source in enumerate(cells)
        ],
    }


def timed(command: list[str], env: dict[str, str]) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
        cwd=tempfile.gettempdir(),
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--repeat", type=int, default=5, help="runs per tool and case")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kubemill-bench-"))
    cases = {
        "(a) 50 trivial cells": notebook([f"x = {i}" for i in range(50)]),
        "(b) 200 cells x 50 KB": notebook(["print('x' * 50_000)"] * 200),
    }
    for name, nb in cases.items():
        (work / f"{name[1]}.ipynb").write_text(json.dumps(nb))

    s3 = start_s3(work / "s3")
    try:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBEMILL_"))}
        env.update(s3.env())
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = WRITER_KEY
        env["BOTO3_ENDPOINT_URL"] = s3.endpoint_url  # papermill's name for the endpoint

        tools: dict[str, Callable[[str, str], list[str]]] = {
            "nbclient (floor)": lambda i, o: [str(BIN / "python"), "-P", "-c", FLOOR, i, o],
            "papermill": lambda i, o: [str(BIN / "papermill"), i, o, "--no-progress-bar"],
            "kubemill": lambda i, o: [str(BIN / "kubemill"), "run", i, o],
            "kubemill, checkpoint 1s": lambda i, o: [
                str(BIN / "kubemill"),
                "run",
                i,
                o,
                "--checkpoint-interval",
                "1",
            ],
        }
        rows = []
        for case in cases:
            source = str(work / f"{case[1]}.ipynb")
            for target in ("local", "S3"):
                times: dict[str, list[float]] = {tool: [] for tool in tools}
                for rep in range(args.repeat):
                    order = list(tools)
                    order = order[rep % len(order) :] + order[: rep % len(order)]
                    for tool in order:
                        slug = tool.split()[0].strip(",")
                        out = (
                            f"s3://{BUCKET}/{slug}/{case[1]}.ipynb"
                            if target == "S3"
                            else str(work / f"out-{slug}-{case[1]}.ipynb")
                        )
                        times[tool].append(timed(tools[tool](source, out), env))
                medians = {tool: statistics.median(t) for tool, t in times.items()}
                rows.append((case, target, medians))
                print(f"{case} to {target}: done", file=sys.stderr)

        helps = {}
        for tool, command in (("kubemill", "kubemill"), ("papermill", "papermill")):
            helps[tool] = statistics.median(
                timed([str(BIN / command), "--help"], env) for _ in range(max(5, args.repeat))
            )
    finally:
        s3.stop()

    print(f"\nmedian wall time of {args.repeat} runs each (seconds), ratio to the floor")
    header = ["case", "target", *tools]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for case, target, medians in rows:
        floor = medians["nbclient (floor)"]
        cells = [f"{medians[t]:.2f} ({medians[t] / floor:.2f}x)" for t in tools]
        print(" | ".join([case, target, *cells]))
    print(
        f"\n--help: kubemill {helps['kubemill']:.3f}s, papermill {helps['papermill']:.3f}s "
        f"({helps['papermill'] / helps['kubemill']:.1f}x slower)"
    )


if __name__ == "__main__":
    main()
