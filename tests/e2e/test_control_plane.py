"""Self-tests proving the test cluster is real: controllers, RBAC, admission, and pods that run.

Each test would fail against a mocked API server: Jobs need the real job controller, the 403
needs RBAC, the rejection needs PodSecurity admission, logs need the kubelet endpoint.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubemill_testenv import kube, procs, wait
from kubemill_testenv.controlplane import REPO_ROOT
from kubemill_testenv.kube import JSON
from kubemill_testenv.kubeconfig import api_client

from .conftest import Cluster

pytestmark = pytest.mark.e2e

TIMEOUT = 60


def job_manifest(
    cluster: Cluster,
    name: str,
    script: str,
    *,
    backoff_limit: int = 0,
    active_deadline: int | None = None,
    grace: int = 30,
    extra_args: tuple[str, ...] = (),
) -> JSON:
    spec: JSON = {
        "backoffLimit": backoff_limit,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": grace,
                "containers": [
                    {
                        "name": "main",
                        "image": cluster.image,
                        "command": ["python", "-c", textwrap.dedent(script), *extra_args],
                    }
                ],
            }
        },
    }
    if active_deadline is not None:
        spec["activeDeadlineSeconds"] = active_deadline
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def create(api: client.ApiClient, path: str, body: JSON) -> JSON:
    return kube.request(api, "POST", path, body=body)


def jobs(namespace: str) -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs"


def pods(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


def terminated(pod: JSON) -> JSON | None:
    for status in pod.get("status", {}).get("containerStatuses") or []:
        state = status.get("state", {}).get("terminated")
        if state:
            return dict(state)
    return None


def container_processes_with(marker: str) -> list[int]:
    """PIDs (seen from the host) of processes whose command line contains ``marker`` and that
    run inside a container of the node agent: in a runc cgroup under ``/kubemill/``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if marker.encode() in cmdline and ":/kubemill/" in cgroups:
            found.append(int(entry.name))
    return found


