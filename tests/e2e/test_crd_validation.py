"""The API server itself rejects bad NotebookRuns and NotebookSchedules, each with a message that
says how to fix it, and it rejects exactly what would fail later: what the operator, the runner
or the API server (for the run's Job) would refuse.

Also: the manifests in crds/ and deploy/ apply cleanly (server-side dry run)."""

from __future__ import annotations

import copy
import re
import subprocess
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.jobs import build_job
from kubemill.operator.settings import Settings
from kubemill.runner.errors import BadInputError
from kubemill.runner.parameters import validate_parameters
from kubemill.runner.rules import duration_seconds
from kubemill_testenv import kube
from kubemill_testenv.controlplane import REPO_ROOT as ROOT
from tests.e2e.conftest import Cluster

pytestmark = pytest.mark.e2e

GOOD: dict[str, Any] = {"notebook": "s3://bucket/n.ipynb"}

INVALID: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # (id, metadata overrides, spec, expected message fragment)
    ("no-notebook", {}, {}, "set exactly one of spec.notebook"),
    (
        "both-sources",
        {},
        {**GOOD, "notebookFrom": {"configMapKeyRef": {"name": "nb", "key": "a.ipynb"}}},
        "set exactly one of spec.notebook",
    ),
    ("bad-scheme", {}, {"notebook": "ftp://host/n.ipynb"}, "must be s3://BUCKET/KEY or an http"),
    ("bad-output", {}, {**GOOD, "output": "/tmp/out"}, "spec.output must be an S3 prefix"),
    ("bad-timeout", {}, {**GOOD, "timeout": "2 hours"}, "spec.timeout must be a duration"),
    ("bad-cell-timeout", {}, {**GOOD, "cellTimeout": "ten"}, "spec.cellTimeout must be a duration"),
    (
        "bad-parameter-name",
        {},
        {**GOOD, "parameters": {"2fast": 1}},
        'spec.parameters name "2fast" is not a Python identifier',
    ),
    (
        "bad-secret-parameter-name",
        {},
        {
            **GOOD,
            "parametersFrom": [{"name": "my-token", "secretKeyRef": {"name": "s", "key": "k"}}],
        },
        "parametersFrom[0].name",
    ),
    (
        "parameter-twice",
        {},
        {
            **GOOD,
            "parameters": {"token": "x"},
            "parametersFrom": [{"name": "token", "secretKeyRef": {"name": "s", "key": "k"}}],
        },
        'parameter "token" is set both in spec.parameters and in spec.parametersFrom',
    ),
    ("negative-retries", {}, {**GOOD, "retries": -1}, "spec.retries"),
    ("too-many-retries", {}, {**GOOD, "retries": 50}, "spec.retries"),
    ("bad-kernel", {}, {**GOOD, "kernel": "python 3"}, "spec.kernel"),
    ("long-name", {"name": "r" * 64}, GOOD, "at most 63 characters"),
    ("unknown-field", {}, {**GOOD, "paramters": {"a": 1}}, ".spec.paramters: field not declared"),
    (
        "secret-without-ref",
        {},
        {**GOOD, "parametersFrom": [{"name": "token"}]},
        "each spec.parametersFrom[] entry needs exactly one of secretKeyRef and notebookRunRef",
    ),
]


