"""What `kubemill workflow` shows: the step table, the summary, JUnit XML and the graph.

Pure functions of the workflow and its runs (the dicts a cluster would hold), so each is a
table test; the JUnit file is written with xml.etree alone, whose escaping is the standard
library's, not ours.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from kubemill.operator.times import parse_rfc3339
from kubemill.operator.workflows import parse_steps

__all__ = ["graph", "junit_xml", "redraw", "step_label", "summary_lines", "table_lines"]

#: Characters of a traceback's end quoted in a JUnit failure: the lines that say what failed,
#: not the whole stack a CI page would fold away anyway.
TRACEBACK_TAIL = 1500
_COLUMNS = ("STEP", "PHASE", "REASON", "DURATION", "RUN")


def step_label(entry: Mapping[str, Any]) -> str:
    """`step`, or `step[item]` for one item of a forEach step."""
    item = entry.get("item")
    return str(entry["name"]) if item is None else f"{entry['name']}[{item}]"


def _entries(workflow: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((workflow.get("status") or {}).get("steps") or [])


def table_lines(workflow: Mapping[str, Any]) -> list[str]:
    """The step table: one line per step run (and forEach item), aligned."""
    rows = [
        (
            step_label(e),
            str(e.get("phase", "")),
            str(e.get("reason", "")) if e.get("reason") != e.get("phase") else "",
            str(e.get("duration", "")),
            str(e.get("runName", "")),
        )
        for e in _entries(workflow)
    ]
    widths = [max(len(row[i]) for row in [_COLUMNS, *rows]) for i in range(len(_COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [_COLUMNS, *rows]
    ]


def redraw(lines: Sequence[str], drawn: int) -> str:
    """The text that replaces the `drawn` lines last written to a terminal with `lines`: the
    cursor back to the first of them (CSI n F), the rest of the screen cleared (CSI J)."""
    back = f"\x1b[{drawn}F\x1b[J" if drawn else ""
    return back + "".join(f"{line}\n" for line in lines)


def summary_lines(workflow: Mapping[str, Any], output: str) -> list[str]:
    """What is said once the workflow has ended."""
    status = workflow.get("status") or {}
    lines = [
        f"workflow {workflow['metadata']['name']} {status.get('phase')}: {status.get('message')}"
    ]
    tests = status.get("tests")
    if tests:
        lines.append(f"tests: {tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed")
    lines.append(f"outputs: {output}")
    return lines


def _seconds(status: Mapping[str, Any]) -> float:
    start, end = parse_rfc3339(status.get("startTime")), parse_rfc3339(status.get("completionTime"))
    return max(0.0, (end - start).total_seconds()) if start and end else 0.0


def _failure_text(status: Mapping[str, Any]) -> str:
    failure = status.get("failure") or {}
    lines = []
    if failure.get("cell") is not None:
        count = failure.get("executionCount")
        shown = f" (In [{count}])" if count is not None else ""
        lines.append(f"cell {failure['cell']}{shown}")
    if failure.get("ename"):
        lines.append(f"{failure['ename']}: {failure.get('evalue', '')}")
    elif failure.get("message"):
        lines.append(str(failure["message"]))
    traceback = str(failure.get("traceback") or "")
    if traceback:
        lines += ["", traceback[-TRACEBACK_TAIL:]]
    return "\n".join(lines) or str(status.get("message") or "")


def _parameters(run: Mapping[str, Any]) -> dict[str, str]:
    spec = run.get("spec") or {}
    shown = {name: repr(value) for name, value in (spec.get("parameters") or {}).items()}
    for item in spec.get("parametersFrom") or []:
        ref = item.get("notebookRunRef")
        if ref is not None:
            what = ref.get("result") or f"output {ref.get('output')}"
            shown[str(item["name"])] = f"from run {ref.get('name')}: {what}"
        elif item.get("secretKeyRef") is not None:
            shown[str(item["name"])] = "(secret)"
    return shown


def junit_xml(
    workflow: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], hostname: str = "localhost"
) -> bytes:
    """The workflow as one JUnit test suite: a testcase per step run (and forEach item), a
    failure for each that failed, skipped for each skipped; what CI test reports read.

    Shaped by the schema Jenkins reads (its junit/xunit plugins, pytest's xunit2 family;
    GitLab reads the same elements): properties belong to the suite, not to a testcase, so each
    run's parameters and duration are suite properties named after its testcase
    (`by-region[1].parameter.region`); a testcase holds its failure or skipped and, in
    system-out, its output notebook. The suite also carries what the stricter Ant schema
    (windyroad's JUnit.xsd) requires of it: hostname, timestamp, id and package."""
    name = str(workflow["metadata"]["name"])
    status = workflow.get("status") or {}
    suites = ET.Element("testsuites", name=name)
    suite = ET.SubElement(suites, "testsuite", name=name)
    properties = ET.SubElement(suite, "properties")
    for key in ("phase", "attempt"):
        if status.get(key) is not None:
            ET.SubElement(properties, "property", name=f"workflow.{key}", value=str(status[key]))
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    total = 0.0
    for entry in _entries(workflow):
        run = runs.get(str(entry.get("runName"))) or {}
        run_status = run.get("status") or {}
        seconds = _seconds(run_status)
        total += seconds
        label = step_label(entry)
        case = ET.SubElement(suite, "testcase", name=label, classname=name, time=f"{seconds:.3f}")
        for key, value in _parameters(run).items():
            ET.SubElement(properties, "property", name=f"{label}.parameter.{key}", value=value)
        if entry.get("duration"):
            duration = str(entry["duration"])
            ET.SubElement(properties, "property", name=f"{label}.duration", value=duration)
        counts["tests"] += 1
        phase = entry.get("phase")
        message = f"{entry.get('reason', phase)}: {entry.get('message', '')}"
        if phase == "Failed":
            counts["failures"] += 1
            failure = ET.SubElement(case, "failure", message=message, type=str(entry.get("reason")))
            failure.text = _failure_text(run_status)
        elif phase == "Skipped":
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=message)
        if entry.get("outputUrl"):
            ET.SubElement(case, "system-out").text = str(entry["outputUrl"])
    ET.SubElement(suite, "system-out")
    ET.SubElement(suite, "system-err")
    attributes = {
        **{key: str(value) for key, value in counts.items()},
        "errors": "0",
        "time": f"{_seconds(status) or total:.3f}",
    }
    # The schemas' timestamp is a local date-time without a zone; the status's is UTC.
    timestamp = str(status.get("startTime") or "1970-01-01T00:00:00Z").rstrip("Z")
    suite.attrib.update(
        {**attributes, "timestamp": timestamp, "hostname": hostname, "id": "0", "package": name}
    )
    suites.attrib.update({k: attributes[k] for k in ("tests", "failures", "errors", "time")})
    for element in suites.iter():
        element.text = _xml_text(element.text)
        element.attrib.update({k: _xml_text(v) or "" for k, v in element.attrib.items()})
    ET.indent(suites)
    text: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return text + b"\n"


