"""Operator settings, read once at start-up from the environment into a frozen dataclass.

Every setting has a default that works in the local sandbox; the Deployment in deploy/ sets
them from the `kubemill-operator` ConfigMap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kubemill.runner.rules import duration_seconds

__all__ = ["DEFAULT_START_TIMEOUT_SECONDS", "Settings"]

#: How long a run's pod may take to start before the run fails, unless the run says otherwise
#: (spec.startTimeout). Long enough for a cluster autoscaler to add a node (a few minutes, GPU
#: nodes up to about ten) and for a large image to be pulled; short enough that a run whose
#: Secret is missing fails while someone still looks at it, instead of staying Pending for ever.
DEFAULT_START_TIMEOUT_SECONDS = 600.0


def _int(environ: Mapping[str, str], name: str, default: int | None) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number") from None


def _duration(environ: Mapping[str, str], name: str, default: float | None) -> float | None:
    """Seconds in a duration setting (`10m`, spec.timeout's syntax); `0` for none."""
    text = environ.get(name, "").strip()
    if not text:
        return default
    if text == "0":
        return None
    try:
        return duration_seconds(text)
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is not a duration of at least 1s (e.g. 90s, 10m, 1h) or 0 for none"
        ) from None


@dataclass(frozen=True)
class Settings:
    #: Runner image for runs that name none (spec.image).
    runner_image: str = "ghcr.io/kubemill/kubemill-runner:0.1.0"
    #: The runner's command inside that image (its ENTRYPOINT), set explicitly so that a
    #: cluster never depends on an image's entrypoint metadata.
    runner_command: str = "kubemill"
    #: Where outputs go when a run names no spec.output: s3://BUCKET/PREFIX/; each run writes
    #: to <prefix><namespace>/<name>/.
    output_prefix: str = ""
    #: S3-compatible endpoint given to runner pods as AWS_ENDPOINT_URL; empty for AWS itself.
    s3_endpoint_url: str = ""
    #: Name of a Secret, in each run's namespace, whose keys (AWS_ACCESS_KEY_ID, …) become the
    #: runner's environment; empty to rely on the pod's identity (IRSA, workload identity).
    s3_credentials_secret: str = ""
    #: Namespaces to watch; empty for all (cluster-wide, needs the ClusterRole).
    namespaces: tuple[str, ...] = ()
    #: Seconds a finished Job (and its pod, with its log) is kept when a run says nothing.
    default_ttl_seconds: int | None = 7 * 24 * 3600
    #: Seconds the runner pod gets between SIGTERM and SIGKILL; the runner needs about 10.
    termination_grace_seconds: int = 30
    #: Log level of the operator (DEBUG, INFO, WARNING, ERROR).
    log_level: str = "INFO"
    #: Address of the liveness endpoint kopf serves (the Deployment's probe).
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    #: The kubemill viewer's address as people reach it (https://HOST/BASE-PATH), and the S3
    #: prefix it serves: a run whose output is under that prefix gets status.viewerUrl. Both
    #: empty when no viewer is installed.
    viewer_url: str = ""
    viewer_root: str = ""
    #: Seconds from a run's Job being created to the run failing if its runner has not started
    #: by then (a missing Secret, an image that cannot be pulled, no node that fits), for runs
    #: without spec.startTimeout; None for no limit. Its Job is deleted, so nothing keeps
    #: retrying, and the run's reason names the cause.
    start_timeout_seconds: float | None = DEFAULT_START_TIMEOUT_SECONDS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        defaults = cls()
        namespaces = tuple(
            n.strip() for n in environ.get("KUBEMILL_NAMESPACES", "").split(",") if n.strip()
        )
        prefix = environ.get("KUBEMILL_OUTPUT_PREFIX", defaults.output_prefix).strip()
        if prefix and not prefix.startswith("s3://"):
            raise ValueError(f"KUBEMILL_OUTPUT_PREFIX={prefix!r} must start with s3://")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        level = environ.get("KUBEMILL_LOG_LEVEL", defaults.log_level).strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"KUBEMILL_LOG_LEVEL={level!r} is not DEBUG, INFO, WARNING or ERROR")
        viewer_url = environ.get("KUBEMILL_VIEWER_URL", "").strip()
        viewer_root = environ.get("KUBEMILL_VIEWER_ROOT", "").strip()
        if viewer_url and not viewer_url.startswith(("http://", "https://")):
            raise ValueError(f"KUBEMILL_VIEWER_URL={viewer_url!r} must start with https://")
        if viewer_root and not viewer_root.startswith("s3://"):
            raise ValueError(f"KUBEMILL_VIEWER_ROOT={viewer_root!r} must start with s3://")
        if bool(viewer_url) != bool(viewer_root):
            raise ValueError(
                "KUBEMILL_VIEWER_URL and KUBEMILL_VIEWER_ROOT go together: set both (the "
                "viewer's address and the S3 prefix it serves) or neither"
            )
        return cls(
            viewer_url=viewer_url,
            viewer_root=viewer_root,
            runner_image=environ.get("KUBEMILL_RUNNER_IMAGE", defaults.runner_image).strip(),
            runner_command=environ.get("KUBEMILL_RUNNER_COMMAND", defaults.runner_command),
            output_prefix=prefix,
            s3_endpoint_url=environ.get("KUBEMILL_S3_ENDPOINT_URL", "").strip(),
            s3_credentials_secret=environ.get("KUBEMILL_S3_CREDENTIALS_SECRET", "").strip(),
            namespaces=namespaces,
            default_ttl_seconds=_int(
                environ, "KUBEMILL_DEFAULT_TTL_SECONDS", defaults.default_ttl_seconds
            ),
            termination_grace_seconds=_int(
                environ, "KUBEMILL_TERMINATION_GRACE_SECONDS", defaults.termination_grace_seconds
            )
            or defaults.termination_grace_seconds,
            log_level=level,
            start_timeout_seconds=_duration(
                environ, "KUBEMILL_START_TIMEOUT", defaults.start_timeout_seconds
            ),
            liveness_endpoint=environ.get(
                "KUBEMILL_LIVENESS_ENDPOINT", defaults.liveness_endpoint
            ).strip(),
        )
