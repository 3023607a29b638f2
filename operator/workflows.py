"""What a NotebookWorkflow should do now: pure functions from the workflow and its runs to the
runs to create and delete, the Events to post and the status to write.

The controller (workflow_controller.py) feeds in what the watches saw and carries the plan out.
The rules, each a table test without a cluster:

- Every step (and every item of a `forEach` step) is one NotebookRun with one deterministic
  name, `<workflow>-<step>[-<item>]`, owned by the workflow: creating it twice answers 409, so a
  restarted operator never runs a step twice.
- A step's run is created as soon as what it needs is known, so that it starts the moment its
  inputs exist: a value from a step (`stepRef`) becomes a `notebookRunRef` to that step's run,
  which the run controller waits for; such a run is created once the run it references exists.
  What the run controller cannot wait for is waited for here: `dependsOn` (order without a
  value), a `forEach` over a list another step records, and references to a `forEach` step
  (a list, one value per item): those steps are created once their dependencies succeeded.
- A step whose dependency failed or was skipped is `Skipped` (reason UpstreamFailed); with
  `failFast`, the first failure also skips every step that has not started (runs that still
  wait are deleted). `finally` steps are created once every other step has ended, whatever
  happened, and may take the workflow's outcome as a parameter.
- The workflow fails if any step fails (a test step's failure is a failed test), and succeeds
  when every step, `finally` included, succeeded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import InvalidSpec
from .meta import (
    GROUP,
    LABEL_STEP,
    LABEL_WORKFLOW,
    MANAGED_BY,
    VERSION,
    copied_annotations,
    copied_labels,
    owner_reference,
)
from .status import TERMINAL, condition, format_duration
from .times import parse_rfc3339

__all__ = [
    "MAX_ITEMS",
    "RETRY",
    "Step",
    "WorkflowPlan",
    "parse_steps",
    "plan",
    "run_name",
]

#: Most items a forEach step may have.
MAX_ITEMS = 200
#: A recorded result is copied into the workflow's step table when its JSON is this short,
#: up to a total per step: 100 steps' tables stay well inside the API server's object limit.
SMALL_RESULT = 200
SMALL_RESULTS_TOTAL = 1000
#: The annotation on a forEach step's run holding its item's index.
ITEM = "kubemill.dev/item"
#: Set on a failed NotebookWorkflow (to any new value; `kubemill retry` uses the time) to
#: re-run its failed and skipped steps.
RETRY = "kubemill.dev/retry"
#: Most attempts of a workflow: run names keep two digits for it (`-r99`), within 63.
MAX_ATTEMPTS = 99
#: Phases of a step (or item) that will not change.
ENDED = ("Succeeded", "Failed", "Skipped")
#: Characters of a failure message quoted in a step's entry and the workflow's message.
_QUOTED = 400


@dataclass(frozen=True)
class ForEach:
    parameter: str
    items: tuple[Any, ...] | None = None
    #: (step, result) of a list another step records.
    from_step: tuple[str, str] | None = None


@dataclass(frozen=True)
class Step:
    name: str
    template: Mapping[str, Any]
    #: Every step this one needs something from: order, a value or its items.
    needs: tuple[str, ...] = ()
    #: The needed steps that must have succeeded before this step's run is created (the rest
    #: are waited for by the run itself, through notebookRunRef).
    gates: tuple[str, ...] = ()
    for_each: ForEach | None = None
    test: bool = False
    final: bool = False


@dataclass
class WorkflowPlan:
    """What to do now: delete, create, then patch the status and post the Events."""

    #: Runs to create, each with the step it belongs to.
    create: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    #: (run name, why) of runs to delete: waiting runs a failFast skipped.
    delete: list[tuple[str, str]] = field(default_factory=list)
    #: (type, reason, message) Events on the workflow.
    events: list[tuple[str, str, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def run_name(workflow: str, step: str, item: int | None = None, attempt: int = 1) -> str:
    """The one name a step's run (or a forEach item's) can have in this workflow's attempt:
    a retry gives a failed or skipped step a new run, and keeps the old one to look at."""
    name = f"{workflow}-{step}" if item is None else f"{workflow}-{step}-{item}"
    return name if attempt == 1 else f"{name}-r{attempt}"


def _step(raw: Mapping[str, Any], final: bool, where: str) -> Step:
    template = raw.get("runTemplate") or {}
    spec = template.get("spec") or {}
    needs = list(raw.get("dependsOn") or [])
    gates = list(needs)
    given = set(spec.get("parameters") or {})
    loop = raw.get("forEach")
    looped = str(loop.get("parameter") or "") if loop is not None else None
    taken: set[str] = set()
    for item in spec.get("parametersFrom") or []:
        name = str(item.get("name"))
        # The same rule as a NotebookRun's, said before any step runs rather than when the
        # step's run is refused (or, for an item's value, silently overwritten).
        clash = (
            "runTemplate.spec.parameters" if name in given
            else "forEach.parameter" if name == looped
            else "another parametersFrom entry" if name in taken
            else None
        )  # fmt: skip
        if clash is not None:
            raise InvalidSpec(
                f"{where}: parameter {name!r} is set by runTemplate.spec.parametersFrom and by "
                f"{clash}: keep one"
            )
        taken.add(name)
        ref = item.get("stepRef")
        if ref is not None:
            needs.append(str(ref.get("name")))
        elif item.get("workflowOutcome") is not None and not final:
            raise InvalidSpec(
                f"{where}: workflowOutcome is for finally steps only (it is known once "
                "every step has ended)"
            )
    for_each = None
    if loop is not None:
        if final:
            raise InvalidSpec(f"{where}: a finally step cannot have forEach")
        source = loop.get("fromStep")
        items = loop.get("items")
        if (source is None) == (items is None):
            raise InvalidSpec(f"{where}.forEach needs exactly one of items and fromStep")
        if items is not None and len(items) > MAX_ITEMS:
            raise InvalidSpec(
                f"{where}.forEach.items has {len(items)} items, more than {MAX_ITEMS}; split "
                "the work into fewer, larger items"
            )
        parameter = str(loop.get("parameter") or "")
        if parameter in (spec.get("parameters") or {}):
            raise InvalidSpec(
                f"{where}: forEach.parameter {parameter!r} is also in runTemplate.spec."
                "parameters; each item is passed as that parameter, so keep one"
            )
        for_each = ForEach(
            parameter,
            tuple(items) if items is not None else None,
            (str(source["name"]), str(source["result"])) if source is not None else None,
        )
        if source is not None:
            needs.append(str(source["name"]))
            gates.append(str(source["name"]))
    if final and raw.get("dependsOn"):
        raise InvalidSpec(f"{where}: a finally step runs after every step; drop dependsOn")
    return Step(
        name=str(raw["name"]),
        template=template,
        needs=tuple(dict.fromkeys(needs)),
        gates=tuple(dict.fromkeys(gates)),
        for_each=for_each,
        test=bool(raw.get("test")),
        final=final,
    )


def parse_steps(spec: Mapping[str, Any]) -> list[Step]:
    """The workflow's steps, then its finally steps, with what each needs; InvalidSpec for
    what the CRD cannot refuse (a cycle) or an older CRD did not."""
    steps = [_step(s, False, f"spec.steps[{i}]") for i, s in enumerate(spec.get("steps") or [])]
    finals = [_step(s, True, f"spec.finally[{i}]") for i, s in enumerate(spec.get("finally") or [])]
    if not steps:
        raise InvalidSpec("spec.steps is empty: a workflow needs at least one step")
    names = [s.name for s in steps + finals]
    clashing = [n for n in names if re.search(r"-r?[0-9]+$", n)]
    if clashing:
        raise InvalidSpec(
            f"step {clashing[0]!r} ends in -<digits> or -r<digits>, which name a step's items "
            "and retries in its runs' names; rename it, e.g. part-1 to part1"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidSpec(f"step names must be unique; {', '.join(twice)} appear more than once")
    known = {s.name for s in steps}
    by_name = {s.name: s for s in steps}
    for step in steps + finals:
        for need in step.needs:
            if need == step.name or need not in known:
                what = "itself" if need == step.name else f"{need!r}, which is not in spec.steps"
                raise InvalidSpec(f"step {step.name!r} needs {what}")
    # A forEach step's value is a list, known once all its items succeeded: a reference to one
    # gates like dependsOn does.
    steps = [
        replace(
            s, gates=tuple(dict.fromkeys([*s.gates, *(n for n in s.needs if by_name[n].for_each)]))
        )
        for s in steps
    ]
    # A finally step starts once every step ended, and takes what they made, or None.
    finals = [replace(f, gates=()) for f in finals]
    cycle = _cycle({s.name: s.needs for s in steps})
    if cycle:
        raise InvalidSpec(
            "the steps make a cycle: " + " → ".join(cycle) + "; a step cannot need itself"
        )
    return steps + finals


def _cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for need in graph.get(node, ()):
            if state.get(need) == 1:
                return [*path[path.index(need) :], need]
            if need not in state and (found := visit(need)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


@dataclass
class _Slot:
    """One run of a step: the step's only run, or one item's."""

    step: Step
    item: int | None
    name: str
    run: Mapping[str, Any] | None
    phase: str = "Pending"
    reason: str = ""
    message: str = ""
    #: The workflow attempt this slot's run belongs to (1, or the retry that re-ran it).
    attempt: int = 1
    #: What the status last said of this slot, while the watch does not show its run (after a
    #: restart, before the runs are listed; or a skipped run that was deleted): it stands.
    kept: Mapping[str, Any] | None = None

    @property
    def exists(self) -> bool:
        """Whether the slot's run was created (seen, or named in the status)."""
        return self.run is not None or bool(self.kept and self.kept.get("runName"))


