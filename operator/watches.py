"""The watches a controller registers with kopf: its own kind, and the children it labels.

Each watch feeds a controller's `Cache` and queues the key the object belongs to; the
reconcile then reads the caches, never kopf's bodies. kopf calls one object's handlers one
event at a time, in order, so a cache never sees an object's events out of order. `type` is
None for the objects of the initial listing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import kopf

from .cache import Cache
from .meta import GROUP, VERSION

__all__ = ["watch_children", "watch_owners"]

Key = tuple[str, str]


class Owner(Protocol):
    def enqueue(self, key: Any) -> None: ...

    def forget(self, uid: str) -> None:
        """Drop what the controller remembers of a deleted object."""


def watch_owners(
    registry: kopf.OperatorRegistry, plural: str, handler_id: str, cache: Cache, owner: Owner
) -> None:
    """Watch the controller's own kind: cache each object by (namespace, name) and queue it;
    a deleted one is forgotten (its children go through their owner references)."""

    @kopf.on.event(GROUP, VERSION, plural, id=handler_id, registry=registry)  # type: ignore[arg-type]
    def changed(namespace: str, name: str, body: kopf.Body, **kwargs: Any) -> None:
        cache.apply((namespace, name), kwargs.get("type"), body)
        if kwargs.get("type") == "DELETED":
            owner.forget(body["metadata"]["uid"])
            return
        owner.enqueue((namespace, name))


def watch_children(
    registry: kopf.OperatorRegistry,
    resource: tuple[str, str, str],
    label: str,
    handler_id: str,
    cache: Cache,
    wake: Callable[[Key], None],
) -> None:
    """Watch the objects of `resource` (group, version, plural) that carry `label`: cache
    each under (namespace, the label's value), the key of the object it belongs to, and call
    `wake` with that key."""
    group, version, plural = resource

    present = {label: kopf.PRESENT}

    @kopf.on.event(group, version, plural, id=handler_id, labels=present, registry=registry)  # type: ignore[arg-type]
    def changed(namespace: str, labels: kopf.Labels, body: kopf.Body, **kwargs: Any) -> None:
        key = (namespace, labels[label])
        cache.apply(key, kwargs.get("type"), body)
        wake(key)
