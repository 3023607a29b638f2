"""The API server itself rejects bad NotebookRuns and NotebookSchedules, each with a message that
says how to fix it.

Also: the manifests in crds/ and deploy/ apply cleanly (server-side dry run)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Cluster
from tests.e2e.operator import ROOT

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
        "spec.parametersFrom[0].secretKeyRef: Required value",
    ),
]


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
        "set exactly one of spec.notebook",
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
        "template-typo",
        {},
        {**SCHEDULE, "runTemplate": {"spec": {**GOOD, "retries": 50}}},
        "retries",
    ),
]


def _apply(
    cluster: Cluster, namespace: str, doc: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
         "apply", "--server-side", "--field-manager=e2e", "-f", "-"],
        input=yaml.safe_dump(doc), text=True, capture_output=True, timeout=60, check=False,
    )  # fmt: skip


REJECTED = [("NotebookRun", *c[1:]) for c in INVALID] + [
    ("NotebookSchedule", *c[1:]) for c in INVALID_SCHEDULES
]


@pytest.mark.parametrize(
    ("kind", "metadata", "spec", "message"),
    REJECTED,
    ids=[f"run-{c[0]}" for c in INVALID] + [f"schedule-{c[0]}" for c in INVALID_SCHEDULES],
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