def _run_phase(run: Mapping[str, Any]) -> tuple[str, str, str]:
    status = run.get("status") or {}
    phase = str(status.get("phase") or "Pending")
    reason = str(status.get("reason") or phase)
    message = str(status.get("message") or "")[:_QUOTED]
    if phase == "Failed" and reason == "UpstreamFailed":
        return "Skipped", reason, message
    return phase, reason, message


def _aggregate(slots: Sequence[_Slot]) -> str:
    """A step's phase from its items': Pending until one exists, Running until all ended."""
    phases = [s.phase for s in slots]
    if not all(p in ENDED for p in phases):
        return "Running" if any(s.run is not None for s in slots) else "Pending"
    if "Failed" in phases:
        return "Failed"
    return "Skipped" if "Skipped" in phases else "Succeeded"


def _outcome(
    steps: Sequence[Step], phases: Mapping[str, str], slots: Mapping[str, list[_Slot]]
) -> dict[str, Any]:
    """What a finally step's workflowOutcome parameter holds."""
    main = [s for s in steps if not s.final]
    failed = [s.name for s in main if phases[s.name] == "Failed"]
    return {
        "phase": "Failed" if failed else "Succeeded",
        "failed": failed,
        "skipped": [s.name for s in main if phases[s.name] == "Skipped"],
        "steps": {
            s.name: [
                {
                    "run": slot.name,
                    "phase": slot.phase,
                    "reason": slot.reason,
                    "outputUrl": ((slot.run or {}).get("status") or {}).get("outputUrl"),
                }
                for slot in slots[s.name]
            ]
            for s in main
        },
    }


