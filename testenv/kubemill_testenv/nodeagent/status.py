"""A pod's status as the kubelet reports it, decided purely from the worker's ``PodState``
(phase, container statuses, conditions), and written with one merge patch."""

from __future__ import annotations

import logging

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from .. import kube
from ..kube import JSON
from .model import ContainerRun, PodState

log = logging.getLogger("kubemill.nodeagent")

TERMINAL = ("Succeeded", "Failed")


def terminated(run: ContainerRun) -> JSON:
    t: JSON = {
        "exitCode": run.exit_code,
        "reason": run.reason,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "containerID": run.container_id,
    }
    if run.message:
        t["message"] = run.message
    return t


def container_status(state: PodState, c: JSON) -> JSON:
    name = c["name"]
    runs = state.runs.get(name, [])
    current = runs[-1] if runs else None
    previous = runs[-2] if len(runs) > 1 else None
    probes = current.probes if current is not None and current.running else None
    status: JSON = {
        "name": name,
        "image": c.get("image", ""),
        "imageID": current.image_id if current is not None else "",
        "restartCount": max(0, len(runs) - 1),
        "ready": probes is not None and probes.ready,
        "started": probes is not None and probes.started,
    }
    if name in state.waiting and (current is None or not current.running):
        reason, message = state.waiting[name]
        waiting: JSON = {"waiting": {"reason": reason}}
        if message:
            waiting["waiting"]["message"] = message
        status["state"] = waiting
        if current is not None:
            status["lastState"] = {"terminated": terminated(current)}
            status["containerID"] = current.container_id
    elif current is not None:
        status["containerID"] = current.container_id
        if current.running:
            status["state"] = {"running": {"startedAt": current.started_at}}
        else:
            status["state"] = {"terminated": terminated(current)}
        if previous is not None:
            status["lastState"] = {"terminated": terminated(previous)}
        else:
            status["lastState"] = {}
    elif state.phase in TERMINAL:
        # Never started, and the pod is over: what the kubelet reports for such a container.
        status["state"] = {
            "terminated": {
                "exitCode": 137,
                "reason": "ContainerStatusUnknown",
                "message": "The container could not be located when the pod was terminated",
            }
        }
    else:
        status["state"] = {"waiting": {"reason": "PodInitializing"}}
    return status


def compute_phase(state: PodState, pod_spec: JSON) -> str:
    if state.phase == "Failed":
        return "Failed"
    if not state.init_done:
        return "Pending"
    policy = pod_spec.get("restartPolicy", "Always")
    latest = [state.runs.get(c["name"], []) for c in pod_spec["containers"]]
    if any(not r for r in latest):
        return "Pending"
    finals = [r[-1] for r in latest]
    if any(r.running for r in finals) or state.next_start:
        return "Running"
    if policy == "Always" and not state.killed:
        return "Running"
    if all(r.exit_code == 0 for r in finals):
        return "Succeeded"
    return "Failed"


def pod_status(state: PodState, pod: JSON, ts: str) -> tuple[JSON, JSON]:
    """The status to write (``state.phase`` already computed), and the same without transition
    times: what tells whether anything changed since the last write."""
    spec = pod["spec"]
    terminal = state.phase in TERMINAL
    containers = [container_status(state, c) for c in spec["containers"]]
    inits = [container_status(state, c) for c in spec.get("initContainers") or []]
    all_running = all(s.get("ready") for s in containers)

    def cond(kind: str, ok: bool, reason: str | None = None) -> JSON:
        c: JSON = {"type": kind, "status": "True" if ok else "False"}
        if reason and not ok:
            c["reason"] = reason
        return c

    not_ready = "PodCompleted" if terminal else "ContainersNotReady"
    conditions = [
        cond("PodReadyToStartContainers", state.volumes_ready and not terminal),
        cond("Initialized", state.init_done or terminal, "ContainersNotInitialized"),
        cond("Ready", all_running and not terminal, not_ready),
        cond("ContainersReady", all_running and not terminal, not_ready),
    ]
    previous = {c["type"]: c for c in pod.get("status", {}).get("conditions") or []}
    for c in conditions:
        old = previous.get(c["type"])
        same = old is not None and old.get("status") == c["status"]
        c["lastTransitionTime"] = old.get("lastTransitionTime", ts) if same and old else ts
        c["lastProbeTime"] = None
    managed = {c["type"] for c in conditions}
    conditions += [c for t, c in previous.items() if t not in managed]
    status: JSON = {
        "phase": state.phase,
        "conditions": conditions,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": state.start_time,
        "containerStatuses": containers,
        "qosClass": pod.get("status", {}).get("qosClass"),
    }
    if inits:
        status["initContainerStatuses"] = inits
    if state.reason:
        status["reason"] = state.reason
        status["message"] = state.message
    comparable = {
        **status,
        "conditions": [{**c, "lastTransitionTime": None} for c in conditions],
    }
    return status, comparable


def write_status(api: client.ApiClient, pod: JSON, status: JSON) -> JSON | None:
    """Patch the pod's status (guarded by its UID); the updated pod, or None when the write did
    not happen (the pod is gone or changed identity, or the API server was unreachable: the next
    change reports the whole status again)."""
    meta = pod["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        updated: JSON = kube.merge_patch(
            api,
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            {"metadata": {"uid": meta["uid"]}, "status": status},
        )
    except ApiException as e:
        if e.status in (404, 409, 422):
            log.info("status of %s/%s not written: %s", namespace, name, e.reason)
            return None
        raise
    except (urllib3.exceptions.HTTPError, OSError) as e:
        log.warning("status of %s/%s not written: %s", namespace, name, e)
        return None
    return updated


def resource_version(pod: JSON) -> int:
    """The pod's resourceVersion as a number, to tell which of two copies is newer. Opaque by
    contract, but an etcd revision on every API server this agent talks to."""
    try:
        return int(pod["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


def final_delete(api: client.ApiClient, namespace: str, name: str, uid: str) -> None:
    """The kubelet's last word on a pod it stopped: delete it with no grace, and only if it is
    still the same pod (its UID), so a new pod of the same name is never deleted."""
    body = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": uid},
    }
    try:
        kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body=body)
    except ApiException as e:
        if e.status not in (404, 409):
            raise
