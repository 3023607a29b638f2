"""Runs that take values from other runs: `spec.parametersFrom[].notebookRunRef`.

A pure function of the run and of what the operator knows of the runs it names: whether the
run must wait (a referenced run has not succeeded, or does not exist yet, since GitOps tools
apply in any order), must fail (a referenced run failed, a result it needs was never recorded,
the references make a cycle), or can start, with the values it takes.

Values travel two ways. A result that fits in the upstream run's status, and the URLs of its
output notebook or folder, are inlined into the run's parameters. A result the status had to
leave out (its `resultsTruncated`) is fetched by the runner itself from the upstream's
`results.json`, so a value of any size passes, and the operator never reads S3.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidSpec

__all__ = [
    "MAX_CHAIN",
    "Reference",
    "Resolution",
    "referenced_runs",
    "references",
    "resolve",
]

#: How far the cycle search follows references; a longer chain is not a cycle through this run.
MAX_CHAIN = 1000
#: Characters of an upstream run's message quoted in UpstreamFailed.
_QUOTED = 300
#: The upstream run's output notebook inside its run folder (runner/run.py writes it there).
_NOTEBOOK = "output.ipynb"
_RESULTS = "results.json"

Lookup = Callable[[str], Mapping[str, Any] | None]


@dataclass(frozen=True)
class Reference:
    #: The parameter of this run that receives the value.
    parameter: str
    #: The referenced NotebookRun, in the same namespace.
    run: str
    #: The recorded result to take, or None for an output URL.
    result: str | None = None
    #: "notebook" (the output notebook's URL) or "folder" (the run folder's URL).
    output: str | None = None


@dataclass(frozen=True)
class Resolution:
    """What the references of a run allow now; `ready` unless waiting or failed."""

    #: Why the run waits, naming each run it waits for; None when it need not wait.
    waiting: str | None = None
    #: (reason, message) of a run that can never start; None when it can.
    failed: tuple[str, str] | None = None
    #: Parameter values the operator passes in the run's parameters (small results, URLs).
    inline: Mapping[str, Any] = field(default_factory=dict)
    #: The runner's --upstream-file content (lineage, and results to fetch); None without
    #: references.
    upstream: Mapping[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return self.waiting is None and self.failed is None


def references(spec: Mapping[str, Any]) -> list[Reference]:
    """The run's references, in spec order; InvalidSpec for one the CRD should have refused
    (a CRD older than the operator)."""
    found: list[Reference] = []
    for index, item in enumerate(spec.get("parametersFrom") or []):
        ref = item.get("notebookRunRef")
        if ref is None:
            continue
        where = f"spec.parametersFrom[{index}] ({item.get('name')!r})"
        if item.get("secretKeyRef") is not None:
            raise InvalidSpec(f"{where} sets both secretKeyRef and notebookRunRef: keep one")
        if not ref.get("name"):
            raise InvalidSpec(f"{where}: notebookRunRef needs the name of a NotebookRun")
        result, output = ref.get("result"), ref.get("output")
        if (result is None) == (output is None):
            raise InvalidSpec(
                f"{where}: notebookRunRef needs exactly one of result (a recorded result's "
                "name) and output (notebook or folder)"
            )
        if output is not None and output not in ("notebook", "folder"):
            raise InvalidSpec(f"{where}: notebookRunRef.output must be notebook or folder")
        found.append(Reference(str(item["name"]), str(ref["name"]), result, output))
    return found


def referenced_runs(spec: Mapping[str, Any]) -> list[str]:
    """The names of the runs `spec` takes values from, each once, in spec order; none for a
    spec whose references are malformed (its own reconcile reports that)."""
    try:
        return list(dict.fromkeys(r.run for r in references(spec)))
    except InvalidSpec:
        return []


def _cycle(name: str, refs: Sequence[str], lookup: Lookup) -> list[str] | None:
    """The shortest chain of references from the run `name` back to itself, if any."""
    paths: list[list[str]] = [[name, r] for r in refs]
    seen: set[str] = set()
    while paths and len(seen) < MAX_CHAIN:
        path = paths.pop(0)
        if path[-1] == name:
            return path
        if path[-1] in seen:
            continue
        seen.add(path[-1])
        upstream = lookup(path[-1])
        ended = ((upstream or {}).get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if upstream is not None and not ended:
            # (A run that ended took its values long ago: no wait can go round through it.)
            paths += [[*path, r] for r in referenced_runs(upstream.get("spec") or {})]
    return None


def _folder(output_url: Any) -> str | None:
    if isinstance(output_url, str) and output_url.endswith("/" + _NOTEBOOK):
        return output_url[: -len(_NOTEBOOK)]
    return None


def _truncated(status: Mapping[str, Any], result: str) -> bool:
    left_out = status.get("resultsTruncated")
    return left_out is True or (isinstance(left_out, list) and result in left_out)


def _unusable(ref: Reference, status: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a succeeded upstream cannot give what `ref` asks, as (reason, message)."""
    results = status.get("results") or {}
    folder = _folder(status.get("outputUrl"))
    if ref.result is not None:
        if ref.result in results or (_truncated(status, ref.result) and folder):
            return None
        names = ", ".join(sorted(results)[:10]) or "none"
        return (
            "MissingResult",
            f"run {ref.run} recorded no result {ref.result!r} (it recorded: {names}); record "
            f"it with kubemill.record({ref.result!r}, value) or reference one it has",
        )
    if ref.output == "notebook" and status.get("outputUrl"):
        return None
    if ref.output == "folder" and folder:
        return None
    return (
        "MissingOutput",
        f"run {ref.run} has no output {ref.output} (its output: "
        f"{status.get('outputUrl') or 'none'}); a run folder exists only when the run's "
        "output is a folder",
    )