def _value(slot: _Slot, what: Mapping[str, Any], strict: bool) -> Any:
    """What a reference takes from one run's status: a result, or an output URL; None for
    what it does not have, unless `strict`."""
    status = (slot.run or {}).get("status") or {}
    if "result" in what:
        results = status.get("results") or {}
        if what["result"] not in results and strict:
            raise _StepFailed(
                "MissingResult",
                f"step {slot.step.name}'s run {slot.name} has no result {what['result']!r} in "
                "its status (a forEach step's results are read from its runs' statuses, which "
                "hold 4 KiB each; record smaller values)",
            )
        return results.get(what["result"])
    url = status.get("outputUrl")
    if what.get("output") == "folder":
        folder = str(url)[: -len("output.ipynb")] if str(url).endswith("/output.ipynb") else None
        if folder is None and strict:
            raise _StepFailed(
                "MissingOutput",
                f"step {slot.step.name}'s run {slot.name} has no run folder (its output: "
                f"{url or 'none'}); a run folder exists only when the run's output is a folder",
            )
        return folder
    return url


class _StepFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _build_run(
    workflow: Mapping[str, Any],
    step: Step,
    slot: _Slot,
    item: Any,
    slots: Mapping[str, list[_Slot]],
    outcome: Mapping[str, Any] | None,
) -> dict[str, Any]:
    meta = workflow["metadata"]
    template_meta = step.template.get("metadata") or {}
    spec = dict(step.template.get("spec") or {})
    parameters = dict(spec.get("parameters") or {})
    kept = []
    for entry in spec.get("parametersFrom") or []:
        ref = entry.get("stepRef")
        if ref is not None:
            source = slots[str(ref["name"])]
            what = {k: v for k, v in ref.items() if k in ("result", "output")}
            if source[0].step.for_each is not None:
                # A list, one value per item: all items succeeded (the step gates on them).
                parameters[entry["name"]] = [_value(s, what, not step.final) for s in source]
            elif not step.final or source[0].phase == "Succeeded":
                # The run controller passes it on, of any size, once that run succeeded.
                target = {"name": source[0].name, **what}
                kept.append({"name": entry["name"], "notebookRunRef": target})
            else:
                # A finally step runs whatever happened: what a failed or skipped step did
                # not make is None.
                parameters[entry["name"]] = _value(source[0], what, False)
        elif entry.get("workflowOutcome") is not None:
            parameters[entry["name"]] = dict(outcome or {})
        else:
            kept.append(dict(entry))
    if step.for_each is not None:
        parameters[step.for_each.parameter] = item
    if parameters:
        spec["parameters"] = parameters
    else:
        spec.pop("parameters", None)
    if kept:
        spec["parametersFrom"] = kept
    else:
        spec.pop("parametersFrom", None)
    annotations = copied_annotations(template_meta.get("annotations"))
    if slot.item is not None:
        annotations[ITEM] = str(slot.item)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NotebookRun",
        "metadata": {
            "name": slot.name,
            "namespace": meta["namespace"],
            "labels": {
                **copied_labels(template_meta.get("labels")),
                **MANAGED_BY,
                LABEL_WORKFLOW: meta["name"],
                LABEL_STEP: step.name,
            },
            "annotations": annotations,
            "ownerReferences": [owner_reference(workflow, "NotebookWorkflow")],
        },
        "spec": spec,
    }


