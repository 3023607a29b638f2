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

from kubemill.operator.errors import InvalidSpec
from kubemill.operator.handlers import AlreadyExists, TransientError, register
from kubemill.operator.meta import GROUP, JOB_FINALIZER, PLURAL, SCHEDULE_PLURAL, VERSION
from kubemill.operator.schedule_controller import register as register_schedules
from kubemill.operator.settings import Settings

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
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._error = client.ApiException

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
            if exc.status == 422:
                raise InvalidSpec(f"the Job was rejected: {_api_message(exc)}") from None
            logging.getLogger(__name__).warning(
                "cannot create Job %s/%s (%s): %s; retrying",
                namespace, job["metadata"]["name"], exc.status, _api_message(exc),
            )  # fmt: skip
            raise TransientError(str(exc.status)) from None

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        name = config_map["metadata"]["name"]
        try:
            _discard(
                self._core.create_namespaced_config_map(
                    namespace, dict(config_map), _preload_content=False
                )
            )
        except self._error as exc:
            if exc.status == 409:
                raise AlreadyExists(name) from None
            if exc.status in (400, 422):
                raise InvalidSpec(f"ConfigMap {name} was rejected: {_api_message(exc)}") from None
            raise TransientError(f"{exc.status}: {_api_message(exc)}") from None

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if JOB_FINALIZER not in finalizers:
            return
        at = f"/metadata/finalizers/{finalizers.index(JOB_FINALIZER)}"
        # A JSON patch that tests before it removes: a list changed meanwhile fails the test
        # (422) and is retried with the fresh list, never dropping someone else's finalizer.
        # (A strategic merge patch would merge the list and remove nothing.)
        patch = [{"op": "test", "path": at, "value": JOB_FINALIZER}, {"op": "remove", "path": at}]
        try:
            self._batch.patch_namespaced_job(meta["name"], meta["namespace"], patch)
        except self._error as exc:
            if exc.status == 404:
                return
            raise TransientError(f"{exc.status}: {_api_message(exc)}") from None

    def patch_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._patch_status(PLURAL, namespace, name, status)

    def patch_schedule_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self._patch_status(SCHEDULE_PLURAL, namespace, name, status)

    def _patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": dict(status)}
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
            raise TransientError(f"{exc.status}: {_api_message(exc)}") from None

    def delete_run(self, namespace: str, name: str) -> None:
        try:
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background"
            )
        except self._error as exc:
            if exc.status != 404:
                raise TransientError(f"{exc.status}: {_api_message(exc)}") from None


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
    register(registry, settings, cluster)
    register_schedules(registry, cluster)

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
