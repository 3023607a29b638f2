"""The viewer's settings, read once by its entry point (`kubemill view`'s options, or the
environment `kubemill-viewer` gets from its Deployment's ConfigMap) into one frozen object;
nothing below reads the environment."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import BadPath, ViewerError

__all__ = ["ViewerSettings", "normalize_base_path", "settings_from_env"]


def normalize_base_path(text: str) -> str:
    """`/x/y` from `x/y/`, `/x/y/` or `/x/y`; "" for the root. A reverse proxy (JupyterHub,
    an ingress with a path) forwards `/x/y/...` unchanged, so every route and link starts with it.
    """
    stripped = text.strip().strip("/")
    if not stripped:
        return ""
    segments = stripped.split("/")
    if any(s in ("", ".", "..") for s in segments) or any(c in stripped for c in "?#%\\ "):
        raise BadPath(f"base path {text!r} must be plain segments like /viewer or /hub/kubemill")
    return "/" + "/".join(segments)


@dataclass(frozen=True)
class ViewerSettings:
    #: What is served: a local folder, or `s3://bucket/prefix/`.
    root: str
    #: Where rendered notebook pages are kept between restarts.
    cache_dir: Path
    #: The URL path every route and link starts with, for a reverse proxy ("" when none).
    base_path: str = ""
    #: The address to bind; loopback unless authentication is in front (see `kubemill view`).
    host: str = "127.0.0.1"
    #: The port to bind; 0 picks a free one.
    port: int = 8866
    #: The S3 endpoint (SeaweedFS, MinIO); None for AWS. Credentials come from boto3's chain.
    s3_endpoint_url: str | None = None
    #: The S3 region; None lets boto3 decide.
    s3_region: str | None = None
    #: Bound of the rendered-page cache on disk.
    cache_max_bytes: int = 1024 * 1024 * 1024
    #: How long a folder listing is reused: long enough for paging and re-sorting one folder
    #: to list it once, short enough that a new run shows up while one looks.
    listing_ttl: float = 5.0
    #: Entries kept over all cached listings (about 200 bytes each: 100 MB at this bound).
    listing_max_entries: int = 500_000
    #: Rows on one page of a folder listing.
    page_size: int = 200
    #: Notebooks' outputs kept in memory (counted by the notebooks' sizes) for the outputs a
    #: page loads on demand: one GetObject and one parse per notebook version, not per output.
    notebook_memory_bytes: int = 256 * 1024 * 1024
    #: Threads for the blocking S3 client and for rendering; the S3 connection pool holds one
    #: connection for each of them and each of the runs index's readers (`make_store`).
    threads: int = 10
    #: Where the runs index (one SQLite file, see kubemill.viewer.runindex) lives; None for
    #: `runs-index` in cache_dir. In a cluster, the viewer's own volume: each replica has one.
    index_dir: Path | None = None
    #: Seconds between refreshes of the runs index: about how late a new run may show up. A
    #: refresh lists the whole store (one request per 1,000 keys), so not much less than that
    #: listing takes.
    refresh_seconds: float = 60.0

    #: The largest object the viewer reads whole (to render a notebook, for a contents model
    #: with content); a bigger one answers 413 and downloads from /files/, streamed.
    max_read_bytes: int = 512 * 1024 * 1024
    #: Host names, besides this machine's own (localhost and loopback addresses), that requests
    #: may be addressed to: the name a reverse proxy on this machine passes on. Any other Host
    #: is refused, so a web page cannot reach the viewer by re-pointing its own name at
    #: 127.0.0.1 (DNS rebinding) and read the store with the viewer's credentials.
    allowed_hosts: tuple[str, ...] = ()

    #: How people prove who they are (kubemill.viewer.auth): "proxy" (identity headers from a
    #: trusted authenticating proxy such as oauth2-proxy), "token" (a Kubernetes bearer token,
    #: checked with a TokenReview), both, or none, which is allowed on loopback only.
    auth_modes: tuple[str, ...] = ()
    #: The addresses (CIDRs) of the authenticating proxy: identity headers from any other
    #: address are refused, so nobody names themselves by sending the header directly.
    trusted_proxies: tuple[str, ...] = ()
    #: Which proxy header is the user's name for Kubernetes: "email" (X-Forwarded-Email) or
    #: "user" (X-Forwarded-User, the OIDC subject): whichever the API server's RBAC names.
    proxy_user_header: str = "email"
    #: Prefixes put before the proxy's user and group names, as the API server's
    #: --oidc-username-prefix and --oidc-groups-prefix do, so RBAC bindings match.
    proxy_user_prefix: str = ""
    proxy_groups_prefix: str = ""
    #: Whether the first segment of a path under the root names its namespace, as the
    #: operator writes runs (`<prefix><namespace>/<name>/`, the root being that prefix): then a
    #: run still in progress, or not yet in the runs index, is its namespace's at once. What a
    #: run.json says wins over the path.
    namespace_from_path: bool = False
    #: Seconds a TokenReview or SubjectAccessReview answer is reused: a revoked binding or
    #: token stops working within this long, and a page of many links costs one review.
    review_ttl: float = 30.0
    #: Review answers kept at most (least recently used dropped first).
    review_cache_entries: int = 10_000

    @property
    def runs_index_dir(self) -> Path:
        """The runs index of this root: one folder per root under the cache, so viewing
        another folder or prefix never shows (or rewrites) the first one's runs."""
        if self.index_dir is not None:
            return self.index_dir
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:16]
        return self.cache_dir / "runs-index" / digest