def _items(step: Step, slots: Mapping[str, list[_Slot]]) -> list[Any] | None:
    """A forEach step's items, or None while the step recording them has not succeeded."""
    loop = step.for_each
    if loop is None:
        return [None]
    if loop.items is not None:
        return list(loop.items)
    assert loop.from_step is not None
    source, result = loop.from_step
    ran = slots[source]
    if not ran or ran[0].phase != "Succeeded" or ran[0].run is None:
        return None  # not yet, or the watch has not shown its run (and results) yet
    status = (ran[0].run or {}).get("status") or {}
    results = status.get("results") or {}
    if result not in results:
        raise _StepFailed(
            "MissingResult",
            f"forEach: step {source} recorded no result {result!r} in its status (it "
            f"recorded: {', '.join(sorted(results)) or 'none'})",
        )
    items = results[result]
    if not isinstance(items, list):
        raise _StepFailed(
            "InvalidForEach",
            f"forEach: step {source}'s result {result!r} is a {type(items).__name__}, not a "
            "list; record a list of items",
        )
    if len(items) > MAX_ITEMS:
        raise _StepFailed(
            "InvalidForEach",
            f"forEach: step {source}'s result {result!r} has {len(items)} items, more than "
            f"{MAX_ITEMS}; record fewer, larger items",
        )
    return items