def test_job_completes_and_its_log_is_readable(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    create(
        api,
        jobs(namespace),
        job_manifest(
            cluster,
            "hello",
            """
            print("hello from a kubemill pod")
            with open("/dev/termination-log", "w") as f:
                f.write("all done")
            """,
        ),
    )
    job = wait.wait_for(
        api, jobs(namespace), wait.job_finished, name="hello", timeout=TIMEOUT, what="job hello"
    )
    assert wait.condition(job, "Complete") is not None, job["status"]
    assert job["status"]["succeeded"] == 1

    pod = kube.get(api, pods(namespace), labelSelector="job-name=hello")["items"][0]
    assert pod["status"]["phase"] == "Succeeded"
    state = terminated(pod)
    assert state is not None
    assert state["exitCode"] == 0
    assert state["reason"] == "Completed"
    assert state["message"] == "all done"
    assert state["startedAt"] <= state["finishedAt"]

    logs = cluster.kubectl("logs", "-n", namespace, "job/hello")
    assert logs.stdout == "hello from a kubemill pod\n"


def test_failing_pod_exhausts_backoff_limit(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    create(
        api,
        jobs(namespace),
        job_manifest(cluster, "fails", "raise SystemExit(1)", backoff_limit=2),
    )
    # The job controller waits 10 s, then 20 s, between retries.
    job = wait.wait_for(
        api, jobs(namespace), wait.job_finished, name="fails", timeout=TIMEOUT + 60, what="job"
    )
    failed = wait.condition(job, "Failed")
    assert failed is not None, job["status"]
    assert failed["reason"] == "BackoffLimitExceeded"
    assert job["status"]["failed"] == 3

    pod_list = kube.get(api, pods(namespace), labelSelector="job-name=fails")["items"]
    assert len(pod_list) == 3
    for pod in pod_list:
        assert pod["status"]["phase"] == "Failed"
        state = terminated(pod)
        assert state is not None
        assert (state["exitCode"], state["reason"]) == (1, "Error")


def test_active_deadline_fails_job_and_sends_sigterm(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    since = wait.resource_version(api, pods(namespace))
    script = """
        import signal, sys, time

        def on_term(signum, frame):
            # The marker: written from the handler, read back through the pod's status.
            with open("/dev/termination-log", "w") as f:
                f.write("got SIGTERM")
            sys.exit(143)

        signal.signal(signal.SIGTERM, on_term)
        print("waiting for the deadline", flush=True)
        while True:
            time.sleep(0.1)
    """
    create(
        api,
        jobs(namespace),
        job_manifest(cluster, "slow", script, active_deadline=5, grace=20),
    )
    job = wait.wait_for(
        api, jobs(namespace), wait.job_finished, name="slow", timeout=TIMEOUT, what="job slow"
    )
    failed = wait.condition(job, "Failed")
    assert failed is not None, job["status"]
    assert failed["reason"] == "DeadlineExceeded"

    def got_sigterm(_event: str, pod: Any) -> bool:
        state = terminated(pod)
        return state is not None and state.get("message") == "got SIGTERM"

    pod = wait.wait_for(
        api,
        pods(namespace),
        got_sigterm,
        label_selector="job-name=slow",
        since=since,
        timeout=TIMEOUT,
        what="the pod's SIGTERM marker",
    )
    state = terminated(pod)
    assert state is not None
    assert state["exitCode"] == 143


def test_deleting_a_job_garbage_collects_pods_and_processes(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    marker = f"kubemill-gc-{secrets.token_hex(6)}"
    create(
        api,
        jobs(namespace),
        job_manifest(
            cluster,
            "long",
            "import time\nwhile True: time.sleep(0.1)",
            extra_args=(marker,),
            # PID 1 of its namespace ignores SIGTERM without a handler, as in a container, so
            # the process is SIGKILLed once this grace period is over.
            grace=2,
        ),
    )
    pod = wait.wait_for(
        api,
        pods(namespace),
        wait.pod_phase("Running"),
        label_selector="job-name=long",
        timeout=TIMEOUT,
        what="the job's pod to run",
    )
    if cluster.local:
        # Running is reported once runc has started the container; its process may still be
        # `runc init` for a moment before it becomes the command (seen under load).
        procs.wait_until(
            lambda: bool(container_processes_with(marker)), 10, "the pod's process in runc"
        )

    kube.request(
        api,
        "DELETE",
        f"{jobs(namespace)}/long",
        body={"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"},
    )
    wait.wait_gone(
        api, pods(namespace), pod["metadata"]["name"], timeout=TIMEOUT, what="the pod's removal"
    )
    if cluster.local:
        procs.wait_until(
            lambda: not container_processes_with(marker), 10, "the pod's processes to end"
        )


def test_service_account_without_rights_is_forbidden(
    cluster: Cluster,
    api: client.ApiClient,
    namespace: str,
    service_account_kubeconfig: Callable[[str, str], Path],
) -> None:
    create(
        api,
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}},
    )
    kubeconfig = service_account_kubeconfig(namespace, "nobody")
    with api_client(kubeconfig) as sa_api:
        with pytest.raises(ApiException) as denied:
            kube.get(sa_api, pods(namespace))
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:nobody" in str(denied.value.body)

        # Positive control: the same identity is allowed once a Role grants it.
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
        create(
            api,
            f"{rbac}/roles",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
            },
        )
        create(
            api,
            f"{rbac}/rolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "nobody-reads-pods"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "pod-reader",
                },
                "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
            },
        )
        # The API server's RBAC authorizer learns of the binding through its own informer, a
        # moment later; nothing reports when, so the GET is retried while it is still refused.
        deadline = time.monotonic() + 10
        while True:
            try:
                listed = kube.get(sa_api, pods(namespace))
                break
            except ApiException as e:
                if e.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert listed["items"] == []


def restricted_pod(cluster: Cluster, name: str, script: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": cluster.image,
                    "command": ["python", "-c", textwrap.dedent(script)],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }


def test_pod_security_rejects_privileged_pod_in_restricted_namespace(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    kube.merge_patch(
        api,
        f"/api/v1/namespaces/{namespace}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": cluster.image,
                    "command": ["python", "-c", "pass"],
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    with pytest.raises(ApiException) as rejected:
        create(api, pods(namespace), privileged)
    assert rejected.value.status == 403
    assert "violates PodSecurity" in str(rejected.value.body)

    # Positive control: a pod that meets "restricted" is admitted, and runs as the user it names
    # with a read-only root while its volume stays writable.
    script = """
        import json, os
        try:
            open("/kubemill-rootfs-probe", "w")
            root = "writable"
        except OSError as e:
            root = e.strerror
        with open("/scratch/ok", "w") as f:
            f.write("ok")
        with open("/dev/termination-log", "w") as f:
            json.dump({"uid": os.getuid(), "gid": os.getgid(), "root": root}, f)
    """
    create(api, pods(namespace), restricted_pod(cluster, "restricted", script))
    pod = wait.wait_for(
        api,
        pods(namespace),
        wait.pod_phase("Succeeded", "Failed"),
        name="restricted",
        timeout=TIMEOUT,
        what="the restricted pod to finish",
    )
    state = terminated(pod)
    assert state is not None and state["exitCode"] == 0, pod["status"]
    assert json.loads(state["message"]) == {
        "uid": 1000,
        "gid": 1000,
        "root": "Read-only file system",
    }


def test_invalid_crd_schema_is_rejected(api: client.ApiClient) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.e2e.kubemill.dev"},
        "spec": {
            "group": "e2e.kubemill.dev",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            # Not a structural schema: a property without a type.
                            "properties": {"spec": {"properties": {"size": {}}}},
                        }
                    },
                }
            ],
        },
    }
    with pytest.raises(ApiException) as rejected:
        create(api, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert rejected.value.status == 422
    assert "must not be empty for specified object fields" in str(rejected.value.body)


def test_pod_sees_volumes_and_environment_as_a_kubelet_builds_them(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    ns_path = f"/api/v1/namespaces/{namespace}"
    create(
        api,
        f"{ns_path}/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"greeting": "hello", "mode": "fast"},
        },
    )
    create(
        api,
        f"{ns_path}/secrets",
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "s3cret", "user": "ada"},
        },
    )
    script = """
        import json, os
        def read(path):
            with open(path) as f:
                return f.read()
        out = {
            "env": {k: os.environ.get(k) for k in (
                "PLAIN", "EXPANDED", "FROM_SECRET", "FROM_CM", "POD_NAME", "POD_NAMESPACE",
                "POD_UID", "TEAM", "CFG_mode", "user",
            )},
            "cwd": os.getcwd(),
            "config": read("/etc/settings/greeting"),
            "secret": read("/etc/creds/password"),
            "labels": read("/etc/podinfo/labels"),
            "token": len(read("/var/run/secrets/kubernetes.io/serviceaccount/token")) > 0,
            "sa_namespace": read("/var/run/secrets/kubernetes.io/serviceaccount/namespace"),
            "in_cluster": bool(os.environ.get("KUBERNETES_SERVICE_HOST")),
        }
        with open("/work/out.txt", "w") as f:
            f.write("scratch is writable")
        with open("/tmp/msg", "w") as f:
            json.dump(out, f)
        with open("/dev/termination-log", "w") as f:
            json.dump(out, f)
    """
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "env-and-volumes", "labels": {"team": "reports"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": cluster.image,
                    "command": ["python", "-c", textwrap.dedent(script)],
                    "workingDir": "/work",
                    "env": [
                        {"name": "PLAIN", "value": "plain"},
                        {"name": "EXPANDED", "value": "$(PLAIN)-and-more"},
                        {
                            "name": "FROM_SECRET",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}},
                        },
                        {
                            "name": "FROM_CM",
                            "valueFrom": {
                                "configMapKeyRef": {"name": "settings", "key": "greeting"}
                            },
                        },
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                        {
                            "name": "POD_NAMESPACE",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {
                            "name": "POD_UID",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}},
                        },
                        {
                            "name": "TEAM",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}},
                        },
                    ],
                    "envFrom": [
                        {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                        {"secretRef": {"name": "creds"}},
                    ],
                    "volumeMounts": [
                        {"name": "work", "mountPath": "/work"},
                        {"name": "tmp", "mountPath": "/tmp"},
                        {"name": "settings", "mountPath": "/etc/settings"},
                        {"name": "creds", "mountPath": "/etc/creds"},
                        {"name": "podinfo", "mountPath": "/etc/podinfo"},
                    ],
                    "securityContext": {"readOnlyRootFilesystem": True},
                }
            ],
            "volumes": [
                {"name": "work", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "creds"}},
                {
                    "name": "podinfo",
                    "downwardAPI": {
                        "items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
                    },
                },
            ],
        },
    }
    created = create(api, pods(namespace), pod)
    done = wait.wait_for(
        api,
        pods(namespace),
        wait.pod_phase("Succeeded", "Failed"),
        name="env-and-volumes",
        timeout=TIMEOUT,
        what="the pod to finish",
    )
    state = terminated(done)
    assert state is not None and state["exitCode"] == 0, done["status"]
    seen = json.loads(state["message"])
    assert seen == {
        "env": {
            "PLAIN": "plain",
            "EXPANDED": "plain-and-more",
            "FROM_SECRET": "s3cret",
            "FROM_CM": "hello",
            "POD_NAME": "env-and-volumes",
            "POD_NAMESPACE": namespace,
            "POD_UID": created["metadata"]["uid"],
            "TEAM": "reports",
            "CFG_mode": "fast",
            "user": "ada",
        },
        "cwd": "/work",
        "config": "hello",
        "secret": "s3cret",
        "labels": 'team="reports"',
        "token": True,
        "sa_namespace": namespace,
        "in_cluster": True,
    }