def resolve(run: Mapping[str, Any], lookup: Lookup) -> Resolution:
    """What `run`'s references allow now; `lookup(name)` is the run of that name in the same
    namespace as last seen, or None."""
    meta = run["metadata"]
    spec = run.get("spec") or {}
    refs = references(spec)
    if not refs:
        return Resolution()
    given = set(spec.get("parameters") or {})
    for ref in refs:
        if ref.parameter in given:
            raise InvalidSpec(
                f"parameter {ref.parameter!r} is set by spec.parameters and by "
                "spec.parametersFrom: keep one"
            )
    names = list(dict.fromkeys(r.run for r in refs))
    cycle = _cycle(meta["name"], names, lookup)
    if cycle is not None:
        return Resolution(
            failed=(
                "InvalidSpec",
                "spec.parametersFrom makes a cycle: "
                + " → ".join(cycle)
                + "; a run cannot wait for a run that waits for it",
            )
        )
    waits: list[str] = []
    for name in names:
        upstream = lookup(name)
        if upstream is None:
            waits.append(f"run {name} (it does not exist yet)")
            continue
        status = upstream.get("status") or {}
        phase = status.get("phase") or "Pending"
        if phase == "Failed":
            message = str(status.get("message") or "")[:_QUOTED]
            return Resolution(
                failed=(
                    "UpstreamFailed",
                    f"run {name} failed ({status.get('reason', 'Failed')}): {message}",
                )
            )
        if phase != "Succeeded":
            waits.append(f"run {name} ({phase})")
    if waits:
        return Resolution(waiting="waiting for " + ", ".join(waits))
    return _values(meta.get("namespace", ""), refs, names, lookup)


def _values(
    namespace: str, refs: Sequence[Reference], names: Sequence[str], lookup: Lookup
) -> Resolution:
    inline: dict[str, Any] = {}
    fetch: list[dict[str, Any]] = []
    for ref in refs:
        upstream = lookup(ref.run) or {}
        status = upstream.get("status") or {}
        problem = _unusable(ref, status)
        if problem is not None:
            return Resolution(failed=problem)
        results = status.get("results") or {}
        if ref.result is not None and ref.result in results:
            inline[ref.parameter] = results[ref.result]
        elif ref.result is not None:
            url = f"{_folder(status.get('outputUrl'))}{_RESULTS}"
            fetch.append(
                {"parameter": ref.parameter, "run": ref.run, "result": ref.result, "url": url}
            )
        elif ref.output == "notebook":
            inline[ref.parameter] = status["outputUrl"]
        else:
            inline[ref.parameter] = _folder(status["outputUrl"])
    lineage = []
    for name in names:
        upstream = lookup(name) or {}
        lineage.append(
            {
                "name": name,
                "namespace": namespace,
                "uid": (upstream.get("metadata") or {}).get("uid", ""),
                "outputUrl": (upstream.get("status") or {}).get("outputUrl", ""),
                "parameters": [r.parameter for r in refs if r.run == name],
            }
        )
    return Resolution(inline=inline, upstream={"upstream": lineage, "results": fetch})