def plan(
    workflow: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    now: str,
    refused: Mapping[str, str] | None = None,
) -> WorkflowPlan:
    """What to do for `workflow` given its runs as last seen (and those this process created
    that the watch has not shown yet) at `now` (RFC 3339), and the runs the API server refused
    to create (name: its message)."""
    meta = workflow["metadata"]
    spec = workflow.get("spec") or {}
    old: Mapping[str, Any] = workflow.get("status") or {}
    generation = int(meta.get("generation", 1))
    result = WorkflowPlan()
    try:
        steps = parse_steps(spec)
    except InvalidSpec as exc:
        result.status = _final_status(old, generation, now, "Failed", "InvalidSpec", exc.message)
        # What ran stays described, and a fixed spec goes on from it.
        for key in ("steps", "attempt", "retryToken", "progress", "tests"):
            if key in old:
                result.status[key] = old[key]
        result.status.setdefault("steps", [])
        result.events = _events(old, result.status)
        return result
    runs_by_name = {r["metadata"]["name"]: r for r in runs}
    attempt, attempts = _attempts(workflow, {s.name for s in steps if s.final})
    if attempt != int(old.get("attempt") or 1):
        result.events.append(
            ("Normal", "Retrying", f"attempt {attempt}: re-running the failed and skipped steps")
        )
    main = _topological([s for s in steps if not s.final])
    finals = [s for s in steps if s.final]
    slots: dict[str, list[_Slot]] = {}
    phases: dict[str, str] = {}
    before = {(str(e["name"]), e.get("item")): e for e in old.get("steps") or []}
    # failFast: once a step of this attempt failed, nothing more starts (a failure this pass
    # finds counts too, and stops the steps after it).
    stopped = bool(spec.get("failFast")) and any(
        entry.get("phase") == "Failed"
        and int(entry.get("attempt") or 1) == attempts.get(key, 1)
        and key[0] in {s.name for s in main}
        for key, entry in before.items()
    )
    for step in [*main, *finals]:
        if step.final and not all(phases[s.name] in ENDED for s in main):
            tries = attempts.get((step.name, None), 1)
            name = run_name(meta["name"], step.name, None, tries)
            slots[step.name] = [_Slot(step, None, name, None, attempt=tries)]
            phases[step.name] = "Pending"
            continue
        blocked = (
            [] if step.final else [n for n in step.needs if phases[n] in ("Failed", "Skipped")]
        )
        failed: _StepFailed | None = None
        known: list[Any] | None = None
        try:
            known = None if blocked else _items(step, slots)
        except _StepFailed as exc:
            failed = exc
        # A forEach step's items: as many as known now, else as many as the status had.
        earlier = sum(1 for name, item in before if name == step.name and item is not None)
        count = len(known) if known is not None else max(1, earlier)
        indexed = step.for_each is not None and (known is not None or earlier > 0)
        step_slots = []
        for index in range(count):
            item = index if indexed else None
            tries = attempts.get((step.name, item), 1)
            name = run_name(meta["name"], step.name, item, tries)
            slot = _Slot(step, item, name, runs_by_name.get(name), attempt=tries)
            entry = before.get((step.name, item))
            if slot.run is not None:
                slot.phase, slot.reason, slot.message = _run_phase(slot.run)
            elif refused and name in refused:
                slot.phase, slot.reason, slot.message = "Failed", "InvalidSpec", refused[name]
            elif (
                entry is not None
                and int(entry.get("attempt") or 1) == tries
                and (entry.get("runName") or entry.get("phase") in ENDED)
            ):
                slot.kept = entry
                slot.phase = str(entry.get("phase") or "Pending")
                slot.reason = str(entry.get("reason") or "")
                slot.message = str(entry.get("message") or "")
            step_slots.append(slot)
        slots[step.name] = step_slots
        if failed is not None:
            for slot in step_slots:
                slot.phase, slot.reason, slot.message = "Failed", failed.reason, failed.message
        elif blocked:
            why = f"step {blocked[0]} {phases[blocked[0]].lower()}"
            # A run waiting for a run that failed ends UpstreamFailed by itself; one waiting
            # for a run that never existed (refused, skipped) would wait for ever: deleted.
            hopeless = any(s.run is None for n in blocked for s in slots[n])
            _skip(step_slots, "UpstreamFailed", why, result.delete if hopeless else None)
        elif stopped and not step.final:
            why = "an earlier step failed and spec.failFast is true"
            _skip(step_slots, "FailFast", why, result.delete)
        elif known is not None and _ready(step, slots, phases):
            outcome = _outcome(steps, phases, slots) if step.final else None
            for slot, item in zip(step_slots, known, strict=True):
                if slot.exists or slot.phase in ENDED:
                    continue
                try:
                    body = _build_run(workflow, step, slot, item, slots, outcome)
                except _StepFailed as exc:
                    slot.phase, slot.reason, slot.message = "Failed", exc.reason, exc.message
                    continue
                result.create.append((body, step.name))
                slot.run = body
                slot.phase, slot.reason, slot.message = "Pending", "Pending", ""
        phases[step.name] = _aggregate(step_slots)
        if phases[step.name] == "Failed" and spec.get("failFast") and not step.final:
            stopped = True
    result.status = _status(workflow, steps, slots, now, attempt)
    result.events += _events(old, result.status)
    return result


