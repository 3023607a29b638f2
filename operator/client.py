"""How kubemill talks to the API server, for the operator and the CLI alike: where the
credentials come from, what an API error says in one line, and which refusals are for good.

The official client is imported inside the functions, so that importing this module costs
nothing and the runner image, which has no client, can still import what imports it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import AlreadyExists, InvalidSpec, TransientError
from .meta import (
    GROUP,
    JOB_FINALIZER,
    LABEL_RUN,
    PLURAL,
    POD_FINALIZER,
    SCHEDULE_PLURAL,
    VERSION,
    WORKFLOW_PLURAL,
)

__all__ = [
    "Connection",
    "KubernetesCluster",
    "NoCluster",
    "api_message",
    "api_problem",
    "connect",
    "describe",
    "refusal",
]

_log = logging.getLogger(__name__)

_SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

#: HTTP statuses of an object the API server will never accept as built: 400 (it does not decode,
#: e.g. a memory limit "4 GB"; an admission webhook's default denial), 413 (too large), 422
#: (invalid; an admission policy's default denial). Everything else may pass without a change
#: to the run: 403 is a quota on Jobs as often as the operator's RBAC, 404 a namespace being
#: created or deleted, 409 a conflict, 429 and 5xx the API server's load or health.
_REJECTED = (400, 413, 422)


class NoCluster(Exception):
    """There is no cluster to talk to, or no client to talk with; the message says what to do."""


@dataclass(frozen=True)
class Connection:
    #: The client's Configuration (host, credentials, TLS), for ApiClients of one's own.
    configuration: Any
    #: The namespace the kubeconfig's context names; in a pod, the pod's own.
    namespace: str


def connect(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """The cluster kubectl would talk to: the kubeconfig (`kubeconfig`, else $KUBECONFIG, else
    ~/.kube/config) and its `context` (else the current one); without a kubeconfig, inside a
    pod, the pod's service account. A kubeconfig or context named explicitly must work."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise NoCluster(
            "this command needs the Kubernetes client: pip install 'kubemill[operator]' "
            "(the runner image has none; run it where kubectl works)"
        ) from None
    configuration = client.Configuration()
    try:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except config.ConfigException as exc:
        if kubeconfig or context:
            raise NoCluster(f"cannot use the kubeconfig: {exc}") from None
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            raise NoCluster(
                f"no cluster to talk to: {exc}; set KUBECONFIG or pass --kubeconfig"
            ) from None
        return Connection(configuration, _pod_namespace())
    chosen = next((c for c in contexts if c.get("name") == context), current) or {}
    return Connection(configuration, (chosen.get("context") or {}).get("namespace") or "default")