def test_pod_deletion_sends_sigterm_then_sigkill_after_the_grace_period(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    script = """
        import signal, time

        def on_term(signum, frame):
            # Acknowledge, then keep running: only SIGKILL can end this process now.
            with open("/dev/termination-log", "w") as f:
                f.write("TERM received")

        signal.signal(signal.SIGTERM, on_term)
        print("armed", flush=True)
        while True:
            time.sleep(0.1)
    """
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stubborn"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "main",
                    "image": cluster.image,
                    "command": ["python", "-c", textwrap.dedent(script)],
                }
            ],
        },
    }
    create(api, pods(namespace), pod)
    wait.wait_for(
        api,
        pods(namespace),
        wait.pod_phase("Running"),
        name="stubborn",
        timeout=TIMEOUT,
        what="the pod to run",
    )
    # Running means exec'd, not that the handler is installed yet; its log line says so.
    procs.wait_until(
        lambda: "armed" in kube.text(api, f"{pods(namespace)}/stubborn/log"),
        TIMEOUT,
        "the SIGTERM handler",
    )
    since = wait.resource_version(api, pods(namespace))
    kube.request(api, "DELETE", f"{pods(namespace)}/stubborn")

    def killed(_event: str, obj: Any) -> bool:
        return terminated(obj) is not None

    last = wait.wait_for(
        api,
        pods(namespace),
        killed,
        name="stubborn",
        since=since,
        timeout=TIMEOUT,
        what="the pod's final status",
    )
    state = terminated(last)
    assert state is not None
    assert (state["exitCode"], state.get("message")) == (137, "TERM received")
    wait.wait_gone(api, pods(namespace), "stubborn", timeout=TIMEOUT, what="the pod's removal")


def test_finished_job_is_deleted_after_its_ttl(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    manifest = job_manifest(cluster, "brief", "print('done')")
    manifest["spec"]["ttlSecondsAfterFinished"] = 0
    create(api, jobs(namespace), manifest)
    wait.wait_gone(
        api, jobs(namespace), "brief", timeout=TIMEOUT, what="the ttl-after-finished controller"
    )


def test_resource_quota_admits_up_to_its_limit_and_refuses_beyond(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    """Quota usage is counted by the resourcequota controller; without it a namespace with any
    quota refuses everything the quota covers ("status unknown for quota")."""
    create(
        api,
        f"/api/v1/namespaces/{namespace}/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "one-job"},
            "spec": {"hard": {"count/jobs.batch": "1"}},
        },
    )

    def counted(event: str, quota: JSON) -> bool:
        return event != "DELETED" and "count/jobs.batch" in quota.get("status", {}).get("used", {})

    wait.wait_for(
        api, f"/api/v1/namespaces/{namespace}/resourcequotas", counted, name="one-job",
        timeout=TIMEOUT, what="the quota's first count",
    )  # fmt: skip
    # Suspended: the quota is about the Jobs, no pod need run.
    first = job_manifest(cluster, "first", "pass")
    first["spec"]["suspend"] = True
    create(api, jobs(namespace), first)
    second = job_manifest(cluster, "second", "pass")
    second["spec"]["suspend"] = True
    with pytest.raises(ApiException) as refused:
        create(api, jobs(namespace), second)
    assert refused.value.status == 403
    assert "exceeded quota: one-job" in json.loads(refused.value.body)["message"]


def test_pod_disruption_budget_gets_its_status(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    """Allowed disruptions come from the disruption controller; without it an eviction of any
    pod a budget covers is refused for ever."""
    budgets = f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets"
    create(
        api,
        budgets,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "keep-one"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "none-yet"}}},
        },
    )

    def observed(event: str, pdb: JSON) -> bool:
        return event != "DELETED" and pdb.get("status", {}).get("observedGeneration") == 1

    pdb = wait.wait_for(
        api, budgets, observed, name="keep-one", timeout=TIMEOUT, what="the budget's status"
    )
    assert pdb["status"]["expectedPods"] == 0
    assert pdb["status"]["disruptionsAllowed"] == 0
    assert wait.condition(pdb, "DisruptionAllowed") is not None, pdb["status"]