# Refused at apply time because the operator, the runner or the API server would refuse them
# later: (id, spec fields, message fragment, who refuses at run time). That last item is one of
# runner, operator, job (the API server, for the Job), pod (for its pod: the Job is accepted and
# stays without one), configmap (for the ConfigMap it names: no ConfigMap can have that name, and
# the pod would wait for it forever), or override (nobody: the value silently replaces one of
# kubemill's own). test_each_apply_time_refusal_matches_a_run_time_refusal checks it, so no rule
# here is stricter than what it stands in for.
RUN_TIME: list[tuple[str, dict[str, Any], str, str]] = [
    ("keyword-parameter", {"parameters": {"class": 1}},
     'spec.parameters name "class" is a Python keyword', "runner"),
    ("keyword-none", {"parameters": {"None": 1}},
     'spec.parameters name "None" is a Python keyword', "runner"),
    ("keyword-secret",
     {"parametersFrom": [{"name": "import", "secretKeyRef": {"name": "s", "key": "k"}}]},
     'spec.parametersFrom name "import" is a Python keyword', "runner"),
    ("zero-timeout", {"timeout": "0s"}, "spec.timeout must be at least 1s", "operator"),
    ("zero-minutes", {"timeout": "0m"}, "spec.timeout must be at least 1s", "operator"),
    ("zero-fraction", {"timeout": "0.0s"}, "spec.timeout must be at least 1s", "operator"),
    ("zero-ms", {"timeout": "0ms"}, "spec.timeout must be at least 1s", "operator"),
    ("sub-second", {"timeout": "500ms"}, "spec.timeout must be at least 1s", "operator"),
    ("zero-cell-timeout", {"cellTimeout": "0s"}, "spec.cellTimeout must be at least 1s",
     "operator"),
    ("memory-with-space", {"resources": {"limits": {"memory": "4 GB"}}},
     'spec.resources.limits.memory is "4 GB", not a Kubernetes quantity', "job"),
    ("two-dots", {"resources": {"requests": {"cpu": "1.5.2"}}},
     'spec.resources.requests.cpu is "1.5.2", not a Kubernetes quantity', "job"),
    ("negative-quantity", {"resources": {"limits": {"memory": "-1"}}},
     "spec.resources.limits.memory must not be negative", "job"),
    ("request-above-limit", {"resources": {"limits": {"cpu": 1}, "requests": {"cpu": "1500m"}}},
     "spec.resources.requests.cpu is more than its limit", "job"),
    ("unknown-resource", {"resources": {"limits": {"gpu": 1}}},
     'spec.resources.limits has "gpu": use cpu, memory', "job"),
    ("fractional-gpu", {"resources": {"limits": {"nvidia.com/gpu": "500m"}}},
     "nvidia.com/gpu is an extended resource and must be a whole number", "job"),
    ("overcommitted-gpu", {"resources": {"requests": {"nvidia.com/gpu": 1}}},
     "nvidia.com/gpu cannot be overcommitted", "job"),
    ("node-selector-value", {"nodeSelector": {"disk": "fast ssd"}},
     'spec.nodeSelector.disk is "fast ssd", not a label value', "job"),
    ("node-selector-key", {"nodeSelector": {"disk type": "ssd"}},
     'spec.nodeSelector key "disk type" is not a label key', "job"),
    ("toleration-key", {"tolerations": [{"key": "gpu vendor", "operator": "Exists"}]},
     "spec.tolerations[].key must be a label key", "job"),
    ("toleration-value", {"tolerations": [{"key": "gpu", "value": "a b"}]},
     "spec.tolerations[].value must be a label value", "job"),
    ("toleration-exists-value", {"tolerations": [{"key": "gpu", "operator": "Exists",
                                                  "value": "x"}]},
     "operator Exists takes no value", "job"),
    ("toleration-no-key", {"tolerations": [{"operator": "Equal", "value": "x"}]},
     "a toleration without a key needs operator Exists", "job"),
    ("toleration-seconds", {"tolerations": [{"key": "a", "effect": "NoSchedule",
                                             "tolerationSeconds": 60}]},
     "tolerationSeconds needs effect NoExecute", "job"),
    ("toleration-effect", {"tolerations": [{"key": "a", "effect": "Never"}]},
     "spec.tolerations[0].effect: Unsupported value", "job"),
    ("env-name", {"env": [{"name": "A=B", "value": "x"}]},
     "environment variable names are printable ASCII characters other than '='", "job"),
    ("env-reserved",
     {"parametersFrom": [{"name": "token", "secretKeyRef": {"name": "s", "key": "k"}}],
      "env": [{"name": "KUBEMILL_SECRET_0", "value": "not the secret"}]},
     "names starting with KUBEMILL_ are kubemill's own", "override"),
    ("env-from-two-sources",
     {"envFrom": [{"configMapRef": {"name": "c"}, "secretRef": {"name": "s"}}]},
     "needs exactly one of configMapRef and secretRef", "job"),
    ("env-from-prefix", {"envFrom": [{"prefix": "A=", "configMapRef": {"name": "c"}}]},
     "environment variable names are printable ASCII", "job"),
    ("env-from-name", {"envFrom": [{"secretRef": {"name": "My_Secret"}}]},
     "spec.envFrom[].secretRef.name must be the name of a Secret", "job"),
    ("service-account", {"serviceAccountName": "Report Runner"},
     "spec.serviceAccountName must be the name of a ServiceAccount", "job"),
    ("image-spaces", {"image": "python:3.11 "}, "spec.image must not start or end with spaces",
     "pod"),
    ("pod-label-value", {"podTemplate": {"metadata": {"labels": {"team": "data science"}}}},
     'spec.podTemplate.metadata.labels.team is "data science", not a label value', "job"),
    ("pod-annotation-key", {"podTemplate": {"metadata": {"annotations": {"owner name": "x"}}}},
     'spec.podTemplate.metadata.annotations key "owner name" is not an annotation key', "job"),
    ("pod-annotations-size",
     {"podTemplate": {"metadata": {"annotations": {"a": "x" * 200_000, "b": "y" * 70_000}}}},
     "spec.podTemplate.metadata.annotations must total at most 256 KiB", "job"),
    ("configmap-name",
     {"notebook": None, "notebookFrom": {"configMapKeyRef": {"name": "Notebooks", "key": "a"}}},
     "spec.notebookFrom.configMapKeyRef.name must be the name of a ConfigMap", "configmap"),
    ("configmap-key",
     {"notebook": None, "notebookFrom": {"configMapKeyRef": {"name": "nb", "key": ".."}}},
     "spec.notebookFrom.configMapKeyRef.key must be a key", "job"),
    ("secret-name",
     {"parametersFrom": [{"name": "token", "secretKeyRef": {"name": "API Token", "key": "k"}}]},
     "spec.parametersFrom[].secretKeyRef.name must be the name of a Secret", "job"),
    ("node-affinity-no-values",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
         "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}}},
     "matchExpressions[]: operator In and NotIn need values", "job"),
    ("node-affinity-operator",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
         "nodeSelectorTerms": [{"matchExpressions": [
             {"key": "zone", "operator": "Equals", "values": ["a"]}]}]}}}},
     'matchExpressions[0].operator: Unsupported value: "Equals"', "job"),
    ("node-affinity-value",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
         "nodeSelectorTerms": [{"matchExpressions": [
             {"key": "zone", "operator": "In", "values": ["eu west"]}]}]}}}},
     "matchExpressions[].values must be label values", "job"),
    ("node-affinity-no-terms",
     {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
         "nodeSelectorTerms": []}}}},
     "nodeSelectorTerms in body should have at least 1 items", "job"),
    ("pod-affinity-no-topology",
     {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
         {"labelSelector": {"matchLabels": {"app": "x"}}}]}}},
     "requiredDuringSchedulingIgnoredDuringExecution[0].topologyKey: Required value", "job"),
    ("pod-affinity-weight",
     {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
         {"weight": 0, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}}},
     "weight in body should be greater than or equal to 1", "job"),
    ("pod-affinity-exists-values",
     {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
         {"topologyKey": "zone", "labelSelector": {"matchExpressions": [
             {"key": "app", "operator": "Exists", "values": ["x"]}]}}]}}},
     "operator Exists and DoesNotExist take no values", "job"),
    ("env-value-from-secret-name",
     {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "Bad Name", "key": "k"}}}]},
     "spec.env[].valueFrom.secretKeyRef.name must be the name of a Secret", "job"),
    ("env-value-from-field",
     {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.foo"}}}]},
     "spec.env[].valueFrom.fieldRef.fieldPath must be one of", "job"),
    ("env-value-and-value-from",
     {"env": [{"name": "A", "value": "x",
               "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
     "spec.env[]: set value or valueFrom, not both", "job"),
    ("env-value-from-empty", {"env": [{"name": "A", "valueFrom": {}}]},
     "spec.env[].valueFrom needs exactly one of", "job"),
    ("ttl-over-int32", {"ttlSecondsAfterFinished": 2**31},
     "spec.ttlSecondsAfterFinished in body should be less than or equal to 2147483647", "job"),
]  # fmt: skip


def _with(fields: dict[str, Any]) -> dict[str, Any]:
    """GOOD with `fields` set (None removes one)."""
    return {k: v for k, v in {**GOOD, **fields}.items() if v is not None}


INVALID += [(f"late-{c[0]}", {}, _with(c[1]), c[2]) for c in RUN_TIME]

TEMPLATE: dict[str, Any] = {"spec": GOOD}
SCHEDULE: dict[str, Any] = {"schedule": "30 2 * * *", "runTemplate": TEMPLATE}

INVALID_SCHEDULES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("minute-out-of-range", {}, {**SCHEDULE, "schedule": "61 * * * *"}, "5 cron fields"),
    ("four-fields", {}, {**SCHEDULE, "schedule": "0 * * *"}, "5 cron fields"),
    ("step-zero", {}, {**SCHEDULE, "schedule": "*/0 * * * *"}, "5 cron fields"),
    ("inverted-range", {}, {**SCHEDULE, "schedule": "0 0 * * FRI-MON"}, "start comes after"),
    ("every", {}, {**SCHEDULE, "schedule": "@every 5m"}, "5 cron fields"),
    ("tz-prefix", {}, {**SCHEDULE, "schedule": "TZ=UTC 0 * * * *"}, "set spec.timeZone"),
    ("unknown-zone", {}, {**SCHEDULE, "timeZone": "Europe/Berln"}, "not a known IANA time zone"),
    ("local-zone", {}, {**SCHEDULE, "timeZone": "Local"}, "must be an IANA time zone name"),
    ("bad-policy", {}, {**SCHEDULE, "concurrencyPolicy": "Queue"}, "concurrencyPolicy"),
    ("zero-deadline", {}, {**SCHEDULE, "startingDeadlineSeconds": 0}, "startingDeadlineSeconds"),
    ("negative-history", {}, {**SCHEDULE, "failedRunsHistoryLimit": -1}, "failedRunsHistoryLimit"),
    ("long-name", {"name": "s" * 48}, SCHEDULE, "at most 47 characters"),
    (
        "template-without-notebook",
        {},
        {**SCHEDULE, "runTemplate": {"spec": {"parameters": {"a": 1}}}},
        "set exactly one of spec.runTemplate.spec.notebook",
    ),
    (
        "unknown-template-variable",
        {},
        {**SCHEDULE, "runTemplate": {"spec": {**GOOD, "parameters": {"day": "{{ date }}"}}}},
        "spec.runTemplate.spec.parameters.day names an unknown {{ variable }}",
    ),
    (
        "bad-template-parameter-name",
        {},
        {**SCHEDULE, "runTemplate": {"spec": {**GOOD, "parameters": {"2x": 1}}}},
        'spec.runTemplate.spec.parameters name "2x" is not a Python identifier',
    ),
    (
        "template-label-value",
        {},
        {**SCHEDULE, "runTemplate": {**TEMPLATE, "metadata": {"labels": {"team": "data science"}}}},
        'spec.runTemplate.metadata.labels.team is "data science", not a label value',
    ),
    (
        "template-label-key",
        {},
        {**SCHEDULE, "runTemplate": {**TEMPLATE, "metadata": {"labels": {"-team": "a"}}}},
        'spec.runTemplate.metadata.labels key "-team" is not a label key',
    ),
    (
        "template-long-label-value",
        {},
        {**SCHEDULE, "runTemplate": {**TEMPLATE, "metadata": {"labels": {"team": "t" * 64}}}},
        "spec.runTemplate.metadata.labels.team: Too long",
    ),
    (
        "template-annotation-key",
        {},
        {**SCHEDULE, "runTemplate": {**TEMPLATE, "metadata": {"annotations": {"a b": "x"}}}},
        'spec.runTemplate.metadata.annotations key "a b" is not an annotation key',
    ),
    (
        "template-annotations-size",
        {},
        {
            **SCHEDULE,
            "runTemplate": {**TEMPLATE, "metadata": {"annotations": {"a": "x" * 270_000}}},
        },
        "spec.runTemplate.metadata.annotations must total at most 256 KiB",
    ),
    (
        "template-typo",
        {},
        {**SCHEDULE, "runTemplate": {"spec": {**GOOD, "retries": 50}}},
        "retries",
    ),
]


def _workflow_schedule(steps: list[Any], final: list[Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"steps": steps, **({"finally": final} if final else {})}
    return {"schedule": "30 2 * * *", "workflowTemplate": {"spec": spec}}


def _template_step(name: str, **spec: Any) -> dict[str, Any]:
    return {"name": name, "runTemplate": {"spec": {**GOOD, **spec}}}


WORKFLOW_TEMPLATE = _workflow_schedule([_template_step("load")])["workflowTemplate"]

INVALID_SCHEDULES += [
    (
        "both-templates",
        {},
        {**SCHEDULE, "workflowTemplate": WORKFLOW_TEMPLATE},
        "set exactly one of spec.runTemplate (each slot creates a NotebookRun) and "
        "spec.workflowTemplate",
    ),
    ("no-template", {}, {"schedule": "30 2 * * *"}, "set exactly one of spec.runTemplate"),
    (
        # 40 + "-YYYYMMDD-HHMMSS" + "-load" + "-r99" is 65 characters.
        "workflow-run-names-too-long",
        {"name": "s" * 40},
        _workflow_schedule([_template_step("load")]),
        "metadata.name is too long for the name of a step in spec.workflowTemplate.spec.steps",
    ),
    (
        "workflow-finally-run-names-too-long",
        {"name": "s" * 30},
        _workflow_schedule([_template_step("a")], [_template_step("notify-the-team")]),
        "metadata.name is too long for the name of a step in spec.workflowTemplate.spec.finally",
    ),
    (
        "workflow-step-parameter-name",
        {},
        _workflow_schedule([_template_step("load", parameters={"2x": 1})]),
        'spec.workflowTemplate.spec.steps[name=load].runTemplate.spec.parameters name "2x" is '
        "not a Python identifier",
    ),
    (
        "workflow-finally-unknown-variable",
        {},
        _workflow_schedule(
            [_template_step("load")], [_template_step("tell", parameters={"d": "{{ date }}"})]
        ),
        "spec.workflowTemplate.spec.finally[name=tell].runTemplate.spec.parameters.d names an "
        "unknown {{ variable }}",
    ),
    (
        "workflow-template-finally-name-taken",
        {},
        _workflow_schedule([_template_step("load")], [_template_step("load")]),
        "spec.workflowTemplate.spec.finally[].name: a finally step has the name of a step in "
        "spec.workflowTemplate.spec.steps",
    ),
]

_RUN_FIELD = re.compile(r"(?<![\w.\[])spec\.")
# Each apply-time rule of a run holds in a schedule's template too, naming the template's field.
INVALID_SCHEDULES += [
    (
        f"template-{c[0]}",
        {},
        {**SCHEDULE, "runTemplate": {"spec": _with(c[1])}},
        _RUN_FIELD.sub("spec.runTemplate.spec.", c[2]),
    )
    for c in RUN_TIME
]


# --- NotebookWorkflow ---------------------------------------------------------------------------


def _step(name: str, notebook: str, **fields: Any) -> dict[str, Any]:
    spec = {"notebook": f"s3://notebooks/{notebook}.ipynb", **fields.pop("spec", {})}
    return {"name": name, **fields, "runTemplate": {"spec": spec}}


def _from_step(parameter: str, step: str, **what: str) -> dict[str, Any]:
    return {"name": parameter, "stepRef": {"name": step, **what}}


# A diamond: extract, then two branches (one fanned out over regions), then a report that
# takes both; a test of the report's notebook; a finally step that gets the outcome.
WORKFLOW: dict[str, Any] = {
    "steps": [
        _step("extract", "extract", spec={"parameters": {"day": "2027-01-01"}}),
        _step(
            "by-region", "region",
            dependsOn=["extract"],
            forEach={"parameter": "region", "items": ["eu", "us", {"name": "apac", "tier": 2}]},
            spec={"parametersFrom": [_from_step("table", "extract", result="table")]},
        ),
        _step("totals", "totals", dependsOn=["extract"]),
        _step(
            "report", "report",
            dependsOn=["by-region", "totals"],
            spec={"parametersFrom": [_from_step("regions", "by-region", result="summary"),
                                     _from_step("totals", "totals", output="folder")]},
        ),
        _step(
            "check-report", "check_report", test=True,
            spec={"parametersFrom": [_from_step("report", "report", output="notebook")]},
        ),
        _step(
            "per-customer", "customer",
            forEach={"parameter": "customer", "fromStep": {"name": "extract",
                                                           "result": "customers"}},
        ),
    ],
    "finally": [
        _step("notify", "notify",
              spec={"parametersFrom": [{"name": "outcome", "workflowOutcome": {}}]}),
    ],
}  # fmt: skip


def _workflow(**changes: Any) -> dict[str, Any]:
    """WORKFLOW with spec fields replaced; `step_<n>` replaces spec.steps[n], `finally_<n>`
    spec.finally[n] (a step None removes it)."""
    spec = copy.deepcopy(WORKFLOW)
    for key, value in changes.items():
        kind, _, index = key.partition("_")
        if kind in ("step", "finally") and index.isdigit():
            field = "steps" if kind == "step" else "finally"
            spec[field][int(index)] = value
            spec[field] = [s for s in spec[field] if s is not None]
        else:
            spec[key] = value
    return spec


_BAD_SOURCE = {"name": "x", "stepRef": {"name": "extract", "result": "r"},
               "secretKeyRef": {"name": "s", "key": "k"}}  # fmt: skip

INVALID_WORKFLOWS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("no-steps", {}, _workflow(steps=[]), "spec.steps: Invalid value"),
    ("duplicate-step", {}, _workflow(step_2=_step("extract", "totals")),
     '.spec.steps: duplicate entries for key [name=\"extract\"]'),
    ("duplicate-across-finally", {}, _workflow(finally_0=_step("report", "notify")),
     "step names must be unique across spec.steps and spec.finally"),
    ("bad-step-name", {}, _workflow(step_2=_step("Totals", "totals")),
     "spec.steps[2].name in body should match"),
    ("unknown-depends-on", {}, _workflow(step_2=_step("totals", "t", dependsOn=["extrakt"])),
     'spec.steps[name=totals].dependsOn names "extrakt", which is not a step in spec.steps; '
     "use one of: extract, by-region"),
    ("depends-on-finally", {}, _workflow(step_2=_step("totals", "t", dependsOn=["notify"])),
     'spec.steps[name=totals].dependsOn names "notify", which is not a step in spec.steps'),
    ("depends-on-itself", {}, _workflow(step_2=_step("totals", "t", dependsOn=["totals"])),
     "spec.steps[].dependsOn names the step itself"),
    ("step-ref-itself", {},
     _workflow(step_2=_step("totals", "t", spec={"parametersFrom": [_from_step("a", "totals",
                                                                               result="r")]})),
     "spec.steps[].runTemplate.spec.parametersFrom[].stepRef.name names the step itself"),
    ("unknown-step-ref", {},
     _workflow(step_2=_step("totals", "t", spec={"parametersFrom": [_from_step("a", "extrct",
                                                                               result="r")]})),
     'spec.steps[name=totals].runTemplate.spec.parametersFrom[].stepRef.name "extrct" is not '
     "a step in spec.steps"),
    ("finally-step-ref-to-finally", {},
     _workflow(**{"finally": [_step("notify", "n", spec={"parametersFrom": [
         _from_step("a", "archive", output="notebook")]}), _step("archive", "a")]}),
     'spec.finally[name=notify].runTemplate.spec.parametersFrom[].stepRef.name "archive" is not '
     "a step in spec.steps"),
    ("step-ref-result-and-output", {},
     _workflow(step_2=_step("totals", "t", spec={"parametersFrom": [
         _from_step("a", "extract", result="r", output="notebook")]})),
     "spec.steps[].runTemplate.spec.parametersFrom[].stepRef needs exactly one of result"),
    ("step-ref-neither", {},
     _workflow(step_2=_step("totals", "t", spec={"parametersFrom": [_from_step("a", "extract")]})),
     "spec.steps[].runTemplate.spec.parametersFrom[].stepRef needs exactly one of result"),
    ("two-sources", {}, _workflow(step_2=_step("totals", "t",
                                               spec={"parametersFrom": [_BAD_SOURCE]})),
     "each spec.steps[].runTemplate.spec.parametersFrom[] entry needs exactly one of "
     "secretKeyRef, notebookRunRef, stepRef, workflowOutcome"),
    ("no-source", {}, _workflow(finally_0=_step("notify", "n",
                                                spec={"parametersFrom": [{"name": "x"}]})),
     "each spec.finally[].runTemplate.spec.parametersFrom[] entry needs exactly one of"),
    ("workflow-outcome-in-a-step", {},
     _workflow(step_2=_step("totals", "t", spec={"parametersFrom": [
         {"name": "outcome", "workflowOutcome": {}}]})),
     "spec.steps[].runTemplate.spec.parametersFrom[].workflowOutcome is only for steps in "
     "spec.finally"),
    ("for-each-items-and-from-step", {},
     _workflow(step_1=_step("by-region", "r", forEach={
         "parameter": "region", "items": ["eu"],
         "fromStep": {"name": "extract", "result": "regions"}})),
     "spec.steps[name=by-region].forEach needs exactly one of items (a list written here) and "
     "fromStep"),
    ("for-each-neither", {},
     _workflow(step_1=_step("by-region", "r", forEach={"parameter": "region"})),
     "spec.steps[name=by-region].forEach needs exactly one of items"),
    ("for-each-unknown-step", {},
     _workflow(step_1=_step("by-region", "r", forEach={
         "parameter": "region", "fromStep": {"name": "extrct", "result": "regions"}})),
     "spec.steps[].forEach.fromStep.name must name a step in spec.steps"),
    ("for-each-itself", {},
     _workflow(step_1=_step("by-region", "r", forEach={
         "parameter": "region", "fromStep": {"name": "by-region", "result": "regions"}})),
     "spec.steps[].forEach.fromStep.name names the step itself"),
    ("for-each-keyword", {},
     _workflow(step_1=_step("by-region", "r", forEach={"parameter": "lambda", "items": [1]})),
     'spec.steps[name=by-region].forEach.parameter "lambda" is a Python keyword'),
    ("for-each-bad-parameter", {},
     _workflow(step_1=_step("by-region", "r", forEach={"parameter": "2x", "items": [1]})),
     "spec.steps[1].forEach.parameter in body should match"),
    ("for-each-too-many", {},
     _workflow(step_1=_step("by-region", "r", forEach={"parameter": "r",
                                                       "items": list(range(201))})),
     "spec.steps[1].forEach.items: Too many"),
    ("depends-on-in-finally", {},
     _workflow(finally_0=_step("notify", "n", dependsOn=["report"])),
     '.spec.finally[name="notify"].dependsOn: field not declared'),
    # 30 + 1 + 25 + 4 = 60 would fit a step without forEach; per-customer has one: 64.
    ("name-too-long-for-for-each", {"name": "w" * 30},
     _workflow(step_5={**WORKFLOW["steps"][5], "name": "per-customer-" + "c" * 12}),
     "metadata.name is too long for the name of a step in spec.steps"),
    ("name-too-long-for-finally", {"name": "w" * 30},
     _workflow(finally_0=_step("notify-" + "n" * 22, "n")),
     "metadata.name is too long for the name of a step in spec.finally"),
    ("bad-parameter-name", {},
     _workflow(step_0=_step("extract", "e", spec={"parameters": {"2x": 1}})),
     'spec.steps[name=extract].runTemplate.spec.parameters name "2x" is not a Python '
     "identifier"),
    ("keyword-parameter-in-finally", {},
     _workflow(finally_0=_step("notify", "n", spec={"parameters": {"class": 1}})),
     'spec.finally[name=notify].runTemplate.spec.parameters name "class" is a Python keyword'),
    ("keyword-parameters-from", {},
     _workflow(step_2=_step("totals", "t", spec={"parametersFrom": [
         _from_step("import", "extract", result="r")]})),
     'spec.steps[name=totals].runTemplate.spec.parametersFrom name "import" is a Python '
     "keyword"),
    ("parameter-twice", {},
     _workflow(step_2=_step("totals", "t", spec={"parameters": {"table": 1}, "parametersFrom": [
         _from_step("table", "extract", result="r")]})),
     'parameter "table" is set both in spec.steps[name=totals].runTemplate.spec.parameters'),
    ("no-notebook", {},
     _workflow(step_2={"name": "totals", "runTemplate": {"spec": {"parameters": {"a": 1}}}}),
     "set exactly one of spec.steps[].runTemplate.spec.notebook"),
    ("finally-no-notebook", {},
     _workflow(finally_0={"name": "notify", "runTemplate": {"spec": {}}}),
     "set exactly one of spec.finally[].runTemplate.spec.notebook"),
    ("template-timeout", {}, _workflow(step_2=_step("totals", "t", spec={"timeout": "soon"})),
     "spec.steps[].runTemplate.spec.timeout must be a duration"),
    ("template-label", {},
     _workflow(step_2={**_step("totals", "t"), "runTemplate": {
         "metadata": {"labels": {"team": "data science"}}, "spec": GOOD}}),
     'spec.steps[].runTemplate.metadata.labels.team is "data science", not a label value'),
]  # fmt: skip


def _apply(
    cluster: Cluster, namespace: str, doc: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
         "apply", "--server-side", "--field-manager=e2e", "-f", "-"],
        input=yaml.safe_dump(doc), text=True, capture_output=True, timeout=60, check=False,
    )  # fmt: skip


REJECTED = [
    *[("NotebookRun", *c[1:]) for c in INVALID],
    *[("NotebookSchedule", *c[1:]) for c in INVALID_SCHEDULES],
    *[("NotebookWorkflow", *c[1:]) for c in INVALID_WORKFLOWS],
]


@pytest.mark.parametrize(
    ("kind", "metadata", "spec", "message"),
    REJECTED,
    ids=[
        *[f"run-{c[0]}" for c in INVALID],
        *[f"schedule-{c[0]}" for c in INVALID_SCHEDULES],
        *[f"workflow-{c[0]}" for c in INVALID_WORKFLOWS],
    ],
)
def test_invalid_manifests_are_rejected_with_a_fix(
    kubemill_installed: Cluster,
    namespace: str,
    kind: str,
    metadata: dict[str, Any],
    spec: dict[str, Any],
    message: str,
) -> None:
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "invalid", **metadata},
        "spec": spec,
    }
    result = _apply(kubemill_installed, namespace, doc)
    assert result.returncode != 0, f"accepted: {doc}"
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "schedule",
    ["*/15 * * * * *", "0 6 * * MON-FRI", "@daily", "30 2 1,15 JAN-MAR ?", "0 0 29 2 *"],
)
def test_valid_schedules_are_accepted_with_defaults(
    kubemill_installed: Cluster, namespace: str, schedule: str
) -> None:
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookSchedule",
        "metadata": {"name": "valid"},
        "spec": {
            **SCHEDULE,
            "schedule": schedule,
            "timeZone": "Australia/Lord_Howe",
            "runTemplate": {"spec": {**GOOD, "parameters": {"day": "{{ scheduledDate }}"}}},
        },
    }
    result = _apply(kubemill_installed, namespace, doc)
    assert result.returncode == 0, result.stderr
    created = yaml.safe_load(
        kubemill_installed.kubectl("-n", namespace, "get", "nbsched", "valid", "-o", "yaml").stdout
    )
    spec = created["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"]) == ("Allow", False)
    assert (spec["successfulRunsHistoryLimit"], spec["failedRunsHistoryLimit"]) == (3, 1)


