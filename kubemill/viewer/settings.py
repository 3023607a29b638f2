"""The viewer's settings, read once by its entry point (`kubemill view`, later a Deployment's
ConfigMap) into one frozen object; nothing below reads the environment."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import BadPath

__all__ = ["ViewerSettings", "normalize_base_path"]


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

    @property
    def runs_index_dir(self) -> Path:
        """The runs index of this root: one folder per root under the cache, so viewing
        another folder or prefix never shows (or rewrites) the first one's runs."""
        if self.index_dir is not None:
            return self.index_dir
        digest = hashlib.sha256(self.root.encode()).hexdigest()[:16]
        return self.cache_dir / "runs-index" / digest
