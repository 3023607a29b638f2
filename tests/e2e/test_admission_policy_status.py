"""The ValidatingAdmissionPolicies in crds/ type-check against the CRDs they guard.

A CEL expression that names a field the schema does not have is accepted when the policy is
created and fails only when a request is admitted, so a typo would either refuse every
NotebookRun or let every bad one through. The controller-manager's
validatingadmissionpolicy-status-controller type-checks each policy against the CRD schemas
and writes what it finds in the policy's status, as on any cluster; these tests read it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client

from kubemill.operator.meta import GROUP, PLURAL, VERSION
from kubemill_testenv import kube, wait
from kubemill_testenv.controlplane import REPO_ROOT as ROOT
from kubemill_testenv.kube import JSON

from .conftest import Cluster

pytestmark = pytest.mark.e2e

POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"
TIMEOUT = 30


def type_checked(event: str, policy: JSON) -> bool:
    """The controller has type-checked the policy's current generation."""
    status = policy.get("status") or {}
    return (
        event != "DELETED"
        and status.get("observedGeneration") == policy["metadata"]["generation"]
        and "typeChecking" in status
    )


def checked(api: client.ApiClient, name: str) -> JSON:
    policy = wait.wait_for(
        api, POLICIES, type_checked, name=name, timeout=TIMEOUT, what=f"type checking of {name}"
    )
    result: JSON = policy["status"]["typeChecking"]
    return result


def policy_names(cluster: Cluster) -> list[str]:
    rendered = cluster.kubectl("kustomize", str(ROOT / "crds")).stdout
    return [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "ValidatingAdmissionPolicy"
    ]


def test_kubemill_policies_have_no_type_errors(
    kubemill_installed: Cluster, api: client.ApiClient
) -> None:
    names = policy_names(kubemill_installed)
    assert names, "crds/ has no ValidatingAdmissionPolicy"
    for name in names:
        assert checked(api, name).get("expressionWarnings") in (None, []), name


@pytest.fixture
def mistyped_policy(kubemill_installed: Cluster, api: client.ApiClient) -> Iterator[str]:
    """A policy on NotebookRuns that names a field their schema does not have; never bound, so
    it admits and refuses nothing."""
    name = "e2e-mistyped-notebookrun-policy"
    kube.request(
        api,
        "POST",
        POLICIES,
        body={
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [GROUP],
                            "apiVersions": [VERSION],
                            "operations": ["CREATE"],
                            "resources": [PLURAL],
                        }
                    ]
                },
                "validations": [{"expression": "object.spec.notebok != ''"}],
            },
        },
    )
    yield name
    kube.request(api, "DELETE", f"{POLICIES}/{name}")


def test_a_mistyped_policy_is_reported(api: client.ApiClient, mistyped_policy: str) -> None:
    """The positive control: the check above can fail."""
    warnings = checked(api, mistyped_policy).get("expressionWarnings") or []
    assert [w["fieldRef"] for w in warnings] == ["spec.validations[0].expression"], warnings
    assert "notebok" in warnings[0]["warning"], warnings
