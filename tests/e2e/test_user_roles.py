"""People get kubemill rights through Kubernetes' built-in roles, as deploy/base/user-roles.yaml
promises: `edit` and `admin` may create, change and delete NotebookRuns, NotebookSchedules and
NotebookWorkflows but not write their status, `view` may only read them, and no binding means no
access.

Nothing here grants a kubemill role directly: every right comes from a RoleBinding to a built-in
role, so these tests pass only when the controller-manager's ClusterRole aggregation controller
has copied kubemill-edit and kubemill-view into admin, edit and view. Users are impersonated
from the admin's credentials; an impersonated user is in `system:authenticated`, as a real one.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubemill.operator.meta import GROUP, PLURAL, SCHEDULE_PLURAL, TRIGGER, VERSION
from kubemill.operator.schedules import build_run
from kubemill_testenv import kube, procs, wait
from kubemill_testenv.kube import JSON
from kubemill_testenv.kubeconfig import api_client

from .conftest import Cluster

pytestmark = pytest.mark.e2e

CLUSTER_ROLES = "/apis/rbac.authorization.k8s.io/v1/clusterroles"
# Aggregation is asynchronous: it follows the ClusterRoles' watch, a moment after an apply.
AGGREGATION_TIMEOUT = 30
# The API server's authorizer sees new bindings and rules through its own informer, a moment
# after they are written.
AUTHORIZER_TIMEOUT = 10

# (built-in role, user bound to it in the test namespace)
EDITOR = ("edit", "erin-editor")
OWNER = ("admin", "olga-admin")
VIEWER = ("view", "victor-viewer")
STRANGER = "sam-unbound"

AsUser = Callable[[str], client.ApiClient]
# The NotebookWorkflow resource, as deploy/base/user-roles.yaml names it.
WORKFLOW_PLURAL = "notebookworkflows"


def runs(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def schedules(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCHEDULE_PLURAL}"


def workflows(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{WORKFLOW_PLURAL}"


def workflow_body(name: str) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NotebookWorkflow",
        "metadata": {"name": name},
        "spec": {
            "steps": [{"name": "only", "runTemplate": {"spec": {"notebook": "s3://n/n.ipynb"}}}]
        },
    }


def run_body(name: str) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NotebookRun",
        "metadata": {"name": name},
        "spec": {"notebook": "s3://notebooks/n.ipynb"},
    }


def schedule_body(name: str) -> JSON:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "NotebookSchedule",
        "metadata": {"name": name},
        "spec": {
            "schedule": "@daily",
            "suspend": True,
            "runTemplate": {"spec": {"notebook": "s3://notebooks/n.ipynb"}},
        },
    }


def granting(resource: str, verb: str) -> wait.Predicate:
    """The ClusterRole has a rule allowing ``verb`` on kubemill's ``resource``."""

    def check(event: str, role: JSON) -> bool:
        return event != "DELETED" and any(
            GROUP in rule.get("apiGroups", [])
            and resource in rule.get("resources", [])
            and verb in rule.get("verbs", [])
            for rule in role.get("rules") or []
        )

    return check


@pytest.fixture(scope="module")
def aggregated(kubemill_installed: Cluster, api: client.ApiClient) -> Cluster:
    """deploy/base is applied; return once admin, edit and view carry kubemill's rules.

    Waiting on the rules themselves, never on time, is also the check that the aggregation
    controller runs: without it this times out naming the role that lacks them."""
    for role, resource, verb in (
        ("edit", PLURAL, "create"),
        ("admin", PLURAL, "create"),
        ("view", PLURAL, "list"),
        ("edit", SCHEDULE_PLURAL, "create"),
        ("view", SCHEDULE_PLURAL, "list"),
        ("edit", WORKFLOW_PLURAL, "create"),
        ("view", WORKFLOW_PLURAL, "list"),
    ):
        wait.wait_for(
            api,
            CLUSTER_ROLES,
            granting(resource, verb),
            name=role,
            timeout=AGGREGATION_TIMEOUT,
            what=f"kubemill's {verb} {resource} rule aggregated into ClusterRole {role}",
        )
    return kubemill_installed


def can(api: client.ApiClient, user: str, namespace: str, verb: str, resource: str) -> bool:
    """What the API server's authorizer answers for ``user`` now (a SubjectAccessReview)."""
    resource, _, subresource = resource.partition("/")
    review = kube.request(
        api,
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "groups": ["system:authenticated"],
                "resourceAttributes": {
                    "namespace": namespace,
                    "group": GROUP,
                    "resource": resource,
                    "subresource": subresource,
                    "verb": verb,
                },
            },
        },
    )
    return bool(review["status"].get("allowed"))