def test_the_spec_cannot_change_once_the_run_exists(
    kubemill_installed: Cluster, namespace: str
) -> None:
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {"name": "fixed"},
        "spec": {**GOOD, "parameters": {"a": 1}},
    }
    assert _apply(kubemill_installed, namespace, doc).returncode == 0
    doc["spec"]["parameters"] = {"a": 2}
    result = _apply(kubemill_installed, namespace, doc)
    assert result.returncode != 0
    assert "spec is immutable: a NotebookRun is one execution" in result.stderr
    labels_only = {**doc, "metadata": {"name": "fixed", "labels": {"ok": "yes"}}}
    labels_only["spec"] = {**GOOD, "parameters": {"a": 1}}
    assert _apply(kubemill_installed, namespace, labels_only).returncode == 0


def test_kubectl_explain_teaches_the_api(kubemill_installed: Cluster) -> None:
    explained = kubemill_installed.kubectl("explain", "nbrun.spec.parametersFrom").stdout
    assert "never written to the output notebook" in " ".join(explained.split())
    assert "secretKeyRef" in explained
    explained = kubemill_installed.kubectl("explain", "nbsched.spec").stdout
    assert "kubemill schedule preview" in " ".join(explained.split())
    template = kubemill_installed.kubectl("explain", "nbsched.spec.runTemplate.spec").stdout
    assert "{{ variable }} placeholders" in " ".join(template.split())


