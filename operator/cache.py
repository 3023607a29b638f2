"""What the controllers know of the cluster: the objects their watches delivered, by key.

kopf hands each watch event to a handler on its own threads; the controllers' workers read the
objects from theirs. A cache is owned by its controller, changed and read under one lock, and
holds detached copies that are replaced whole, never changed in place, so a reader can use what
it got without holding the lock while another thread applies the next event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

__all__ = ["Cache", "plain"]

_KEPT_METADATA = (
    "deletionTimestamp",
    "finalizers",
    "name",
    "namespace",
    "uid",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "creationTimestamp",
    "resourceVersion",
)


def plain(
    body: Mapping[str, Any], *, spec: bool = True, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A detached copy of what the controllers use from a body, small enough to keep for every
    object: no managedFields, no pod or Job spec (which would triple the memory per run), and
    none of the spec fields named in `drop`."""
    meta = body.get("metadata") or {}
    kept = {k: v for k, v in (body.get("spec") or {}).items() if k not in drop} if spec else {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
        "spec": kept,
        "status": dict(body.get("status") or {}),
    }


class Cache:
    """Objects grouped by a key (a run's namespace and name, a schedule's), one per uid."""

    def __init__(self, copy: Callable[[Mapping[str, Any]], dict[str, Any]] = plain) -> None:
        self._copy = copy
        self._lock = threading.Lock()
        self._objects: dict[Hashable, dict[str, dict[str, Any]]] = {}
        #: Each uid's key, so an object whose key changed (a relabelled pod) leaves its old one.
        self._keys: dict[str, Hashable] = {}

    def apply(self, key: Hashable, event: str | None, body: Mapping[str, Any]) -> None:
        """Record a watch event (None is kopf's initial listing): DELETED removes the object,
        anything else stores a copy of it under `key`."""
        uid = str(body["metadata"]["uid"])
        copy = None if event == "DELETED" else self._copy(body)
        with self._lock:
            before = self._keys.pop(uid, None)
            if before is not None:
                group = self._objects.get(before, {})
                group.pop(uid, None)
                if not group:
                    self._objects.pop(before, None)
            if copy is not None:
                self._objects.setdefault(key, {})[uid] = copy
                self._keys[uid] = key

    def get(self, key: Hashable) -> list[dict[str, Any]]:
        """The objects under `key`; the list is the caller's, the objects are read-only."""
        with self._lock:
            return list(self._objects.get(key, {}).values())

    def first(self, key: Hashable) -> dict[str, Any] | None:
        with self._lock:
            return next(iter(self._objects.get(key, {}).values()), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)