def bind(
    api: client.ApiClient, namespace: str, role: str, user: str, *, proof: tuple[str, str]
) -> None:
    """Bind ``user`` to the built-in ClusterRole ``role`` in ``namespace`` and return once the
    authorizer allows ``proof`` (verb, resource), the right the binding is made for."""
    kube.request(
        api,
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-{role}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    procs.wait_until(
        lambda: can(api, user, namespace, *proof),
        AUTHORIZER_TIMEOUT,
        f"the authorizer to let {user} ({role}) {proof[0]} {proof[1]}",
    )


@pytest.fixture
def as_user(cluster: Cluster) -> Iterator[AsUser]:
    """``as_user(name)``: an API client that acts as ``name`` (impersonated by the admin)."""
    clients: list[client.ApiClient] = []

    def make(user: str) -> client.ApiClient:
        c = api_client(cluster.kubeconfig)
        c.set_default_header("Impersonate-User", user)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def refused(call: Callable[[], object], user: str, verb: str, resource: str) -> None:
    """``call()`` is refused by RBAC for ``user``, with the API server's own wording."""
    with pytest.raises(ApiException) as denied:
        call()
    assert denied.value.status == 403, denied.value.body
    message = json.loads(denied.value.body)["message"]
    assert f'User "{user}" cannot {verb} resource "{resource}"' in message, message


def status_patch(api: client.ApiClient, namespace: str, name: str) -> JSON:
    return kube.merge_patch(
        api, f"{runs(namespace)}/{name}/status", {"status": {"phase": "Succeeded"}}
    )


@pytest.mark.parametrize("binding", [EDITOR, OWNER], ids=["edit", "admin"])
def test_edit_and_admin_manage_runs_schedules_and_workflows_but_not_their_status(
    aggregated: Cluster,
    api: client.ApiClient,
    namespace: str,
    as_user: AsUser,
    binding: tuple[str, str],
) -> None:
    role, user = binding
    bind(api, namespace, role, user, proof=("create", PLURAL))
    person = as_user(user)

    created = kube.request(person, "POST", runs(namespace), body=run_body("report"))
    assert created["metadata"]["name"] == "report"
    assert kube.get(person, f"{runs(namespace)}/report")["spec"]["notebook"]
    assert [r["metadata"]["name"] for r in kube.get(person, runs(namespace))["items"]] == ["report"]
    schedule = kube.request(person, "POST", schedules(namespace), body=schedule_body("daily"))
    assert kube.get(person, f"{schedules(namespace)}/daily")["spec"]["schedule"] == "@daily"
    # What `kubemill backfill` does: a run owned by the schedule, created by the person.
    slot = datetime.datetime(2026, 11, 27, tzinfo=datetime.UTC)
    backfilled = build_run(schedule, slot, "daily-backfilled", "backfill")
    kube.request(person, "POST", runs(namespace), body=backfilled)
    # What `kubemill trigger` does: an annotation on the schedule.
    triggered = kube.merge_patch(
        person,
        f"{schedules(namespace)}/daily",
        {"metadata": {"annotations": {TRIGGER: "by-hand-1"}}},
    )
    assert triggered["metadata"]["annotations"][TRIGGER] == "by-hand-1"

    kube.request(person, "POST", workflows(namespace), body=workflow_body("pipeline"))
    changed = kube.merge_patch(
        person, f"{workflows(namespace)}/pipeline", {"spec": {"failFast": True}}
    )
    assert changed["spec"]["failFast"] is True

    # Only the operator writes a run's status: its outcome cannot be forged by its author.
    refused(lambda: status_patch(person, namespace, "report"), user, "patch", f"{PLURAL}/status")
    refused(
        lambda: kube.merge_patch(
            person, f"{workflows(namespace)}/pipeline/status", {"status": {"phase": "Succeeded"}}
        ),
        user, "patch", f"{WORKFLOW_PLURAL}/status",
    )  # fmt: skip
    # Positive control: the same patch is valid, and the admin may make it.
    assert status_patch(api, namespace, "report")["status"]["phase"] == "Succeeded"

    kube.request(person, "DELETE", f"{runs(namespace)}/report")
    kube.request(person, "DELETE", f"{runs(namespace)}/daily-backfilled")
    kube.request(person, "DELETE", f"{schedules(namespace)}/daily")
    kube.request(person, "DELETE", f"{workflows(namespace)}/pipeline")
    wait.wait_gone(api, runs(namespace), "report", timeout=30, what="the run's deletion")
    wait.wait_gone(
        api, workflows(namespace), "pipeline", timeout=30, what="the workflow's deletion"
    )
    wait.wait_gone(api, schedules(namespace), "daily", timeout=30, what="the schedule's deletion")


def test_view_reads_runs_schedules_and_workflows_and_changes_nothing(
    aggregated: Cluster, api: client.ApiClient, namespace: str, as_user: AsUser
) -> None:
    kube.request(api, "POST", runs(namespace), body=run_body("report"))
    kube.request(api, "POST", schedules(namespace), body=schedule_body("daily"))
    kube.request(api, "POST", workflows(namespace), body=workflow_body("pipeline"))
    role, user = VIEWER
    bind(api, namespace, role, user, proof=("list", PLURAL))
    person = as_user(user)

    # (Not the runs the operator makes for the workflow's steps, when it runs in this cluster.)
    listed = kube.get(person, runs(namespace), labelSelector="!kubemill.dev/workflow")
    assert [r["metadata"]["name"] for r in listed["items"]] == ["report"]
    assert kube.get(person, f"{runs(namespace)}/report")["metadata"]["name"] == "report"
    assert kube.get(person, f"{runs(namespace)}/report/status")["metadata"]["name"] == "report"
    assert [s["metadata"]["name"] for s in kube.get(person, schedules(namespace))["items"]] == [
        "daily"
    ]
    assert kube.get(person, f"{schedules(namespace)}/daily")["spec"]["schedule"] == "@daily"
    assert [w["metadata"]["name"] for w in kube.get(person, workflows(namespace))["items"]] == [
        "pipeline"
    ]
    assert kube.get(person, f"{workflows(namespace)}/pipeline/status")["metadata"]["name"]

    refused(
        lambda: kube.request(person, "POST", runs(namespace), body=run_body("mine")),
        user, "create", PLURAL,
    )  # fmt: skip
    refused(
        lambda: kube.request(person, "POST", schedules(namespace), body=schedule_body("mine")),
        user, "create", SCHEDULE_PLURAL,
    )  # fmt: skip
    refused(
        lambda: kube.merge_patch(
            person, f"{schedules(namespace)}/daily", {"metadata": {"annotations": {TRIGGER: "x"}}}
        ),
        user, "patch", SCHEDULE_PLURAL,
    )  # fmt: skip
    refused(lambda: status_patch(person, namespace, "report"), user, "patch", f"{PLURAL}/status")
    refused(
        lambda: kube.request(person, "DELETE", f"{runs(namespace)}/report"),
        user, "delete", PLURAL,
    )  # fmt: skip
    refused(
        lambda: kube.request(person, "POST", workflows(namespace), body=workflow_body("mine")),
        user, "create", WORKFLOW_PLURAL,
    )  # fmt: skip
    refused(
        lambda: kube.merge_patch(person, f"{workflows(namespace)}/pipeline", {"spec": {}}),
        user, "patch", WORKFLOW_PLURAL,
    )  # fmt: skip
    refused(
        lambda: kube.request(person, "DELETE", f"{workflows(namespace)}/pipeline"),
        user, "delete", WORKFLOW_PLURAL,
    )  # fmt: skip


def test_a_user_without_a_binding_is_refused(
    aggregated: Cluster, api: client.ApiClient, namespace: str, as_user: AsUser
) -> None:
    kube.request(api, "POST", runs(namespace), body=run_body("report"))
    # Others are bound in the same namespace; the stranger's refusals are about the stranger.
    bind(api, namespace, *EDITOR, proof=("create", PLURAL))
    person = as_user(STRANGER)

    refused(lambda: kube.get(person, runs(namespace)), STRANGER, "list", PLURAL)
    refused(lambda: kube.get(person, f"{runs(namespace)}/report"), STRANGER, "get", PLURAL)
    refused(
        lambda: kube.request(person, "POST", runs(namespace), body=run_body("mine")),
        STRANGER, "create", PLURAL,
    )  # fmt: skip
    refused(lambda: kube.get(person, schedules(namespace)), STRANGER, "list", SCHEDULE_PLURAL)
    refused(lambda: kube.get(person, workflows(namespace)), STRANGER, "list", WORKFLOW_PLURAL)
