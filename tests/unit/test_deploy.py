"""deploy/base/deployment.yaml read as the API server would: the probes ask where kopf answers,
a stuck rollout is reported in bounded time, and the operator runs with the least it needs
(rbac.yaml); people get the same rights on every kubemill kind (user-roles.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from kubemill.operator.settings import Settings

DEPLOYMENT = Path(__file__).resolve().parents[2] / "deploy" / "base" / "deployment.yaml"


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(DEPLOYMENT.read_text())
    assert body["kind"] == "Deployment"
    return body


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def health_endpoint(container: dict[str, Any]) -> tuple[int, str]:
    """The port and path kopf serves its health endpoint on in this container."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    url = urlsplit(env.get("KUBEMILL_LIVENESS_ENDPOINT") or Settings().liveness_endpoint)
    assert url.port is not None
    return url.port, url.path


def probe_target(container: dict[str, Any], probe: dict[str, Any]) -> tuple[int, str]:
    """The port number (named ports resolved) and path an httpGet probe asks."""
    port = probe["httpGet"]["port"]
    if isinstance(port, str):
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return port, probe["httpGet"]["path"]


@pytest.mark.parametrize("kind", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_ask_the_health_endpoint(container: dict[str, Any], kind: str) -> None:
    assert probe_target(container, container[kind]) == health_endpoint(container)


def test_a_stuck_rollout_is_reported_after_a_slow_start_is_allowed_for(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    # Below the startupProbe's budget plus minReadySeconds, a slow but healthy start would be
    # reported as failed; without a deadline, `kubectl rollout status` would wait out a crash
    # loop forever; without minReadySeconds, a pod Ready for a moment before crashing passes.
    spec = deployment["spec"]
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert spec["minReadySeconds"] > 0
    assert budget + spec["minReadySeconds"] < spec["progressDeadlineSeconds"] <= 300


def test_the_operator_runs_with_least_privilege(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    own = container["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert {**pod, **own}["seccompProfile"] == {"type": "RuntimeDefault"}
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    assert not own["capabilities"].get("add")


def test_the_operator_creates_configmaps_and_never_reads_them_or_secrets() -> None:
    # It creates the ConfigMaps that carry runs' parameters, and adopts one that exists from
    # the 409 alone; reading any would expose every ConfigMap in the cluster to it.
    rbac = DEPLOYMENT.with_name("rbac.yaml")
    (role,) = [d for d in yaml.safe_load_all(rbac.read_text()) if d["kind"] == "ClusterRole"]
    core: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "" in rule["apiGroups"]:
            for resource in rule["resources"]:
                core.setdefault(resource, set()).update(rule["verbs"])
    assert core["configmaps"] == {"create"}
    assert "secrets" not in core


KINDS = ("notebookruns", "notebookschedules", "notebookworkflows")


def _kubemill_rules(file: str, role: str) -> dict[str, set[str]]:
    """Verbs by kubemill.dev resource in the ClusterRole `role` of deploy/base/`file`."""
    documents = yaml.safe_load_all(DEPLOYMENT.with_name(file).read_text())
    (found,) = [
        d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"] == role
    ]
    verbs: dict[str, set[str]] = {}
    for rule in found["rules"]:
        if "kubemill.dev" in rule["apiGroups"]:
            for resource in rule["resources"]:
                verbs.setdefault(resource, set()).update(rule["verbs"])
    return verbs


def test_the_operator_writes_only_status_of_what_people_own() -> None:
    """Schedules and workflows are read, their status patched, and their runs owned with
    blockOwnerDeletion (finalizers); runs are created, deleted and read by name (a 409 on a
    workflow step's run), their status patched; a schedule's workflows are created and
    deleted, never read by name or updated."""
    assert _kubemill_rules("rbac.yaml", "kubemill-operator") == {
        "notebookruns": {"get", "list", "watch", "create", "delete"},
        **{f"{kind}/status": {"patch"} for kind in KINDS},
        **{f"{kind}/finalizers": {"update"} for kind in KINDS},
        "notebookschedules": {"list", "watch"},
        "notebookworkflows": {"list", "watch", "create", "delete"},
    }


def test_people_get_the_same_rights_on_every_kind() -> None:
    edit = _kubemill_rules("user-roles.yaml", "kubemill-edit")
    view = _kubemill_rules("user-roles.yaml", "kubemill-view")
    read = {"get", "list", "watch"}
    assert edit == {
        **{kind: read | {"create", "update", "patch", "delete", "deletecollection"}
           for kind in KINDS},
        **{f"{kind}/status": read for kind in KINDS},
    }  # fmt: skip
    assert view == {resource: read for kind in KINDS for resource in (kind, f"{kind}/status")}
