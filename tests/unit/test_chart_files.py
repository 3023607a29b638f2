"""The Helm chart's copies of crds/ are the files themselves (hack/sync_chart_crds.py, run by
`make crds`). The chart's rendering is compared with the kustomize manifests in
tests/integration/test_helm_chart.py; its versions are checked by hack/release.py."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import yaml

from kubemill.runner.rules import DURATION_MAX_LENGTH, DURATION_PATTERN, MIN_DURATION_SECONDS
from tests import hack_scripts

sync = hack_scripts.load("sync_chart_crds")


def test_the_chart_carries_crds_as_they_are() -> None:
    sources = {p.name: p.read_bytes() for p in sync.sources()}
    copies = {p.name: p.read_bytes() for p in sync.TARGET.glob("*")}
    assert len(sources) == 6
    stale = sorted(n for n in sources.keys() | copies.keys() if sources.get(n) != copies.get(n))
    assert stale == [], f"the chart's copies of crds/ are stale ({stale}): run make crds"


CHART = sync.TARGET.parents[1]


def _schema_paths(schema: dict[str, Any], root: dict[str, Any], path: str = "") -> set[str]:
    """Every value the schema describes, as dotted paths, each checked to carry a description."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].removeprefix("#/definitions/")]
    paths = set()
    for name, sub in schema.get("properties", {}).items():
        here = f"{path}{name}"
        described = sub.get("description") or root["definitions"].get(
            sub.get("$ref", "").removeprefix("#/definitions/"), {}
        ).get("description")
        assert described, f"{here} has no description in values.schema.json"
        paths.add(here)
        paths |= _schema_paths(sub, root, f"{here}.")
    return paths


def _value_paths(values: dict[str, Any], path: str = "") -> set[str]:
    """Every value of values.yaml as dotted paths, down to the maps users fill in freely."""
    paths = set()
    for name, value in values.items():
        paths.add(f"{path}{name}")
        if isinstance(value, dict) and value and path + name != "operator.resources":
            paths |= _value_paths(value, f"{path}{name}.")
    return paths


def test_the_values_schema_describes_every_value_and_no_other() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    described = _schema_paths(schema, schema) - {"global"}
    # The schema looks into resources (requests, limits), which values.yaml fills in.
    described -= {"operator.resources.requests", "operator.resources.limits"}
    assert described == _value_paths(values)
    # The defaults pass their own schema (helm checks them with the user's values, at install).
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(values)]
    assert errors == []


def test_the_start_timeout_is_checked_as_the_operator_reads_it() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    timeout = schema["properties"]["settings"]["properties"]["startTimeout"]
    # "0" (no limit) or the operator's duration syntax, no longer than it allows.
    assert timeout["pattern"] == f"^(0|{DURATION_PATTERN.removeprefix('^').removesuffix('$')})$"
    assert timeout["maxLength"] == DURATION_MAX_LENGTH
    # The template checks MIN_DURATION_SECONDS (JSON Schema cannot add up the parts).
    assert MIN_DURATION_SECONDS == 1
    assert "is shorter than 1s" in (CHART / "templates" / "_helpers.tpl").read_text()
