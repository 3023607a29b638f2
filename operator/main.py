"""`kubemill-operator`: settings, API client and kopf, wired together at start-up."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any, cast

import kopf

from .errors import InvalidSpec
from .handlers import AlreadyExists, TransientError, register
from .meta import (
    GROUP,
    JOB_FINALIZER,
    PLURAL,
    POD_FINALIZER,
    SCHEDULE_PLURAL,
    VERSION,
)
from .problems import EventWatcher
from .schedule_controller import register as register_schedules
from .settings import Settings

__all__ = ["KubernetesCluster", "main"]


class KubernetesCluster:
    """The controllers' API calls through the official client (kopf has no generic writer)."""

    def __init__(self) -> None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        configuration = client.Configuration.get_default_copy()
        # One connection per worker thread of both controllers (8 + 4) and kopf's handlers; the
        # client's default (5 per CPU) drops and re-handshakes connections in bursts otherwise.
        configuration.connection_pool_maxsize = 32
        api = client.ApiClient(configuration)
        self._batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._error = client.ApiException
        # The Event watches hold their connections for minutes (one per selector and watched
        # namespace): a pool of their own, so they never starve the workers' pool.
        self.watching = client.CoreV1Api(client.ApiClient(configuration))

    def create_job(self, namespace: str, job: Mapping[str, Any]) -> None:
        try:
            # The answer is not read: turning it into the client's V1Job models costs more CPU
            # than the request itself, and in a burst of scheduled runs that is the bottleneck.
            _discard(
                self._batch.create_namespaced_job(namespace, dict(job), _preload_content=False)
            )
        except self._error as exc:
            if exc.status == 409:
                raise AlreadyExists(job["metadata"]["name"]) from None
            if exc.status in _REJECTED:
                raise InvalidSpec(f"the Job was rejected: {_api_message(exc)}") from None
            logging.getLogger(__name__).warning(
                "cannot create Job %s/%s (%s): %s; retrying",
                namespace, job["metadata"]["name"], exc.status, _api_message(exc),
            )  # fmt: skip
            raise TransientError(f"{_api_message(exc)} (HTTP {exc.status})") from None

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        name = config_map["metadata"]["name"]
        try:
            _discard(
                self.core.create_namespaced_config_map(
                    namespace, dict(config_map), _preload_content=False
                )
            )
        except self._error as exc:
            if exc.status == 409:
                raise AlreadyExists(name) from None
            if exc.status in _REJECTED:
                raise InvalidSpec(
                    f"the parameters' ConfigMap {name} was rejected: {_api_message(exc)}"
                ) from None
            raise TransientError(
                f"ConfigMap {name}: {_api_message(exc)} (HTTP {exc.status})"
            ) from None

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        _remove_finalizer(self._batch.patch_namespaced_job, job, JOB_FINALIZER, self._error)

    def remove_pod_finalizer(self, pod: Mapping[str, Any]) -> None:
        _remove_finalizer(self.core.patch_namespaced_pod, pod, POD_FINALIZER, self._error)

    def replace_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        # A JSON patch: unlike a merge patch it can write null, which a notebook may record as
        # a result. (The client's custom-object API would send a list as a merge patch.)
        patch = [{"op": "add", "path": "/status", "value": dict(status)}]
        self._patch_status(PLURAL, namespace, name, patch, "application/json-patch+json")

    def patch_schedule_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        patch = {"status": dict(status)}
        self._patch_status(SCHEDULE_PLURAL, namespace, name, patch, "application/merge-patch+json")

    def _patch_status(
        self, plural: str, namespace: str, name: str, patch: Any, content_type: str
    ) -> None:
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, patch, _content_type=content_type
            )
        except self._error as exc:
            if exc.status == 404:  # deleted meanwhile: there is nothing left to describe
                return
            raise TransientError(f"{exc.status}: {_api_message(exc)}") from None

    def create_run(self, namespace: str, run: Mapping[str, Any]) -> None:
        try:
            self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, dict(run)
            )
        except self._error as exc:
            if exc.status == 409:
                raise AlreadyExists(run["metadata"]["name"]) from None
            if exc.status in (400, 422):
                raise InvalidSpec(
                    f"run {run['metadata']['name']} was rejected: {_api_message(exc)}; fix "
                    "spec.runTemplate"
                ) from None
            raise TransientError(f"{_api_message(exc)} (HTTP {exc.status})") from None

    def delete_run(self, namespace: str, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background"
            )
        except self._error as exc:
            if exc.status != 404:
                raise TransientError(f"{exc.status}: {_api_message(exc)}") from None