#: Terminal escape sequences (colours, cursor, hyperlinks) in tracebacks and messages.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|.)")
#: What XML 1.0 forbids in a document, which ElementTree would write as is.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str | None) -> str | None:
    """`text` without terminal escapes and the characters XML 1.0 forbids (a kernel's
    traceback has both), so every CI system can parse the report."""
    return None if text is None else _NOT_XML.sub("", _ESCAPES.sub("", text))


def _edges(spec: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(from, to, label) for every dependsOn, stepRef and forEach.fromStep in the spec."""
    edges: list[tuple[str, str, str]] = []
    for raw in [*(spec.get("steps") or []), *(spec.get("finally") or [])]:
        name = str(raw["name"])
        for need in raw.get("dependsOn") or []:
            edges.append((str(need), name, "dependsOn"))
        loop = raw.get("forEach") or {}
        if loop.get("fromStep"):
            source = loop["fromStep"]
            edges.append((str(source["name"]), name, f"forEach {source.get('result')}"))
        template_spec = (raw.get("runTemplate") or {}).get("spec") or {}
        for item in template_spec.get("parametersFrom") or []:
            ref = item.get("stepRef")
            if ref is not None:
                what = ref.get("result") or f"output {ref.get('output')}"
                edges.append((str(ref["name"]), name, f"{item.get('name')} = {what}"))
    return edges


def _loop(raw: Mapping[str, Any]) -> str:
    loop = raw.get("forEach")
    if not loop:
        return ""
    if loop.get("items") is not None:
        return f"forEach {loop.get('parameter')} in {len(loop['items'])} items"
    source = loop["fromStep"]
    return f"forEach {loop.get('parameter')} in {source['name']}.{source['result']}"


def graph(workflow: Mapping[str, Any], form: str = "text") -> str:
    """The workflow's steps and what each needs, as text, Graphviz dot or Mermaid; finally
    steps come after every other step. InvalidSpec for a workflow the operator would refuse."""
    spec = workflow.get("spec") or {}
    steps = parse_steps(spec)  # in order: every step after what it needs, finally last
    raw = {str(s["name"]): s for s in [*(spec.get("steps") or []), *(spec.get("finally") or [])]}
    order = _order([s.name for s in steps if not s.final], {s.name: s.needs for s in steps})
    finals = [s.name for s in steps if s.final]
    tests = {s.name for s in steps if s.test}
    edges = _edges(spec)
    name = str(workflow["metadata"]["name"])

    def note(step: str) -> str:
        parts = [p for p in (_loop(raw[step]), "test" if step in tests else "") if p]
        return f" ({', '.join(parts)})" if parts else ""

    if form == "dot":
        lines = [f'digraph "{name}" {{', "  rankdir=LR;"]
        for step in [*order, *finals]:
            shape = "box3d" if raw[step].get("forEach") else ("note" if step in tests else "box")
            style = ", style=dashed" if step in finals else ""
            lines.append(f'  "{step}" [shape={shape}, label="{step}{note(step)}"{style}];')
        for source, target, label in edges:
            lines.append(f'  "{source}" -> "{target}" [label="{label}"];')
        lines += _final_edges(
            order, finals, edges, lambda a, b: f'  "{a}" -> "{b}" [style=dashed];'
        )
        return "\n".join([*lines, "}"]) + "\n"
    if form == "mermaid":
        ids = {step: f"s{i}" for i, step in enumerate([*order, *finals])}
        lines = ["flowchart LR"]
        for step in [*order, *finals]:
            text = f"{step}{note(step)}".replace('"', "'")
            lines.append(
                f'  {ids[step]}[["{text}"]]'
                if raw[step].get("forEach")
                else f'  {ids[step]}["{text}"]'
            )
        for source, target, label in edges:
            lines.append(f'  {ids[source]} -->|"{label}"| {ids[target]}')
        lines += _final_edges(order, finals, edges, lambda a, b: f"  {ids[a]} -.-> {ids[b]}")
        return "\n".join(lines) + "\n"
    lines = [f"workflow {name}"]
    for step in order:
        needs = [f"{s} ({label})" for s, t, label in edges if t == step]
        lines.append(f"  {step}{note(step)}" + (f" <- {', '.join(needs)}" if needs else ""))
    if finals:
        lines.append("  finally (after every step, whatever happened):")
        for step in finals:
            needs = [f"{s} ({label})" for s, t, label in edges if t == step]
            lines.append(f"    {step}" + (f" <- {', '.join(needs)}" if needs else ""))
    return "\n".join(lines) + "\n"


def _order(names: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[str]:
    done: dict[str, None] = {}

    def visit(step: str) -> None:
        if step not in done:
            for need in needs.get(step, ()):
                visit(need)
            done[step] = None

    for step in names:
        visit(step)
    return list(done)


def _final_edges(
    order: Sequence[str], finals: Sequence[str], edges: Sequence[tuple[str, str, str]], draw: Any
) -> list[str]:
    """A dashed edge from every step nothing else waits for to each finally step."""
    waited = {source for source, target, _ in edges if target in order}
    last = [step for step in order if step not in waited]
    return [draw(step, final) for final in finals for step in last]