@pytest.mark.parametrize("path", ["crds", "deploy/base"])
def test_manifests_apply_server_side(kubemill_installed: Cluster, path: str) -> None:
    result = kubemill_installed.kubectl(
        "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-k", str(ROOT / path),
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "serverside-applied (server dry run)" in result.stdout


@pytest.mark.parametrize("sample", ["notebookrun.yaml", "notebookschedule.yaml"])
def test_samples_are_valid(kubemill_installed: Cluster, namespace: str, sample: str) -> None:
    result = kubemill_installed.kubectl(
        "-n", namespace, "create", "--dry-run=server", "-f",
        str(ROOT / "deploy" / "samples" / sample), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _job_for(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    run = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {"name": "late", "namespace": namespace, "uid": "0b6e4c1a-1111-2222-3333"},
        "spec": spec,
    }
    return build_job(run, Settings(output_prefix="s3://results/"))


def _refusal(api: client.ApiClient, path: str, body: dict[str, Any]) -> str | None:
    """The API server's message when it refuses to create `body` (a dry run: nothing is
    created), or None when it accepts it."""
    try:
        kube.request(api, "POST", path, body=body, query={"dryRun": "All"})
    except ApiException as exc:
        assert exc.status in (400, 422), exc
        return str(exc.body)
    return None


def _job_refusal(api: client.ApiClient, namespace: str, job: dict[str, Any]) -> str | None:
    return _refusal(api, f"/apis/batch/v1/namespaces/{namespace}/jobs", job)


@pytest.mark.parametrize(
    ("fields", "later"), [c[1::2] for c in RUN_TIME], ids=[c[0] for c in RUN_TIME]
)
def test_each_apply_time_refusal_matches_a_run_time_refusal(
    api: client.ApiClient, namespace: str, fields: dict[str, Any], later: str
) -> None:
    """Without the CRD's rule the spec would fail later, where `later` says: no rule refuses
    what kubemill or Kubernetes would have run."""
    spec = _with(fields)
    if later == "operator":
        with pytest.raises(InvalidSpec, match="at least 1s"):
            _job_for(spec, namespace)
        return
    job = _job_for(spec, namespace)
    if later == "runner":
        secrets = [p["name"] for p in spec.get("parametersFrom", [])]
        with pytest.raises(BadInputError, match="is a Python keyword"):
            validate_parameters(spec.get("parameters", {}), secrets, None, allow_unknown=True)
        assert _job_refusal(api, namespace, job) is None
        return
    if later == "pod":
        assert _job_refusal(api, namespace, job) is None
        template = job["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        pod["metadata"] = {**template["metadata"], "name": "late"}
        assert _refusal(api, f"/api/v1/namespaces/{namespace}/pods", pod) is not None
        return
    if later == "override":
        # Kubernetes accepts it, and the later entry silently wins over the operator's.
        assert _job_refusal(api, namespace, job) is None
        env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        name = spec["env"][0]["name"]
        assert [e["name"] for e in env].count(name) == 2
        assert [e for e in env if e["name"] == name][-1] == spec["env"][0]
        return
    if later == "configmap":
        name = spec["notebookFrom"]["configMapKeyRef"]["name"]
        configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        path = f"/api/v1/namespaces/{namespace}/configmaps"
        assert _refusal(api, path, configmap) is not None, f"a ConfigMap can be named {name!r}"
        return
    assert _job_refusal(api, namespace, job) is not None, f"the API server accepts {fields}"


# Values at the edge of each rule that the CRDs, the operator, the runner and the API server
# (for the Job) all accept.
EDGE: dict[str, Any] = {
    **GOOD,
    "parameters": {"match": 1, "type": "t", "_": None, "case": [1], "__x__": 2},
    "parametersFrom": [{"name": "token", "secretKeyRef": {"name": "api.token-1", "key": "a_b.c"}}],
    "timeout": "1s",
    "cellTimeout": "1000ms",
    "resources": {
        "limits": {"cpu": 2, "memory": "4Gi", "nvidia.com/gpu": 1, "ephemeral-storage": "1e9"},
        "requests": {"cpu": "0.5", "memory": "4G", "nvidia.com/gpu": "1"},
    },
    "nodeSelector": {"kubernetes.io/os": "linux", "example.com/empty": "", "a.b": "x-y_z.1"},
    "tolerations": [
        {"operator": "Exists"},
        {"key": "gpu", "value": "", "effect": "NoSchedule"},
        {"key": "example.com/flaky", "operator": "Equal", "value": "yes", "effect": "NoExecute",
         "tolerationSeconds": 30},
    ],
    "env": [
        {"name": "MY VAR.x-1", "value": "$(HOME)"},
        {"name": "_A", "value": ""},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a.b/c']"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"containerName": "runner",
                                                           "resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
        {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k",
                                                          "optional": True}}},
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In",
                                       "values": ["amd64", "arm64"]},
                                      {"key": "cores", "operator": "Gt", "values": ["3"]},
                                      {"key": "spot", "operator": "DoesNotExist"}]},
                {"matchFields": [{"key": "metadata.name", "operator": "NotIn",
                                  "values": ["node-1"]}]},
            ]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [
                    {"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            ],
        },
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "namespaces": ["a", "b-1"],
                 "labelSelector": {"matchLabels": {"app": "x"}, "matchExpressions": [
                     {"key": "tier", "operator": "NotIn", "values": ["web"]}]},
                 "matchLabelKeys": ["kubemill.dev/run"]},
            ],
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "podAffinityTerm": {"topologyKey": "zone",
                                                  "namespaceSelector": {}}},
            ],
        },
    },
    "envFrom": [{"prefix": "P_", "configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}}],
    "serviceAccountName": "runner.sa-1",
    "image": "registry.example:5000/kubemill-runner@sha256:" + "a" * 64,
    "ttlSecondsAfterFinished": 2**31 - 1,
    "podTemplate": {
        "metadata": {
            "labels": {"example.com/team": "data-science", "empty": "", "x": "a" * 63},
            "annotations": {"Example.com/Owner": "anything: at all", "note": ""},
        }
    },
}  # fmt: skip


def test_values_at_the_edge_of_each_rule_are_accepted_everywhere(
    kubemill_installed: Cluster, api: client.ApiClient, namespace: str
) -> None:
    for kind, spec in (
        ("NotebookRun", EDGE),
        ("NotebookSchedule", {**SCHEDULE, "runTemplate": {"spec": EDGE}}),
    ):
        doc = {"apiVersion": "kubemill.dev/v1alpha1", "kind": kind,
               "metadata": {"name": "edge"}, "spec": spec}  # fmt: skip
        result = _apply(kubemill_installed, namespace, doc)
        assert result.returncode == 0, result.stderr
    assert _job_refusal(api, namespace, _job_for(EDGE, namespace)) is None
    secrets = [p["name"] for p in EDGE["parametersFrom"]]
    validate_parameters(EDGE["parameters"], secrets, None, allow_unknown=True)


@pytest.mark.parametrize("limit", ["4 GB", "1.5.2", "-1", "4GB"])
def test_the_quantity_rule_matches_the_api_servers(
    api: client.ApiClient, namespace: str, limit: str
) -> None:
    """The CRD's quantity rule is Kubernetes' own: a Job with the same value is refused too."""
    job = _job_for(_with({"resources": {"limits": {"memory": limit}}}), namespace)
    assert _job_refusal(api, namespace, job) is not None


DURATIONS = [
    *("1s", "1000ms", "1.5s", "0.5m", "1h30m", "1.5h", "0100000ms", "3000000h"),
    *("9999999h9999999h", "0000000000000000001s"),
    *("0s", "0.0m", "0ms", "999ms", "0.1234567s", "0000000s", "99999999h", "86400000ms"),
    *("1" * 19 + "s", "1d", "1h 30m", "-1s", "1us"),
]


@pytest.mark.parametrize("text", DURATIONS)
def test_the_api_server_reads_durations_as_the_operator_does(
    kubemill_installed: Cluster, api: client.ApiClient, namespace: str, text: str
) -> None:
    """Accepted by the CRD exactly when the operator accepts it, and then a valid Job."""
    try:
        duration_seconds(text)
    except ValueError:
        operator_accepts = False
    else:
        operator_accepts = True
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1", "kind": "NotebookRun",
        "metadata": {"name": "duration"}, "spec": {**GOOD, "timeout": text, "cellTimeout": text},
    }  # fmt: skip
    result = _apply(kubemill_installed, namespace, doc)
    assert (result.returncode == 0) is operator_accepts, result.stderr
    if operator_accepts:
        job = _job_for(doc["spec"], namespace)
        assert _job_refusal(api, namespace, job) is None