def _pod_namespace() -> str:
    try:
        with open(_SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as file:
            return file.read().strip() or "default"
    except OSError:
        return "default"


def api_message(exc: Any) -> str:
    """What the API server said (its Status message), else the HTTP reason."""
    try:
        return str(json.loads(exc.body).get("message", exc.reason))
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


def api_problem(exc: Any) -> str:
    """An API error in one line: the API server's message and the HTTP status."""
    return f"{api_message(exc)} (HTTP {getattr(exc, 'status', None)})"


def describe(exc: BaseException) -> str | None:
    """One line for a failure of the Kubernetes client or its HTTP library; None for any other
    error, which is a bug to show with its traceback."""
    module = type(exc).__module__
    if module.startswith("kubernetes"):
        return f"the API server answered {getattr(exc, 'status', None)}: {api_message(exc)}"
    if module.startswith("urllib3"):
        return f"cannot reach the API server: {exc}"
    return None


def refusal(exc: Any, name: str, rejected: str, transient: str = "", suffix: str = "") -> Exception:
    """The typed error for a refused create of `name`: AlreadyExists (409: adopt it),
    InvalidSpec (`rejected` + the message + `suffix`: the object as built is refused for good),
    or TransientError (`transient` + the message: it may pass, retry)."""
    status = getattr(exc, "status", None)
    if status == 409:
        return AlreadyExists(name)
    if status in _REJECTED:
        return InvalidSpec(f"{rejected}{api_message(exc)}{suffix}")
    return TransientError(f"{transient}{api_problem(exc)}")


class KubernetesCluster:
    """The controllers' API calls through the official client (kopf has no generic writer)."""

    def __init__(self) -> None:
        from kubernetes import client

        configuration = connect().configuration
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
            error = refusal(exc, job["metadata"]["name"], "the Job was rejected: ")
            if isinstance(error, TransientError):
                name = job["metadata"]["name"]
                _log.warning("cannot create Job %s/%s: %s; retrying", namespace, name, error)
            raise error from None

    def create_configmap(self, namespace: str, config_map: Mapping[str, Any]) -> None:
        name = config_map["metadata"]["name"]
        try:
            _discard(
                self.core.create_namespaced_config_map(
                    namespace, dict(config_map), _preload_content=False
                )
            )
        except self._error as exc:
            raise refusal(
                exc, name, f"the parameters' ConfigMap {name} was rejected: ", f"ConfigMap {name}: "
            ) from None

    def remove_job_finalizer(self, job: Mapping[str, Any]) -> None:
        _remove_finalizer(self._batch.patch_namespaced_job, job, JOB_FINALIZER, self._error)

    def remove_pod_finalizer(self, pod: Mapping[str, Any]) -> None:
        _remove_finalizer(self.core.patch_namespaced_pod, pod, POD_FINALIZER, self._error)

    def delete_job(self, job: Mapping[str, Any]) -> None:
        meta = job["metadata"]
        try:
            _discard(
                self._batch.delete_namespaced_job(
                    meta["name"], meta["namespace"], _preload_content=False,
                    # In the body, where the API server reads it once there is a body (the query
                    # parameter is then ignored, and a Job's default orphans its pods). Only the
                    # Job the caller saw: a namesake created since is not its to delete.
                    body={
                        "propagationPolicy": "Background",
                        "preconditions": {"uid": meta["uid"]},
                    },
                )
            )  # fmt: skip
        except self._error as exc:
            if exc.status in (404, 409):  # gone already, or a namesake (the uid differs)
                return
            raise TransientError(api_problem(exc)) from None

    def list_pods(self, namespace: str, run: str) -> list[dict[str, Any]]:
        try:
            answer = self.core.list_namespaced_pod(
                namespace, label_selector=f"{LABEL_RUN}={run}", _preload_content=False
            )
        except self._error as exc:
            raise TransientError(f"cannot list the pods of run {run}: {api_problem(exc)}") from None
        items: list[dict[str, Any]] = json.loads(answer.data)["items"]
        return items

    def replace_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        # A JSON patch: unlike a merge patch it can write null, which a notebook may record as
        # a result. (The client's custom-object API would send a list as a merge patch.)
        patch = [{"op": "add", "path": "/status", "value": dict(status)}]
        self._patch_status(PLURAL, namespace, name, patch, "application/json-patch+json")

    def patch_schedule_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        patch = {"status": dict(status)}
        self._patch_status(SCHEDULE_PLURAL, namespace, name, patch, "application/merge-patch+json")

    def replace_workflow_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        patch = [{"op": "add", "path": "/status", "value": dict(status)}]
        self._patch_status(WORKFLOW_PLURAL, namespace, name, patch, "application/json-patch+json")

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
            raise TransientError(api_problem(exc)) from None

    def create_run(self, namespace: str, run: Mapping[str, Any]) -> None:
        self._create(namespace, PLURAL, run, "run", "spec.runTemplate")

    def create_workflow(self, namespace: str, workflow: Mapping[str, Any]) -> None:
        self._create(namespace, WORKFLOW_PLURAL, workflow, "workflow", "spec.workflowTemplate")

    def get_run(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            found: Mapping[str, Any] = self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name
            )
        except self._error as exc:
            if exc.status == 404:
                return None
            raise TransientError(api_problem(exc)) from None
        return found

    def delete_run(self, namespace: str, name: str) -> None:
        self._delete(namespace, PLURAL, name)

    def delete_workflow(self, namespace: str, name: str) -> None:
        self._delete(namespace, WORKFLOW_PLURAL, name)

    def _create(
        self, namespace: str, plural: str, body: Mapping[str, Any], what: str, template: str
    ) -> None:
        """Create a run or workflow a template made: AlreadyExists, InvalidSpec naming the
        template to fix, or TransientError."""
        try:
            self._custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, dict(body)
            )
        except self._error as exc:
            name = body["metadata"]["name"]
            raise refusal(
                exc, name, f"{what} {name} was rejected: ", suffix=f"; fix {template}"
            ) from None

    def _delete(self, namespace: str, plural: str, name: str) -> None:
        """Delete it with its children (Background); no error if it is gone."""
        try:
            self._custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, propagation_policy="Background"
            )
        except self._error as exc:
            if exc.status != 404:
                raise TransientError(api_problem(exc)) from None


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
        raise TransientError(api_problem(exc)) from None


def _discard(response: Any) -> None:
    """Read and drop an unread response, so its connection goes back to the pool."""
    response.drain_conn()
    response.release_conn()
