"""Writes the shared rules into crds/kubemill.dev_notebookruns.yaml (`make crds`).

The NotebookRun CRD is written by hand (descriptions, layout), but the rules of the fields the
operator copies into a Job come from kubemill.operator.schema_rules.run_spec_rules(), so that
one definition serves this CRD, the schedule CRD and the tests. This rewrites the YAML block of
each top-level spec property those rules touch, in the file's own style, and leaves every
other line as it is; running it twice changes nothing. A unit test fails when the CRD lacks a
rule.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from kubemill.operator.schema_rules import run_spec_rules, schema_at

ROOT = Path(__file__).resolve().parents[1]

RUN_CRD = ROOT / "crds" / "kubemill.dev_notebookruns.yaml"
#: Where the spec's properties are, by key, from the top of the file.
SPEC_PROPERTIES = ["openAPIV3Schema", "properties", "spec", "properties"]


class _Dumper(yaml.SafeDumper):
    """The hand-written file's style: folded long text, short lists in flow style."""


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    # CEL rules stay on one line (quoted as needed); long prose is folded.
    prose = len(text) > 60 and "self" not in text and not text.startswith(("!", "'", '"'))
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=">" if prose else None)


def _list(dumper: yaml.SafeDumper, items: list[Any]) -> yaml.Node:
    flow = bool(items) and all(isinstance(i, str) and len(i) < 30 for i in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flow)


_Dumper.add_representer(str, _string)
_Dumper.add_representer(list, _list)


def _block(lines: list[str], keys: list[str]) -> tuple[int, int, int]:
    """Start and end line, and indentation, of the nested key path `keys`."""
    start, indent, position = -1, -1, 0
    for key in keys:
        for number in range(position, len(lines)):
            found = re.match(r"^( *)" + re.escape(key) + r":( |$)", lines[number])
            if found and len(found.group(1)) > indent:
                start, indent, position = number, len(found.group(1)), number + 1
                break
        else:
            raise KeyError(".".join(keys))
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    return start, end, indent


def render(text: str) -> str:
    """`text` (the CRD) with every run_spec_rules() value in place."""
    crd = yaml.safe_load(text)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = run_spec_rules()
    for path, values in rules.items():
        node = schema_at(spec, path)
        node.update(copy.deepcopy({k: v for k, v in values.items() if v is not None}))
        for key in [k for k, v in values.items() if v is None]:
            node.pop(key, None)
    lines = text.splitlines()
    for top in sorted({path.split(".")[0].removesuffix("[]") for path in rules}):
        start, end, indent = _block(lines, [*SPEC_PROPERTIES, top])
        dumped = yaml.dump(
            {top: spec["properties"][top]},
            Dumper=_Dumper,
            sort_keys=False,
            width=100 - indent,
            allow_unicode=True,
            indent=2,
        )
        lines[start:end] = [" " * indent + line if line else line for line in dumped.splitlines()]
    return "\n".join(lines) + "\n"


def main() -> None:
    RUN_CRD.write_text(render(RUN_CRD.read_text()))
    print(f"wrote {RUN_CRD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