def test_a_diamond_workflow_with_for_each_tests_and_finally_is_accepted(
    kubemill_installed: Cluster, namespace: str
) -> None:
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookWorkflow",
        # The longest name its steps allow: per-customer-<item>-r<attempt> takes 1 + 12 + 4 + 4.
        "metadata": {"name": "w" * (63 - 1 - len("per-customer") - 4 - 4)},
        "spec": WORKFLOW,
    }
    result = _apply(kubemill_installed, namespace, doc)
    assert result.returncode == 0, result.stderr
    created = yaml.safe_load(
        kubemill_installed.kubectl(
            "-n", namespace, "get", "nbwf", doc["metadata"]["name"], "-o", "yaml"
        ).stdout
    )
    assert created["spec"]["failFast"] is False
    # Items of any JSON type are kept as written.
    assert created["spec"]["steps"][1]["forEach"]["items"][2] == {"name": "apac", "tier": 2}
    assert created["spec"]["finally"][0]["runTemplate"]["spec"]["parametersFrom"] == [
        {"name": "outcome", "workflowOutcome": {}}
    ]
    table = kubemill_installed.kubectl("-n", namespace, "get", "nbwf", "-o", "wide").stdout
    assert table.split()[:7] == ["NAME", "PHASE", "PROGRESS", "REASON", "DURATION", "AGE",
                                 "MESSAGE"]  # fmt: skip


