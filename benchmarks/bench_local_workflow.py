"""Local workflow benchmark: `kubemill workflow run` against the same notebooks run by hand.

What `kubemill workflow run` adds to a workflow's wall time, measured against what a user
would script without it: the same notebooks run one after the other by `kubemill run`
processes with the same parameters, each value taken from the upstream run's results.json.
Both sides start the same `kubemill run` (process start, imports, kernel start), so the
difference is the driver's own: its start-up (Python, the operator's modules, the manifest),
planning, the parameter and upstream files, the state file and its reaction to a run's end.

Shapes, from notebooks written to a temporary folder (a parameters cell, a short cell and
`kubemill.record`), so every step takes a value from another by `stepRef`:

- chain: N steps (default 5), step i takes `n` from step i-1 and records n + 1;
- diamond: a -> (b, c, d, each sleeping 1 s) -> e, which takes `n` from each of b, c, d.

The chain gives the overhead per step, (workflow - by hand) / steps, target under 0.2 s; the
diamond runs with `--parallel` at its default (the number of CPUs) and with `--parallel 1`,
target: parallel faster than sequential (by hand, and --parallel 1). Every side runs once
unmeasured, then `--repeat` times in rotation; medians, min and max, ratios to by hand. The
machine's load moves wall times by seconds, so CPU time (every process started, kernels
included) is shown beside them, and the CPU time of the driver alone: what it costs, whatever
else runs (it waits for each run's exit, no polling, so that is its share of the wall time).
Each run's run.json gives when its notebook started and ended, so the gap from one step's end
to the next one's start (the part of the wall time the driver can lengthen) is shown for both
sides of the chain.
No control plane and no S3. Usage: make bench-local-workflow  (or: python
benchmarks/bench_local_workflow.py -n 1 for a quick run)
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent
KUBEMILL = str(BIN / "kubemill")
#: The target of issue 13: seconds of overhead per chain step.
TARGET_PER_STEP = 0.2
#: How long each of the diamond's middle steps sleeps, so that running them at once shows.
BRANCH_SLEEP = 1.0
NAMESPACE = "default"
#: `kubemill workflow run` as its console script runs it, which then writes the CPU time of the
#: driver alone (not of the runs it waits for) to the file named first: what it costs, free of
#: the machine's load, which moves wall times by seconds.
DRIVER = r"""
import resource, sys
from kubemill.cli import main
try:
    code = main(sys.argv[2:])
finally:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(sys.argv[1], "w") as sink:
        sink.write(str(usage.ru_utime + usage.ru_stime))
