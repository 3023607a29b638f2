"""`kubemill-operator`: settings, API client and kopf, wired together at start-up."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Any, cast

import kopf

from .client import KubernetesCluster, NoCluster
from .handlers import register
from .problems import EventWatcher
from .schedule_controller import register as register_schedules
from .settings import Settings
from .workflow_controller import register as register_workflows

__all__ = ["SHUTDOWN_SECONDS", "main"]

#: Seconds the controllers' workers get on SIGTERM to finish the object each is working on
#: (a Job being created, a status being written): within the Deployment's grace period (30 s),
#: with time left for kopf to close its watches.
SHUTDOWN_SECONDS = 20.0


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
    try:
        cluster = KubernetesCluster()
    except NoCluster as exc:
        sys.exit(f"kubemill-operator: {exc}")
    reconciler = register(registry, settings, cluster)
    schedules = register_schedules(registry, cluster)
    workflows = register_workflows(registry, cluster)
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
    def stop(**_: Any) -> None:
        # kopf has stopped its watches (SIGTERM, SIGINT): the workers finish what they are
        # doing and take nothing new; the next operator's first pass finds the rest.
        logging.getLogger(__name__).info("stopping: letting the workers finish")
        events.stop()
        finished = [c.stop(SHUTDOWN_SECONDS) for c in (reconciler, schedules, workflows)]
        logging.getLogger(__name__).info(
            "stopped%s", "" if all(finished) else " (some work left unfinished)"
        )

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