def _attempts(
    workflow: Mapping[str, Any], finals: set[str]
) -> tuple[int, dict[tuple[str, int | None], int]]:
    """The workflow's attempt, and each step's (or item's), by (step, item).

    A new value of the retry annotation on a failed workflow starts the next attempt: every
    step or item that failed or was skipped, and every finally step, gets a new run; the
    steps that succeeded keep theirs, and so their outputs. A retry asked while the workflow
    still runs waits until it has ended."""
    old = workflow.get("status") or {}
    attempt = int(old.get("attempt") or 1)
    attempts = {
        (str(e["name"]), e.get("item")): int(e.get("attempt") or 1) for e in old.get("steps") or []
    }
    token = (workflow["metadata"].get("annotations") or {}).get(RETRY)
    if (
        token
        and token != old.get("retryToken")
        and old.get("phase") == "Failed"
        and attempt < MAX_ATTEMPTS
    ):
        attempt += 1
        for entry in old.get("steps") or []:
            if entry["phase"] in ("Failed", "Skipped") or entry["name"] in finals:
                attempts[(str(entry["name"]), entry.get("item"))] = attempt
    return attempt, attempts


def _skip(
    slots: Sequence[_Slot], reason: str, message: str, delete: list[tuple[str, str]] | None
) -> None:
    """Skip the slots that have not started. A run that only waits (no Job yet) is deleted
    when `delete` is given; otherwise it is left to end on its own (UpstreamFailed)."""
    for slot in slots:
        status = (slot.run or {}).get("status") or {}
        if slot.phase in ENDED or status.get("jobName"):
            continue  # started: it ends on its own (UpstreamFailed ends it Skipped)
        if slot.run is not None:
            if delete is None:
                continue
            delete.append((slot.name, message))
            slot.run = None  # gone: what waits for it is hopeless too
        slot.phase, slot.reason, slot.message = "Skipped", reason, message


def _ready(step: Step, slots: Mapping[str, list[_Slot]], phases: Mapping[str, str]) -> bool:
    """Whether the step's runs may be created: its gates succeeded, and every run it takes a
    value from exists (so it will end, and the run waiting for it with it). Values read here
    (a forEach step's list) need its runs as the watch shows them, not only the status's
    word. A finally step is ready once reached: every step has ended."""
    unseen = (s for n in step.needs for s in slots[n] if s.step.for_each and s.run is None)
    if any(s.phase not in ("Failed", "Skipped") for s in unseen):
        return False  # (an item that failed or was skipped without a run gives None)
    if step.final:
        return True
    if any(phases[g] != "Succeeded" for g in step.gates):
        return False
    return all(all(s.exists for s in slots[n]) for n in step.needs)


def _topological(steps: Sequence[Step]) -> list[Step]:
    by_name = {s.name: s for s in steps}
    done: dict[str, Step] = {}

    def visit(step: Step) -> None:
        if step.name in done:
            return
        for need in step.needs:
            visit(by_name[need])
        done[step.name] = step

    for step in steps:
        visit(step)
    return list(done.values())


def _small(results: Mapping[str, Any]) -> dict[str, Any]:
    """The short results, at most SMALL_RESULTS_TOTAL characters of them in all."""
    kept: dict[str, Any] = {}
    total = 0
    for key, value in results.items():
        size = len(json.dumps(value, ensure_ascii=False, default=str)) + len(key)
        if size <= SMALL_RESULT and total + size <= SMALL_RESULTS_TOTAL:
            kept[key] = value
            total += size
    return kept


def _entry(slot: _Slot) -> dict[str, Any]:
    if slot.run is None and slot.kept is not None and slot.phase == slot.kept.get("phase"):
        return dict(slot.kept)
    status = (slot.run or {}).get("status") or {}
    entry: dict[str, Any] = {"name": slot.step.name, "phase": slot.phase}
    if slot.item is not None:
        entry["item"] = slot.item
    if slot.reason:
        entry["reason"] = slot.reason
    if slot.message:
        entry["message"] = slot.message
    if slot.run is not None:
        entry["runName"] = slot.name
    for key in ("outputUrl", "duration"):
        if status.get(key):
            entry[key] = status[key]
    if status.get("results") and slot.item is None:
        # (Not per item: 200 items' results would outgrow the status; each run has them.)
        entry["results"] = _small(status["results"])
    if slot.step.test:
        entry["test"] = True
    if slot.attempt > 1:
        entry["attempt"] = slot.attempt
    return entry


