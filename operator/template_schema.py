"""Schema pieces the generated CRDs share: a NotebookRun template inside another kind.

A NotebookSchedule's runTemplate and each step of a NotebookWorkflow must accept exactly what a
NotebookRun's spec accepts, so hack/gen_schedule_crd.py and hack/gen_workflow_crd.py copy the run
CRD's spec schema through these functions instead of writing it again; only the field names in
the messages change, so that each message names the field the user has to edit. Pure functions
over the run CRD's schema (the generators read the file), unit-tested through the generated
CRDs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

import yaml

from .schema_rules import LABEL_VALUES, annotations_rules, labels_rules

__all__ = [
    "conditions_schema",
    "crd_document",
    "drop_rules",
    "openapi_schema",
    "render_crd",
    "retarget_messages",
    "string_schema",
    "template_metadata_schema",
    "template_spec_schema",
    "time_schema",
]

#: `spec.` where a run's message names one of its own fields (not `x.spec.` or `[].spec.`).
_RUN_FIELD = re.compile(r"(?<![\w.])spec\.")


def string_schema(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def time_schema(description: str) -> dict[str, Any]:
    return string_schema(description, format="date-time")


def openapi_schema(crd: Mapping[str, Any]) -> dict[str, Any]:
    """The openAPIV3Schema of a single-version CRD."""
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def retarget_messages(node: Any, field: str) -> None:
    """Rename `spec.x` to `<field>.x` in every rule message under `node`, in place: in a
    template the run's `spec.timeout` is, say, `spec.runTemplate.spec.timeout`."""
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            for key in ("message", "messageExpression"):
                if key in rule:
                    rule[key] = _RUN_FIELD.sub(f"{field}.", rule[key])
        for value in node.values():
            retarget_messages(value, field)
    elif isinstance(node, list):
        for value in node:
            retarget_messages(value, field)


def drop_rules(node: Any) -> None:
    """Remove every CEL rule under `node`, in place, keeping its structure, types and bounds:
    for templates whose rules would exceed the API server's cost limit and are checked again
    on the objects made from them."""
    if isinstance(node, dict):
        node.pop("x-kubernetes-validations", None)
        for value in node.values():
            drop_rules(value)
    elif isinstance(node, list):
        for value in node:
            drop_rules(value)


def template_spec_schema(run_schema: Mapping[str, Any], field: str, description: str) -> Any:
    """The NotebookRun spec schema for a template at `field`, minus its immutability rule (a
    template may change; each run made from it may not)."""
    spec = copy.deepcopy(run_schema["properties"]["spec"])
    spec["x-kubernetes-validations"] = [
        rule for rule in spec.get("x-kubernetes-validations", []) if "oldSelf" not in rule["rule"]
    ]
    retarget_messages(spec, field)
    spec["description"] = description
    return spec


def template_metadata_schema(field: str, what: str) -> dict[str, Any]:
    """Labels and annotations of the runs made from a template at `field`, checked as the
    API server checks a run's own (a run it would refuse is refused at apply time)."""
    return {
        "type": "object",
        "description": f"Labels and annotations of {what}.",
        "properties": {
            "labels": {
                "type": "object",
                "description": f"Labels of {what}.",
                "maxProperties": 64,
                "additionalProperties": LABEL_VALUES,
                "x-kubernetes-validations": labels_rules(f"{field}.labels"),
            },
            "annotations": {
                "type": "object",
                "description": f"Annotations of {what}.",
                "maxProperties": 64,
                "additionalProperties": {"type": "string"},
                "x-kubernetes-validations": annotations_rules(f"{field}.annotations"),
            },
        },
    }


def conditions_schema(run_schema: Mapping[str, Any], description: str) -> Any:
    """status.conditions as a NotebookRun has them (metav1.Condition)."""
    conditions = copy.deepcopy(run_schema["properties"]["status"]["properties"]["conditions"])
    conditions["description"] = description
    return conditions


def crd_document(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    columns: list[dict[str, Any]],
    description: str,
    rules: list[dict[str, Any]],
    spec: dict[str, Any],
    status: dict[str, Any],
) -> dict[str, Any]:
    """A namespaced kubemill.dev/v1alpha1 CRD with a status subresource, as every kubemill kind
    is; `rules` are the object's own (those that need metadata.name)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.kubemill.dev",
            "labels": {"app.kubernetes.io/name": "kubemill"},
        },
        "spec": {
            "group": "kubemill.dev",
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["kubemill"],
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "x-kubernetes-validations": rules,
                            "properties": {
                                "apiVersion": string_schema(
                                    "The API version, kubemill.dev/v1alpha1."
                                ),
                                "kind": string_schema(f"{kind}."),
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd(header: str, document: Mapping[str, Any]) -> str:
    """The CRD's YAML as committed in crds/, under its header comment."""
    return header + yaml.safe_dump(dict(document), sort_keys=False, width=100, allow_unicode=True)