#: HTTP statuses of a Job the API server will never accept as built: 400 (it does not decode,
#: e.g. a memory limit "4 GB"; an admission webhook's default denial), 413 (too large), 422
#: (invalid; an admission policy's default denial). Everything else may pass without a change
#: to the run: 403 is a quota on Jobs as often as the operator's RBAC, 404 a namespace being
#: created or deleted, 409 a conflict, 429 and 5xx the API server's load or health.
_REJECTED = (400, 413, 422)


def _remove_finalizer(
    patch: Any, obj: Mapping[str, Any], finalizer: str, error: type[Exception]
) -> None:
    meta = obj["metadata"]
    finalizers = list(meta.get("finalizers") or [])
    if finalizer not in finalizers:
        return
    at = f"/metadata/finalizers/{finalizers.index(finalizer)}"
    # A JSON patch that tests before it removes: a list changed meanwhile fails the test (422)
    # and is retried with the fresh list, never dropping someone else's finalizer (the job
    # controller's own on pods comes and goes). A strategic merge patch would merge the list
    # and remove nothing.
    body = [{"op": "test", "path": at, "value": finalizer}, {"op": "remove", "path": at}]
    try:
        patch(meta["name"], meta["namespace"], body)
    except error as exc:
        status = getattr(exc, "status", None)
        if status == 404:
            return
        raise TransientError(f"{_api_message(exc)} (HTTP {status})") from None


def _discard(response: Any) -> None:
    """Read and drop an unread response, so its connection goes back to the pool."""
    response.drain_conn()
    response.release_conn()


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body).get("message", exc.reason))
    except (TypeError, ValueError):
        return str(exc.reason)


class _QuietSuccess(logging.Filter):
    """Drops kopf's "Handler '…' succeeded." lines: one per watch event, they would drown the
    lines that matter (Jobs created, failures) in a busy cluster."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Handler '") and message.endswith("succeeded."))


def main() -> None:
    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:
        sys.exit(f"kubemill-operator: {exc}")
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)-7s %(name)s %(message)s"
    )
    if settings.log_level != "DEBUG":
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietSuccess())
    registry = kopf.OperatorRegistry()
    cluster = KubernetesCluster()
    reconciler = register(registry, settings, cluster)
    register_schedules(registry, cluster)
    events = EventWatcher(cluster.watching, reconciler.problems, settings.namespaces)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials the official client finds: in-cluster, else $KUBECONFIG.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Only explicit Events are posted, never log lines.
        settings.posting.loggers = False
        # No watching of CRDs and namespaces for changes: that would need cluster-wide read
        # access to both; install crds/ before the operator, restart it after upgrading them.
        settings.scanning.disabled = True
        settings.execution.max_workers = 16
        settings.watching.server_timeout = 300
        events.start()

    @kopf.on.cleanup(registry=registry)
    def stop_watching_events(**_: Any) -> None:
        events.stop()

    kopf.run(
        registry=registry,
        # Named here, not by kopf from the user name: a uid without a passwd entry (random
        # uids on OpenShift, any uid on a read-only image) would crash kopf's own lookup.
        identity=cast(Any, f"kubemill-operator@{socket.gethostname()}"),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=settings.liveness_endpoint or None,
    )


if __name__ == "__main__":
    main()
