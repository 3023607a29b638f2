"""`kubemill view`: serve a folder or an S3 prefix of executed notebooks.

Without authentication it binds loopback only: anyone who can reach the port reads every
notebook under the prefix, with this user's S3 credentials. With `--auth proxy|token` it may
bind any address, and asks the Kubernetes API server (kubectl's kubeconfig, or the pod's
ServiceAccount) who people are and which namespaces they may read (kubemill.viewer.access).
`kubemill-viewer` (`main_env` below) is the same server configured by its environment, for the
in-cluster Deployment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubemill.runner.contract import ExitCode

__all__ = ["declare_view", "is_loopback", "main_env"]

DEFAULT_PORT = 8866


def declare_view(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the notebooks under a local folder or an S3 prefix (s3://bucket/prefix/) as web "
        "pages, read-only: folder listings, rendered notebooks, downloads, and a read-only "
        "Jupyter contents API. S3 is reached like `kubemill run` reaches it ($AWS_ENDPOINT_URL "
        "or --s3-endpoint-url, and the usual AWS credential chain)."
    )
    parser.set_defaults(handler=cmd_view)
    parser.add_argument("root", metavar="PATH_OR_S3_PREFIX")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 picks one"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to bind (default 127.0.0.1); another than loopback needs --auth",
    )
    parser.add_argument(
        "--auth",
        action="append",
        default=[],
        choices=("proxy", "token"),
        help="authenticate people: proxy (identity headers from --trusted-proxy, such as "
        "oauth2-proxy's), token (Kubernetes bearer tokens, TokenReview); may be given twice. "
        "Reads are then authorized per namespace with SubjectAccessReviews",
    )
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        metavar="CIDR",
        help="an address or CIDR of the authenticating proxy (for --auth proxy)",
    )
    parser.add_argument(
        "--proxy-user-header",
        choices=("email", "user"),
        default="email",
        help="the proxy header that is the Kubernetes user name: X-Forwarded-Email (default) "
        "or X-Forwarded-User",
    )
    parser.add_argument(
        "--namespace-from-path",
        action="store_true",
        help="the first folder under the root is the namespace, as the operator writes runs "
        "(the root being its output prefix): a run in progress is its namespace's at once",
    )
    parser.add_argument("--kubeconfig", metavar="FILE", help="for the reviews (default kubectl's)")
    parser.add_argument(
        "--base-path", default="", metavar="/PATH", help="URL path prefix behind a reverse proxy"
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where rendered pages are kept (default $XDG_CACHE_HOME/kubemill/viewer)",
    )
    parser.add_argument(
        "--index-dir",
        type=Path,
        metavar="DIR",
        help="where the runs index is kept (default runs-index in the cache folder)",
    )
    parser.add_argument(
        "--refresh-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="how often the runs index looks for new and changed runs (default 60)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name requests may carry besides localhost and loopback addresses (the "
        "name a reverse proxy on this machine passes on); any other is refused (DNS rebinding)",
    )
    parser.add_argument("--s3-endpoint-url", metavar="URL")
    parser.add_argument("--debug", action="store_true")


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the viewer on this machine (kubemill.viewer.auth's rule,
    imported on use: `kubemill --help` loads no viewer module)."""
    from kubemill.viewer.auth import is_loopback as loopback

    return loopback(host)


def _reviews(settings: Any, kubeconfig: str | None) -> Any:
    """The API server's reviews for an authenticating viewer (None without authentication),
    through kubemill's one kubeconfig loader."""
    if not settings.auth_modes:
        return None
    from kubemill.operator.client import connect
    from kubemill.viewer.kubeapi import KubeReviews

    return KubeReviews(connect(kubeconfig).configuration)