# -- the node agent's runtime: images under runc ------------------------------------------------

local_only = pytest.mark.usefixtures("local_cluster")


@pytest.fixture
def local_cluster(cluster: Cluster) -> Cluster:
    """These tests check what our node agent does under runc; a real kubelet differs in detail
    (messages, timings), so they run only on the local cluster."""
    if not cluster.local:
        pytest.skip("checks the local node agent's runtime")
    return cluster


def bare_pod(cluster: Cluster, name: str, container: JSON, **spec: Any) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": cluster.image, **container}],
            **spec,
        },
    }


def container_status(pod: JSON) -> JSON:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def waiting_reason(reason: str) -> Callable[[str, JSON], bool]:
    def check(event: str, pod: JSON) -> bool:
        state = container_status(pod).get("state", {})
        return event != "DELETED" and state.get("waiting", {}).get("reason") == reason

    return check


def finished(event: str, pod: JSON) -> bool:
    return event != "DELETED" and terminated(pod) is not None


def events_of(api: client.ApiClient, namespace: str, pod: str) -> list[JSON]:
    items = kube.get(
        api,
        f"/api/v1/namespaces/{namespace}/events",
        fieldSelector=f"involvedObject.name={pod}",
    )["items"]
    return list(items)


@local_only
def test_image_not_in_the_store_waits_in_image_pull_backoff(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    image = "registry.invalid/kubemill/absent:1"
    create(api, pods(namespace), bare_pod(cluster, "absent", {"image": image}))
    pod = wait.wait_for(
        api, pods(namespace), waiting_reason("ErrImagePull"), name="absent",
        timeout=TIMEOUT, what="ErrImagePull",
    )  # fmt: skip
    expected = (
        f'failed to pull and unpack image "{image}": not found in this node\'s local image store '
        "(this node pulls nothing; build it with make images)"
    )
    assert container_status(pod)["state"]["waiting"]["message"] == expected
    pod = wait.wait_for(
        api, pods(namespace), waiting_reason("ImagePullBackOff"), name="absent",
        timeout=TIMEOUT, what="ImagePullBackOff",
    )  # fmt: skip
    assert expected in container_status(pod)["state"]["waiting"]["message"]
    assert pod["status"]["phase"] == "Pending"
    failed = [e for e in events_of(api, namespace, "absent") if e["reason"] == "Failed"]
    assert any(expected in e["message"] and e["type"] == "Warning" for e in failed), failed


@local_only
def test_missing_executable_is_a_start_error_never_running(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    create(api, pods(namespace), bare_pod(cluster, "nobin", {"command": ["no-such-binary"]}))
    pod = wait.wait_for(
        api, pods(namespace), finished, name="nobin", timeout=TIMEOUT, what="the start error"
    )
    state = terminated(pod)
    assert state is not None
    assert (state["exitCode"], state["reason"]) == (128, "StartError")
    assert 'exec: "no-such-binary": executable file not found in $PATH' in state["message"]
    assert pod["status"]["phase"] == "Failed"
    reasons = {e["reason"] for e in events_of(api, namespace, "nobin")}
    assert "Started" not in reasons

    # With restartPolicy Always a start error is retried with the kubelet's back-off.
    body = bare_pod(cluster, "nobin-always", {"command": ["no-such-binary"]})
    body["spec"]["restartPolicy"] = "Always"
    create(api, pods(namespace), body)
    pod = wait.wait_for(
        api, pods(namespace), waiting_reason("CrashLoopBackOff"), name="nobin-always",
        timeout=TIMEOUT, what="CrashLoopBackOff after a start error",
    )  # fmt: skip
    assert container_status(pod)["lastState"]["terminated"]["reason"] == "StartError"


@local_only
def test_container_is_running_only_once_its_process_runs(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    marker = f"kubemill-start-{secrets.token_hex(6)}"
    container = {
        "command": ["python", "-c", "import time\nwhile True: time.sleep(0.1)", marker],
        "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
    }
    create(api, pods(namespace), bare_pod(cluster, "started", container))
    pod = wait.wait_for(
        api, pods(namespace), wait.pod_phase("Running"), name="started",
        timeout=TIMEOUT, what="Running",
    )  # fmt: skip
    # No wait: runc's poststart hook had reported the started process before Running was
    # written, so the run's cgroup has it already (its argv follows a moment later, once runc's
    # init has exec'd it).
    uid = pod["metadata"]["uid"]
    cgroups = list(Path("/sys/fs/cgroup/memory/kubemill").glob(f"*/pod{uid}/main-0"))
    assert len(cgroups) == 1, cgroups
    assert (cgroups[0] / "cgroup.procs").read_text().split(), "Running before the process"
    procs.wait_until(lambda: container_processes_with(marker), 10, "the container's command")
    pids = container_processes_with(marker)
    status = container_status(pod)
    assert status["imageID"].startswith("sha256:")
    assert status["image"] == cluster.image
    assert status["containerID"]
    cgroup = Path(f"/proc/{pids[0]}/cgroup").read_text()
    memory_path = next(line.split(":", 2)[2] for line in cgroup.splitlines() if ":memory:" in line)
    limit = Path(f"/sys/fs/cgroup/memory{memory_path}/memory.limit_in_bytes").read_text()
    assert int(limit) == 128 * 2**20
    quota = Path(f"/sys/fs/cgroup/cpu{memory_path}/cpu.cfs_quota_us").read_text()
    assert int(quota) == 50_000


@local_only
def test_memory_limit_ends_in_oom_killed(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    container = {
        "command": ["python", "-c", "b = bytearray(400 * 2**20)"],
        "resources": {"limits": {"memory": "64Mi"}},
    }
    create(api, pods(namespace), bare_pod(cluster, "oom", container))
    pod = wait.wait_for(api, pods(namespace), finished, name="oom", timeout=TIMEOUT, what="OOM")
    state = terminated(pod)
    assert state is not None
    assert (state["exitCode"], state["reason"]) == (137, "OOMKilled")


@local_only
def test_security_context_is_enforced_by_the_kernel(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    script = """
        import json, os, subprocess, sys
        status = dict(
            line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
        )
        def writable(path):
            try:
                open(path, "w").close()
                return True
            except OSError:
                return False
        out = {
            "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
            "CapEff": status["CapEff"], "CapBnd": status["CapBnd"],
            "NoNewPrivs": status["NoNewPrivs"], "Seccomp": status["Seccomp"],
            "root_writable": writable("/x"), "tmp_writable": writable("/tmp/y"),
            "hostname": open("/etc/hostname").read().strip(), "uname": os.uname().nodename,
            "host_paths_visible": [p for p in sys.argv[1:] if os.path.exists(p)],
        }
        with open("/dev/termination-log", "w") as f:
            json.dump(out, f)
    """
    # This checkout and its environment exist on the host, wherever the clone is; a pod must
    # see neither (it runs its image, not the clone's code).
    host_paths = [str(REPO_ROOT / "pyproject.toml"), sys.prefix]
    assert all(os.path.exists(p) for p in host_paths)
    container = {
        "command": ["python", "-c", textwrap.dedent(script), *host_paths],
        "securityContext": {
            "runAsUser": 10001,
            "runAsGroup": 10002,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    body = bare_pod(
        cluster, "locked", container,
        securityContext={"supplementalGroups": [3000]},
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )  # fmt: skip
    create(api, pods(namespace), body)
    pod = wait.wait_for(api, pods(namespace), finished, name="locked", timeout=TIMEOUT, what="end")
    state = terminated(pod)
    assert state is not None and state["exitCode"] == 0, state
    out = json.loads(state["message"])
    assert (out["uid"], out["gid"]) == (10001, 10002)
    assert 3000 in out["groups"]
    assert out["CapEff"] == "0000000000000000"
    assert out["CapBnd"] == "0000000000000000"
    assert out["NoNewPrivs"] == "1"
    assert out["Seccomp"] == "2"
    assert out["root_writable"] is False
    assert out["tmp_writable"] is True
    assert out["hostname"] == out["uname"] == "locked"
    assert out["host_paths_visible"] == []


@local_only
def test_root_container_keeps_the_default_capabilities_without_seccomp(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    script = """
        status = dict(
            line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines()
        )
        open("/dev/termination-log", "w").write(status["CapEff"] + " " + status["Seccomp"])
    """
    container = {
        "command": ["python", "-c", textwrap.dedent(script)],
        "securityContext": {"runAsUser": 0},
    }
    create(api, pods(namespace), bare_pod(cluster, "rooted", container))
    pod = wait.wait_for(api, pods(namespace), finished, name="rooted", timeout=TIMEOUT, what="end")
    state = terminated(pod)
    assert state is not None and state["exitCode"] == 0, state
    # containerd's 14 default capabilities (CHOWN ... SETFCAP), unconfined.
    assert state["message"] == "00000000a80425fb 0"


SLEEPER = [
    "python",
    "-c",
    "open('/tmp/ready', 'w').close()\nimport time\nwhile True: time.sleep(0.1)",
]


def pod_condition(pod: JSON, kind: str) -> str | None:
    for c in pod.get("status", {}).get("conditions") or []:
        if c["type"] == kind:
            return str(c["status"])
    return None


@local_only
def test_readiness_comes_from_exec_probes(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    def sleeper(name: str, probe_command: list[str]) -> JSON:
        probe = {"exec": {"command": probe_command}, "periodSeconds": 1, "failureThreshold": 1}
        container = {
            "command": SLEEPER,
            "readinessProbe": probe,
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }
        return bare_pod(
            cluster, name, container, restartPolicy="Always",
            volumes=[{"name": "tmp", "emptyDir": {}}],
        )  # fmt: skip

    create(api, pods(namespace), sleeper("ready", ["cat", "/tmp/ready"]))
    create(api, pods(namespace), sleeper("unready", ["false"]))

    def ready(event: str, pod: JSON) -> bool:
        return event != "DELETED" and pod_condition(pod, "Ready") == "True"

    pod = wait.wait_for(api, pods(namespace), ready, name="ready", timeout=TIMEOUT, what="Ready")
    assert container_status(pod)["ready"] is True
    assert pod_condition(pod, "ContainersReady") == "True"

    def unhealthy(event: str, obj: JSON) -> bool:
        return bool(obj["reason"] == "Unhealthy" and obj["involvedObject"]["name"] == "unready")

    wait.wait_for(
        api, f"/api/v1/namespaces/{namespace}/events", unhealthy,
        timeout=TIMEOUT, what="a failed readiness probe",
    )  # fmt: skip
    pod = kube.get(api, f"{pods(namespace)}/unready")
    assert pod["status"]["phase"] == "Running"
    status = container_status(pod)
    assert "running" in status["state"]
    assert status["ready"] is False
    assert status["started"] is True
    assert pod_condition(pod, "Ready") == "False"
    assert pod_condition(pod, "ContainersReady") == "False"


@local_only
def test_failing_liveness_probe_restarts_the_container(
    cluster: Cluster, api: client.ApiClient, namespace: str
) -> None:
    container = {
        "command": SLEEPER,
        "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1,
                          "failureThreshold": 1},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }  # fmt: skip
    body = bare_pod(
        cluster, "alive", container, restartPolicy="Always",
        volumes=[{"name": "tmp", "emptyDir": {}}],
    )  # fmt: skip
    create(api, pods(namespace), body)

    def restarted(event: str, pod: JSON) -> bool:
        return event != "DELETED" and container_status(pod).get("restartCount", 0) >= 1

    # The kubelet's back-off holds the first restart for 10 s.
    pod = wait.wait_for(
        api, pods(namespace), restarted, name="alive", timeout=TIMEOUT, what="a restart"
    )
    last = container_status(pod)["lastState"]["terminated"]
    assert last["reason"] == "Error"
    assert last["exitCode"] in (137, 143)
    reasons = {e["reason"] for e in events_of(api, namespace, "alive")}
    assert {"Unhealthy", "Killing"} <= reasons