sys.exit(code)
"""


def notebook(parameters: str, body: str) -> dict[str, Any]:
    def cell(index: int, source: str, tags: list[str]) -> dict[str, Any]:
        metadata = {"tags": tags} if tags else {}
        return {
            "cell_type": "code",
            "id": f"c{index}",
            "metadata": metadata,
            "source": source,
            "outputs": [],
            "execution_count": None,
        }

    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "cells": [cell(0, parameters, ["parameters"]), cell(1, body, [])],
    }


NOTEBOOKS = {
    # A step of either shape: takes n, optionally sleeps, records n + 1.
    "step.ipynb": notebook(
        "n: int = 0\nsleep: float = 0.0",
        "import time\nimport kubemill\n\ntime.sleep(sleep)\nkubemill.record('n', n + 1)",
    ),
    # The diamond's last step: the sum of its three upstreams' values.
    "join.ipynb": notebook(
        "b: int = 0\nc: int = 0\nd: int = 0",
        "import kubemill\n\nkubemill.record('n', b + c + d)",
    ),
}


@dataclass(frozen=True)
class Step:
    name: str
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    #: parameter -> the step whose result `n` it takes.
    takes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Shape:
    name: str
    #: Upstreams first: the order a user running them by hand would use.
    steps: tuple[Step, ...]
    #: The last step's result `n` when every value went where it should.
    expected: int

    def manifest(self) -> dict[str, Any]:
        steps = []
        for step in self.steps:
            spec: dict[str, Any] = {"notebook": step.notebook}
            if step.parameters:
                spec["parameters"] = step.parameters
            if step.takes:
                spec["parametersFrom"] = [
                    {"name": name, "stepRef": {"name": up, "result": "n"}}
                    for name, up in step.takes.items()
                ]
            steps.append({"name": step.name, "runTemplate": {"spec": spec}})
        return {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "NotebookWorkflow",
            "metadata": {"name": self.name},
            "spec": {"steps": steps},
        }


def chain(depth: int) -> Shape:
    steps = [Step("s0", "step.ipynb", {"n": 0})]
    steps += [Step(f"s{i}", "step.ipynb", takes={"n": f"s{i - 1}"}) for i in range(1, depth)]
    return Shape("chain", tuple(steps), depth)


def diamond() -> Shape:
    branches = [
        Step(name, "step.ipynb", {"sleep": BRANCH_SLEEP}, {"n": "a"}) for name in ("b", "c", "d")
    ]
    join = Step("e", "join.ipynb", takes={name: name for name in ("b", "c", "d")})
    return Shape("diamond", (Step("a", "step.ipynb", {"n": 0}), *branches, join), 6)


@dataclass(frozen=True)
class Spent:
    #: Wall seconds.
    wall: float
    #: CPU seconds (user and system) of the processes started, theirs included (the kernels):
    #: unlike wall time, hardly changed by what else the machine is doing.
    cpu: float


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(act: Callable[[], None]) -> Spent:
    cpu, began = _cpu_of_children(), time.perf_counter()
    act()
    return Spent(time.perf_counter() - began, _cpu_of_children() - cpu)


def run(command: list[str], env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{done.stderr.decode()[-2000:]}")


def by_hand(shape: Shape, work: Path, out: Path, env: dict[str, str]) -> None:
    """The shape's notebooks one after the other, each value read from its upstream's
    results.json: what a user would script without `kubemill workflow`."""
    for step in shape.steps:
        command = [KUBEMILL, "run", step.notebook, f"{out / step.name}/"]
        for name, value in step.parameters.items():
            command += ["-p", name, str(value)]
        for name, up in step.takes.items():
            results = json.loads((out / up / "results.json").read_text(encoding="utf-8"))
            command += ["-p", name, str(results["n"])]
        run(command, env, work)


def run_folder(shape: Shape, side: str, out: Path, step: str) -> Path:
    if side == "by hand":
        return out / step
    return out / NAMESPACE / f"{shape.name}-{step}"


def check(shape: Shape, side: str, out: Path) -> None:
    last = run_folder(shape, side, out, shape.steps[-1].name) / "results.json"
    got = json.loads(last.read_text(encoding="utf-8"))["n"]
    if got != shape.expected:
        raise SystemExit(
            f"{shape.name}, {side}: the last step recorded {got}, not {shape.expected}"
        )


def gaps(shape: Shape, side: str, out: Path) -> list[float]:
    """Seconds from each step's notebook ending (its run.json's endTime) to the next one's
    starting: process exit, the driver's reaction, process start and imports."""
    times = []
    for step in shape.steps:
        run = json.loads((run_folder(shape, side, out, step.name) / "run.json").read_text())
        times.append((_instant(run["startTime"]), _instant(run["endTime"])))
    return [start - end for (_, end), (start, _) in itertools.pairwise(times)]


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--repeat", type=int, default=5, help="measured runs of each side")
    parser.add_argument("--depth", type=int, default=5, help="steps of the chain")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1

    work = Path(tempfile.mkdtemp(prefix="kubemill-bench-local-workflow-"))
    for name, nb in NOTEBOOKS.items():
        (work / name).write_text(json.dumps(nb), encoding="utf-8")
    shapes = {"chain": chain(args.depth), "diamond": diamond()}
    for shape in shapes.values():
        (work / f"{shape.name}.yaml").write_text(yaml.safe_dump(shape.manifest()), "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEMILL_")}

    def hand(shape: Shape, out: Path) -> None:
        by_hand(shape, work, out, env)

    def workflow(parallel: int | None) -> Callable[[Shape, Path], None]:
        def drive(shape: Shape, out: Path) -> None:
            command = [sys.executable, "-P", "-c", DRIVER, str(work / "driver-cpu"), "workflow"]
            command += ["run", f"{shape.name}.yaml", "--output-dir", str(out)]
            if parallel is not None:
                command += ["--parallel", str(parallel)]
            run(command, env, work)

        return drive

    parallel_side = f"workflow (--parallel {cpus})"
    sides: dict[str, dict[str, Callable[[Shape, Path], None]]] = {
        "chain": {"by hand": hand, "workflow": workflow(None)},
        "diamond": {
            "by hand": hand,
            "workflow --parallel 1": workflow(1),
            parallel_side: workflow(None),
        },
    }
    spent: dict[tuple[str, str], list[Spent]] = {(s, side): [] for s in sides for side in sides[s]}
    chain_gaps: dict[str, list[float]] = {side: [] for side in sides["chain"]}
    driver_cpu: dict[tuple[str, str], list[float]] = {k: [] for k in spent if k[1] != "by hand"}
    load = [os.getloadavg()[1]]
    try:
        for rep in range(-1, args.repeat):  # -1: the unmeasured warm-up
            for shape_name, shape_sides in sides.items():
                shape = shapes[shape_name]
                order = list(shape_sides)
                order = order[rep % len(order) :] + order[: rep % len(order)]
                for side in order:
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    took = measured(functools.partial(shape_sides[side], shape, out))
                    check(shape, side, out)
                    if rep >= 0:
                        spent[(shape_name, side)].append(took)
                        if side != "by hand":
                            driver_cpu[(shape_name, side)].append(
                                float((work / "driver-cpu").read_text())
                            )
                        if shape_name == "chain":
                            chain_gaps[side] += gaps(shape, side, out)
            done = f"round {rep + 1} of {args.repeat}" if rep >= 0 else "warm-up"
            print(f"{done} done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load.append(os.getloadavg()[1])

    wall = {key: [t.wall for t in values] for key, values in spent.items()}
    cpu = {key: [t.cpu for t in values] for key, values in spent.items()}
    median = {key: statistics.median(values) for key, values in wall.items()}
    median_cpu = {key: statistics.median(values) for key, values in cpu.items()}
    labels = {"chain": f"chain of {args.depth}", "diamond": "diamond a -> (b, c, d) -> e"}
    print(
        f"\n{args.repeat} runs of each side on {cpus} CPUs (5-minute load average "
        f"{load[0]:.1f} at the start, {load[1]:.1f} at the end), in seconds; ratios of medians "
        "to by hand's; CPU: user and system time of every process started, kernels included; "
        "driver CPU: of `kubemill workflow run` alone"
    )
    print("| shape | side | wall median | min | max | ratio | CPU median | ratio | driver CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in spent:
        shape_name, side = key
        base = (shape_name, "by hand")
        own = f"{statistics.median(driver_cpu[key]):.2f}" if key in driver_cpu else ""
        print(
            f"| {labels[shape_name]} | {side} | {spread(wall[key])} | "
            f"{median[key] / median[base]:.2f}x | {median_cpu[key]:.2f} | "
            f"{median_cpu[key] / median_cpu[base]:.2f}x | {own} |"
        )

    print(
        f"\nchain: from a step's notebook ending to the next one's starting (run.json's endTime "
        f"and startTime), {args.depth - 1} gaps x {args.repeat} runs (seconds)"
    )
    print("| side | median | min | max |")
    print("| --- | --- | --- | --- |")
    for side, values in chain_gaps.items():
        print(f"| {side} | {spread(values)} |")

    ours, base = ("chain", "workflow"), ("chain", "by hand")
    per_step = (median[ours] - median[base]) / args.depth
    paired = statistics.median(
        (a - b) / args.depth for a, b in zip(wall[ours], wall[base], strict=True)
    )
    gap = statistics.median(chain_gaps["workflow"]) - statistics.median(chain_gaps["by hand"])
    cpu_per_step = (median_cpu[ours] - median_cpu[base]) / args.depth
    driver_per_step = statistics.median(driver_cpu[ours]) / args.depth
    met = "met" if per_step < TARGET_PER_STEP else "MISSED"
    print(
        f"\noverhead per step (target < {TARGET_PER_STEP} s): {per_step:+.3f} s from the median "
        f"wall times: {met}. Also: {paired:+.3f} s as the median of each round's difference, "
        f"{gap:+.3f} s in the median gap between steps, {cpu_per_step:+.3f} CPU-s from the "
        f"median CPU times, {driver_per_step:.3f} CPU-s of the driver's own (its start included)"
    )
    by = median[("diamond", "by hand")]
    one = median[("diamond", "workflow --parallel 1")]
    both = median[("diamond", parallel_side)]
    met = "met" if both < min(by, one) else "MISSED"
    print(
        f"diamond (target: parallel faster than sequential): --parallel {cpus} {both:.2f} s, "
        f"{both / by:.2f}x by hand's {by:.2f} s and {both / one:.2f}x --parallel 1's "
        f"{one:.2f} s: {met}"
    )


if __name__ == "__main__":
    main()
