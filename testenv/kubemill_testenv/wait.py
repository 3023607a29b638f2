"""Wait for a condition on Kubernetes objects with a watch and a deadline, never a fixed sleep.

Each waiter lists first (the condition may already hold) and then watches from the list's
resource version, so no change between the two is missed. ``since`` watches from an earlier
version instead, which lets a test observe a transient state (a pod's last status before its
deletion) that a list taken later would no longer show.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from . import kube
from .kube import JSON

Predicate = Callable[[str, JSON], bool]


class WaitTimeout(AssertionError):
    """The condition did not hold in time; the message carries the last state seen."""


def resource_version(api: client.ApiClient, collection: str) -> str:
    """The collection's current version: pass it as ``since`` before acting."""
    listed = kube.get(api, collection, limit=1)
    version: str = listed["metadata"]["resourceVersion"]
    return version


def wait_for(
    api: client.ApiClient,
    collection: str,
    predicate: Predicate,
    *,
    timeout: float,
    what: str,
    name: str | None = None,
    label_selector: str | None = None,
    since: str | None = None,
) -> JSON:
    """Return the first object for which ``predicate(event_type, obj)`` holds.

    ``collection`` is a list path such as ``/api/v1/namespaces/ns/pods``; ``event_type`` is
    ``LISTED``, ``ADDED``, ``MODIFIED`` or ``DELETED``.
    """
    query: dict[str, Any] = {}
    if name is not None:
        query["fieldSelector"] = f"metadata.name={name}"
    if label_selector is not None:
        query["labelSelector"] = label_selector
    deadline = time.monotonic() + timeout
    last: JSON | None = None
    version = since
    while True:
        if version is None:
            listed = kube.get(api, collection, **query)
            for item in listed.get("items", []):
                last = item
                if predicate("LISTED", item):
                    return dict(item)
            version = listed["metadata"]["resourceVersion"]
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")
        try:
            for event in kube.watch(
                api, collection, version, timeout_seconds=max(1, int(remaining) + 1), **query
            ):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                if event["type"] == "BOOKMARK":
                    continue
                last = obj
                if predicate(event["type"], obj):
                    return dict(obj)
                if time.monotonic() > deadline:
                    break
        except ApiException as e:
            if e.status != 410:
                raise
            version = None


def condition(obj: JSON, kind: str) -> JSON | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def has_condition(kind: str, status: str = "True") -> Predicate:
    def check(event: str, obj: JSON) -> bool:
        c = condition(obj, kind)
        return event != "DELETED" and c is not None and c.get("status") == status

    return check


def job_finished(event: str, obj: JSON) -> bool:
    """The Job has its terminal condition (Complete or Failed) set to True."""
    return event != "DELETED" and any(
        has_condition(kind)(event, obj) for kind in ("Complete", "Failed")
    )


def pod_phase(*phases: str) -> Predicate:
    def check(event: str, obj: JSON) -> bool:
        return event != "DELETED" and obj.get("status", {}).get("phase") in phases

    return check


def deleted(event: str, _obj: JSON) -> bool:
    return event == "DELETED"


def wait_gone(
    api: client.ApiClient, collection: str, name: str, *, timeout: float, what: str
) -> None:
    """Return once ``name`` no longer exists in ``collection``."""
    deadline = time.monotonic() + timeout
    while True:
        listed = kube.get(api, collection, fieldSelector=f"metadata.name={name}")
        if not listed.get("items"):
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        try:
            wait_for(
                api,
                collection,
                deleted,
                timeout=remaining,
                what=what,
                name=name,
                since=listed["metadata"]["resourceVersion"],
            )
            return
        except ApiException as e:
            if e.status != 410:
                raise