def _largest_workflow() -> dict[str, Any]:
    names = [f"s{i}" for i in range(100)]
    steps = [
        _step(name, "n", dependsOn=names[max(0, i - 100) : i],
              spec={"parametersFrom": [_from_step(f"p{j}", names[0], result="r")
                                       for j in range(64 if i else 0)]})
        for i, name in enumerate(names)
    ]  # fmt: skip
    final = [_step(f"f{i}", "n", spec={"parametersFrom": [{"name": "o", "workflowOutcome": {}}]})
             for i in range(20)]  # fmt: skip
    return {"steps": steps, "finally": final}


def test_the_largest_workflow_is_accepted(kubemill_installed: Cluster, namespace: str) -> None:
    """At every maxItems the CRD and the policy stay within the API server's CEL cost limits
    (for the CRD, creating it is the proof; for the policy, evaluating this)."""
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookWorkflow",
        "metadata": {"name": "largest"},
        "spec": _largest_workflow(),
    }
    result = _apply(kubemill_installed, namespace, doc)
    assert result.returncode == 0, result.stderr[:2000]


def test_kubectl_explain_teaches_the_workflow_api(kubemill_installed: Cluster) -> None:
    explained = " ".join(kubemill_installed.kubectl("explain", "nbwf.spec").stdout.split())
    for field in ("failFast", "steps", "finally", "whatever happened"):
        assert field in explained, field
    steps = " ".join(
        kubemill_installed.kubectl("explain", "nbwf.spec.steps", "--recursive").stdout.split()
    )
    for field in ("dependsOn", "forEach", "fromStep", "stepRef", "workflowOutcome", "test"):
        assert field in steps, field


def test_the_largest_workflow_template_is_accepted(
    kubemill_installed: Cluster, namespace: str
) -> None:
    """The same within a schedule: the schedule CRD (with both templates' rules) was created,
    and its template policy evaluates every step within its budget."""
    workflow = _largest_workflow()
    workflow["steps"][0]["runTemplate"]["spec"]["parameters"] = {"day": "{{ scheduledDate }}"}
    doc = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "NotebookSchedule",
        "metadata": {"name": "l"},
        "spec": {"schedule": "@daily", "workflowTemplate": {"spec": workflow}},
    }
    result = _apply(kubemill_installed, namespace, doc)
    assert result.returncode == 0, result.stderr[:2000]