def _cache_dir(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    if args.cache_dir is not None:
        return Path(args.cache_dir)
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")) / ".cache")
    return Path(base).expanduser() / "kubemill" / "viewer"


def _has_graphical_browser(environ: Mapping[str, str]) -> bool:
    """Python's webbrowser falls back to text browsers (lynx, w3m) on a console, which would
    take over this terminal; only a desktop session or an explicit $BROWSER gets one."""
    return sys.platform in ("darwin", "win32") or any(
        environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")
    )


def _error(message: str, code: ExitCode) -> int:
    print(f"kubemill view: error: {message}", file=sys.stderr)
    return int(code)


def cmd_view(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from kubemill.viewer.auth import check_auth_settings, check_listen
    from kubemill.viewer.errors import ViewerError as SettingsError

    try:
        check_listen(args.host, args.auth)
        check_auth_settings(args.auth, args.trusted_proxy, args.proxy_user_header)
    except SettingsError as exc:
        hint = (
            ""
            if args.auth
            else " (--auth proxy|token); or forward the port (ssh -L) to reach it from elsewhere"
        )
        return _error(exc.message + hint, ExitCode.BAD_INPUT)
    if not 0 <= args.port <= 65535:
        return _error(f"--port {args.port} is not a TCP port", ExitCode.BAD_INPUT)
    if not args.refresh_seconds > 0:
        return _error(
            f"--refresh-seconds {args.refresh_seconds} must be more than 0", ExitCode.BAD_INPUT
        )

    import asyncio

    try:
        from kubemill.viewer.app import make_store, serve
    except ImportError as exc:  # the runner image, or an install without the extra
        missing = getattr(exc, "name", None) or "a package"
        return _error(
            f"this command needs the viewer's packages ({missing} is missing): "
            "pip install 'kubemill[viewer]'",
            ExitCode.BAD_INPUT,
        )
    from kubemill.viewer.errors import StoreError, ViewerError
    from kubemill.viewer.settings import ViewerSettings, normalize_base_path

    root = args.root
    if not root.startswith("s3://"):
        root = str(Path(root).expanduser().resolve())
    try:
        settings = ViewerSettings(
            root=root,
            cache_dir=_cache_dir(args, environ),
            base_path=normalize_base_path(args.base_path),
            host=args.host,
            port=args.port,
            s3_endpoint_url=args.s3_endpoint_url or environ.get("AWS_ENDPOINT_URL") or None,
            s3_region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
            index_dir=args.index_dir,
            refresh_seconds=args.refresh_seconds,
            allowed_hosts=tuple(args.allow_host),
            auth_modes=tuple(dict.fromkeys(args.auth)),
            trusted_proxies=tuple(args.trusted_proxy),
            proxy_user_header=args.proxy_user_header,
            namespace_from_path=args.namespace_from_path,
        )
        store = make_store(settings)
        store.list_page("")  # a missing bucket or rejected credentials fail here, not per page
    except StoreError as exc:
        return _error(exc.message, ExitCode.STORAGE)
    except ViewerError as exc:
        return _error(f"{args.root}: {exc.message}", ExitCode.BAD_INPUT)

    try:
        reviews = _reviews(settings, args.kubeconfig)
    except Exception as exc:  # NoCluster, a kubeconfig that does not load
        return _error(f"--auth needs the Kubernetes API: {exc}", ExitCode.BAD_INPUT)

    def ready(url: str) -> None:
        print(f"kubemill view: serving {store.root} at {url} (Ctrl-C stops)", flush=True)
        if not args.no_browser and _has_graphical_browser(environ):
            import webbrowser

            webbrowser.open(url)

    try:
        asyncio.run(serve(settings, ready, store=store, reviews=reviews))
    except OSError as exc:
        return _error(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", ExitCode.BAD_INPUT
        )
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        pass
    print("kubemill view: stopped", file=sys.stderr)
    return 0


def main_env() -> int:
    """`kubemill-viewer`: the viewer in a pod, its settings read once from the environment
    (kubemill.viewer.settings.settings_from_env), S3 through the runner's credential chain,
    reviews through the pod's ServiceAccount. Logs go to stderr."""
    import asyncio
    import logging
    import os

    from kubemill.viewer.app import make_store, serve
    from kubemill.viewer.auth import check_auth_settings, check_listen
    from kubemill.viewer.errors import StoreError, ViewerError
    from kubemill.viewer.settings import settings_from_env

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    prefix = "kubemill-viewer: error: "
    try:
        settings = settings_from_env(os.environ)
        check_listen(settings.host, settings.auth_modes)
        check_auth_settings(
            settings.auth_modes, settings.trusted_proxies, settings.proxy_user_header
        )
        store = make_store(settings)
    except ViewerError as exc:
        print(prefix + exc.message, file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    try:
        reviews = _reviews(settings, None)
    except Exception as exc:
        print(f"{prefix}the Kubernetes API for authentication: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)

    def ready(url: str) -> None:
        modes = ", ".join(settings.auth_modes) or "none (loopback)"
        print(
            f"kubemill-viewer: serving {store.root} at {url}; authentication: {modes}", flush=True
        )

    try:
        asyncio.run(serve(settings, ready, store=store, reviews=reviews))
    except StoreError as exc:
        print(prefix + exc.message, file=sys.stderr)
        return int(ExitCode.STORAGE)
    except OSError as exc:
        print(f"{prefix}cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    return 0
