"""Events about pods, posted as the kubelet's recorder posts them: a repeated event (same type,
reason and message for the same pod) is counted on the first one instead of posted again."""

from __future__ import annotations

import logging
import threading

from kubernetes import client
from kubernetes.client.rest import ApiException

from .. import kube
from ..kube import JSON
from .model import now

log = logging.getLogger("kubemill.nodeagent")


class EventRecorder:
    """Safe to use from every pod worker and probe thread."""

    def __init__(self, api: client.ApiClient, node_name: str) -> None:
        self.api = api
        self.node_name = node_name
        self._lock = threading.Lock()
        # Events posted per pod uid: (type, reason, message) -> (Event name, count), so that a
        # repeated one is counted on the first, as the kubelet's event correlator does.
        self._posted: dict[str, dict[tuple[str, str, str], tuple[str, int]]] = {}

    def forget(self, uid: str) -> None:
        with self._lock:
            self._posted.pop(uid, None)

    def event(self, pod: JSON, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        ts = now()
        with self._lock:
            seen = self._posted.setdefault(meta["uid"], {}).get((kind, reason, message))
        if seen is not None:
            name, count = seen
            try:
                kube.merge_patch(
                    self.api,
                    f"/api/v1/namespaces/{meta['namespace']}/events/{name}",
                    {"count": count + 1, "lastTimestamp": ts},
                )
            except ApiException as e:
                log.info("event not recorded: %s", e.reason)
                return
            with self._lock:
                self._posted.setdefault(meta["uid"], {})[(kind, reason, message)] = (
                    name, count + 1,
                )  # fmt: skip
            return
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.node_name},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            created = kube.request(self.api, "POST",
                                   f"/api/v1/namespaces/{meta['namespace']}/events",
                                   body=body)  # fmt: skip
        except ApiException as e:
            log.info("event not recorded: %s", e.reason)
            return
        with self._lock:
            self._posted.setdefault(meta["uid"], {})[(kind, reason, message)] = (
                created["metadata"]["name"], 1,
            )  # fmt: skip