def _floating(environ: Mapping[str, str], name: str, default: float) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ViewerError(f"{name}={text!r} is not a number") from None
    if not value > 0:
        raise ViewerError(f"{name}={text!r} must be more than 0")
    return value


def _listed(environ: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in environ.get(name, "").split(",") if v.strip())


def settings_from_env(environ: Mapping[str, str]) -> ViewerSettings:
    """The settings of `kubemill-viewer`, the in-cluster viewer, from its environment (its
    Deployment's ConfigMap; deploy/components/viewer/settings.yaml names each variable)."""
    root = environ.get("KUBEMILL_VIEWER_ROOT", "").strip()
    if not root:
        raise ViewerError("KUBEMILL_VIEWER_ROOT is not set: the s3:// prefix (or folder) to serve")
    port_text = environ.get("KUBEMILL_VIEWER_PORT", "8866").strip()
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ViewerError(f"KUBEMILL_VIEWER_PORT={port_text!r} is not a TCP port")
    cache = environ.get("KUBEMILL_VIEWER_CACHE_DIR", "").strip() or "/var/cache/kubemill-viewer"
    index = environ.get("KUBEMILL_VIEWER_INDEX_DIR", "").strip()
    return ViewerSettings(
        root=root,
        cache_dir=Path(cache),
        base_path=normalize_base_path(environ.get("KUBEMILL_VIEWER_BASE_PATH", "")),
        host=environ.get("KUBEMILL_VIEWER_LISTEN", "").strip() or "0.0.0.0",
        port=int(port_text),
        s3_endpoint_url=environ.get("AWS_ENDPOINT_URL", "").strip() or None,
        s3_region=(environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "").strip()
        or None,
        index_dir=Path(index) if index else None,
        refresh_seconds=_floating(environ, "KUBEMILL_VIEWER_REFRESH_SECONDS", 60.0),
        auth_modes=_listed(environ, "KUBEMILL_VIEWER_AUTH"),
        trusted_proxies=_listed(environ, "KUBEMILL_VIEWER_TRUSTED_PROXIES"),
        proxy_user_header=environ.get("KUBEMILL_VIEWER_PROXY_USER_HEADER", "").strip() or "email",
        proxy_user_prefix=environ.get("KUBEMILL_VIEWER_PROXY_USER_PREFIX", ""),
        proxy_groups_prefix=environ.get("KUBEMILL_VIEWER_PROXY_GROUPS_PREFIX", ""),
        review_ttl=_floating(environ, "KUBEMILL_VIEWER_REVIEW_TTL", 30.0),
        namespace_from_path=_boolean(environ, "KUBEMILL_VIEWER_NAMESPACE_FROM_PATH"),
    )


def _boolean(environ: Mapping[str, str], name: str) -> bool:
    text = environ.get(name, "").strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise ViewerError(f"{name}={text!r} is not true or false")
