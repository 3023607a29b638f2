"""The NotebookWorkflow CRD is generated (hack/gen_workflow_crd.py) from the NotebookRun CRD: a
step's runTemplate.spec is a run's spec, with messages naming the step's fields and with the
rules that exceed the API server's CEL budget at 100 steps left to the run's own CRD. The API
server's side is in tests/e2e/test_crd_validation.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubemill.operator.schema_rules import schema_at
from tests import hack_scripts

CRDS = Path(__file__).resolve().parents[2] / "crds"

gen = hack_scripts.load("gen_workflow_crd")


def _schema(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / name).read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _step(field: str) -> dict[str, Any]:
    spec = _schema("kubemill.dev_notebookworkflows.yaml")["properties"]["spec"]
    return dict(spec["properties"][field]["items"])


def _rules(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found += node.get("x-kubernetes-validations", [])
        for value in node.values():
            found += _rules(value)
    elif isinstance(node, list):
        for value in node:
            found += _rules(value)
    return found


def test_the_workflow_crd_is_generated_from_its_sources() -> None:
    """Run `make crds` after changing the NotebookRun CRD or the generator."""
    assert gen.OUTPUT.read_text() == gen.render(), "the workflow CRD is stale: run make crds"


@pytest.mark.parametrize("field", ["steps", "finally"])
def test_step_templates_name_their_own_fields(field: str) -> None:
    spec = _step(field)["properties"]["runTemplate"]["properties"]["spec"]
    timeout = spec["properties"]["timeout"]["x-kubernetes-validations"]
    assert all(
        r["message"].startswith(f"spec.{field}[].runTemplate.spec.timeout ") for r in timeout
    )
    for rule in _rules(spec):
        text = rule.get("message", "") + rule.get("messageExpression", "")
        # A run's own field (spec.timeout) would send the user to the wrong place.
        assert not re.search(r"(?<![\w.])spec\.(?!steps|finally)", text), text


@pytest.mark.parametrize("field", ["steps", "finally"])
def test_only_the_listed_fields_lose_the_runs_rules(field: str) -> None:
    """Every other rule of a run's spec holds in each step (the immutability rule aside)."""
    run = _schema("kubemill.dev_notebookruns.yaml")["properties"]["spec"]
    step = _step(field)["properties"]["runTemplate"]["properties"]["spec"]
    for path in gen.UNCHECKED_AT_APPLY:
        assert _rules(schema_at(run, path)), f"{path} has no rules to leave out"
        assert not _rules(schema_at(step, path)), path
    kept = sum(len(_rules(schema_at(run, p))) for p in gen.UNCHECKED_AT_APPLY)
    # The run's parametersFrom[] rule is replaced by the step's own (four sources).
    assert len(_rules(step)) >= len(_rules(run)) - kept - 1 - 1


def test_a_step_takes_values_from_steps_and_only_a_finally_step_the_outcome() -> None:
    for field, outcome_allowed in (("steps", False), ("finally", True)):
        source = schema_at(
            _step(field)["properties"]["runTemplate"]["properties"]["spec"], "parametersFrom[]"
        )
        assert {"secretKeyRef", "notebookRunRef", "stepRef", "workflowOutcome"} <= set(
            source["properties"]
        )
        refuses = any(r["rule"] == "!has(self.workflowOutcome)" for r in _rules(source))
        assert refuses is not outcome_allowed, field
    assert "dependsOn" not in _step("finally")["properties"]
    assert "forEach" not in _step("finally")["properties"]


def test_every_field_is_documented() -> None:
    """kubectl explain shows a description for every field of spec and status."""
    schema = _schema("kubemill.dev_notebookworkflows.yaml")

    def walk(node: dict[str, Any], path: str, item: bool = False) -> None:
        # kubectl explain shows an array's description for its items.
        assert item or node.get("description"), path
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]", item=True)

    for part in ("spec", "status"):
        walk(schema["properties"][part], part)


def test_run_names_fit_for_the_longest_names() -> None:
    """The name rule's arithmetic: a run name <workflow>-<step>-<item>-r<attempt> is 63 at
    most when the rule just holds."""
    longest_step = "s" * gen.MAX_STEP_NAME
    workflow = "w" * (gen.NAME_LIMIT - 1 - gen.MAX_STEP_NAME - gen.ITEM_SUFFIX - gen.ATTEMPT_SUFFIX)
    last_item, last_attempt = gen.MAX_FOREACH_ITEMS - 1, 11
    assert len(f"{workflow}-{longest_step}-{last_item}-r{last_attempt}") == gen.NAME_LIMIT
