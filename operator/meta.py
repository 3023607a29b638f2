"""Names, labels, annotations, owner references and patches: plain functions over dicts.

Children get deterministic names, which is what makes a restart safe: creating a Job that
already exists fails with 409 and the existing one is adopted, never duplicated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "GROUP",
    "JOB_FINALIZER",
    "KIND",
    "LABEL_ORIGIN",
    "LABEL_RUN",
    "LABEL_SCHEDULE",
    "LABEL_STEP",
    "LABEL_WORKFLOW",
    "MANAGED_BY",
    "POD_FINALIZER",
    "SCHEDULED_TIME",
    "SCHEDULE_PLURAL",
    "TRIGGER",
    "VERSION",
    "WORKFLOW_PLURAL",
    "child_labels",
    "controller_name",
    "copied_annotations",
    "copied_labels",
    "job_name",
    "merge_patch",
    "owned_by",
    "owner_reference",
]

GROUP = "kubemill.dev"
VERSION = "v1alpha1"
KIND = "NotebookRun"
PLURAL = "notebookruns"
SCHEDULE_PLURAL = "notebookschedules"
WORKFLOW_PLURAL = "notebookworkflows"
#: The label that ties a Job and its pods to their NotebookRun.
LABEL_RUN = "kubemill.dev/run"
#: The label that ties a NotebookRun to the NotebookSchedule that created it.
LABEL_SCHEDULE = "kubemill.dev/schedule"
#: The labels that tie a NotebookRun to the NotebookWorkflow, and the step, it carries out.
LABEL_WORKFLOW = "kubemill.dev/workflow"
LABEL_STEP = "kubemill.dev/step"
#: How a schedule's run came to be: schedule (its slot came), manual (a trigger), backfill.
LABEL_ORIGIN = "kubemill.dev/origin"
#: The slot a schedule's run is for (RFC 3339, UTC), whenever it was actually created.
SCHEDULED_TIME = "kubemill.dev/scheduled-time"
#: Set on a NotebookSchedule (to any new value, `kubemill trigger` uses the time) to run its
#: template now.
TRIGGER = "kubemill.dev/trigger"
#: Keeps a Job (and so its pods and their termination messages) until the operator has written
#: the run's final status: neither ttlSecondsAfterFinished nor a deletion can take the outcome
#: away while the operator is down or busy.
JOB_FINALIZER = "kubemill.dev/status-recorded"
#: The same, on each runner pod (through the Job's pod template, which the job controller copies
#: onto every pod it creates): the garbage collector deletes a Job's pods when the Job is deleted,
#: even while the Job itself waits for its finalizer, and the summary is the pods' termination
#: message. Removed from every pod of a run once its final status is written.
POD_FINALIZER = JOB_FINALIZER
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubemill"}

# Never copied to children: tools' own bookkeeping, which would confuse them on the child.
_FOREIGN_PREFIXES = ("kopf.zalando.org/", "kubectl.kubernetes.io/", "kubemill.dev/")
_MAX_NAME = 63


def _ours(key: str) -> bool:
    return not any(key.startswith(p) for p in _FOREIGN_PREFIXES)


def copied_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (labels or {}).items() if _ours(k)}


def copied_annotations(annotations: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (annotations or {}).items() if _ours(k)}


def job_name(run_name: str, run_uid: str) -> str:
    """`<run>-<hash of uid>`, at most 63 characters (Job names become pod labels).

    The uid in the hash keeps a recreated run of the same name from adopting its
    predecessor's Job.
    """
    digest = hashlib.sha256(run_uid.encode()).hexdigest()[:8]
    stem = run_name[: _MAX_NAME - len(digest) - 1].rstrip("-.")
    return f"{stem}-{digest}"


def child_labels(run: Mapping[str, Any]) -> dict[str, str]:
    """The user's labels plus ours; ours win, since selectors depend on them."""
    meta = run["metadata"]
    return {
        **copied_labels(meta.get("labels")),
        **MANAGED_BY,
        "app.kubernetes.io/name": "kubemill",
        "app.kubernetes.io/component": "notebook-run",
        LABEL_RUN: meta["name"],
    }


def owner_reference(
    owner: Mapping[str, Any], kind: str = KIND, *, block_deletion: bool = True
) -> dict[str, Any]:
    """The reference that makes `owner` (a kubemill object) the controller of a child, which
    the garbage collector deletes with it."""
    meta = owner["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": block_deletion,
    }


def owned_by(obj: Mapping[str, Any], uid: str | None) -> bool:
    """Whether `obj` is a child of the object with `uid` (not of a deleted namesake)."""
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def controller_name(obj: Mapping[str, Any], kind: str) -> str | None:
    """The name of the `kind` object that controls `obj` (a pod's Job), if any."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("controller"):
            name: str = ref.get("name", "")
            return name
    return None


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `old` into `new`: removed keys become None at every
    depth, so a later attempt's results replace an earlier one's instead of merging."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    return patch