def _status(
    workflow: Mapping[str, Any],
    steps: Sequence[Step],
    slots: Mapping[str, list[_Slot]],
    now: str,
    attempt: int,
) -> dict[str, Any]:
    old: Mapping[str, Any] = workflow.get("status") or {}
    generation = int(workflow["metadata"].get("generation", 1))
    every = [slot for step in steps for slot in slots[step.name]]
    ended = sum(1 for s in every if s.phase in ENDED)
    tests = [s for s in every if s.step.test]
    failed = [s for s in every if s.phase == "Failed"]
    if ended < len(every):
        phase, reason = "Running", "Running"
        message = f"{ended} of {len(every)} runs ended"
        if failed:
            message += f"; {_failure(failed[0])}"
        status = _final_status(old, generation, now, phase, reason, message)
    elif failed:
        first = failed[0]
        reason = "TestFailed" if first.step.test else "StepFailed"
        status = _final_status(old, generation, now, "Failed", reason, _failure(first))
    elif any(s.phase == "Skipped" for s in every):
        skipped = next(s for s in every if s.phase == "Skipped")
        message = f"step {skipped.step.name} was skipped: {skipped.message}"
        status = _final_status(old, generation, now, "Failed", "StepSkipped", message)
    else:
        status = _final_status(
            old, generation, now, "Succeeded", "Succeeded", f"{len(every)} runs succeeded"
        )
    status["progress"] = f"{ended}/{len(every)}"
    status["attempt"] = attempt
    if attempt > int(old.get("attempt") or 1):
        status["retryToken"] = (workflow["metadata"].get("annotations") or {}).get(RETRY)
    elif old.get("retryToken"):
        status["retryToken"] = old["retryToken"]
    status["steps"] = [_entry(s) for s in every]
    if tests:
        status["tests"] = {
            "total": len(tests),
            "passed": sum(1 for s in tests if s.phase == "Succeeded"),
            "failed": sum(1 for s in tests if s.phase == "Failed"),
        }
    return status


def _failure(slot: _Slot) -> str:
    what = "test" if slot.step.test else "step"
    item = f" item {slot.item}" if slot.item is not None else ""
    return f"{what} {slot.step.name}{item} failed ({slot.reason}): {slot.message}"


def _final_status(
    old: Mapping[str, Any], generation: int, now: str, phase: str, reason: str, message: str
) -> dict[str, Any]:
    previous = old.get("conditions") or []
    status: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "startTime": old.get("startTime") or now,
    }
    if phase in TERMINAL:
        status["completionTime"] = old.get("completionTime") or now
        start, end = parse_rfc3339(status["startTime"]), parse_rfc3339(status["completionTime"])
        if start and end:
            status["duration"] = format_duration((end - start).total_seconds())
    done = True if phase == "Succeeded" else (False if phase == "Failed" else None)
    status["conditions"] = [
        condition("Succeeded", done, reason, message, generation, previous, now),
        condition("Failed", phase == "Failed", reason, message, generation, previous, now),
    ]
    return status


def _events(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Events for what changed: a step or test that failed, the workflow's end."""
    events: list[tuple[str, str, str]] = []
    before = {(e["name"], e.get("item")): e for e in old.get("steps") or []}
    for entry in new.get("steps") or []:
        was = before.get((entry["name"], entry.get("item")), {})
        if entry["phase"] == "Failed" and was.get("phase") != "Failed":
            kind = "TestFailed" if entry.get("test") else "StepFailed"
            item = f" item {entry['item']}" if "item" in entry else ""
            events.append(
                ("Warning", kind, f"{entry['name']}{item} ({entry.get('reason')}): "
                 f"{entry.get('message', '')}")
            )  # fmt: skip
    if new.get("phase") in TERMINAL and old.get("phase") != new.get("phase"):
        kind = "Normal" if new["phase"] == "Succeeded" else "Warning"
        events.append((kind, str(new["phase"]), str(new.get("message", ""))))
    return events
