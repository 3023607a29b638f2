"""Where a person reads an output: the kubemill viewer's page for a storage URL.

The viewer serves one store root (an S3 prefix or a folder) and shows the object at
`<root><path>` on the page `<viewer>/view/<path>`, each path segment percent-encoded. The
operator puts that page into a run's status, and the viewer links outputs to each other the
same way, so the mapping is written once, here.
"""

from __future__ import annotations

from urllib.parse import quote

__all__ = ["ENV_VIEWER_ROOT", "ENV_VIEWER_URL", "viewer_link"]

#: The viewer's address and the S3 prefix it serves, as the operator's settings name them and
#: as the operator passes them to runner pods (a local `kubemill run` reads them too).
ENV_VIEWER_URL = "KUBEMILL_VIEWER_URL"
ENV_VIEWER_ROOT = "KUBEMILL_VIEWER_ROOT"


def viewer_link(url: str, viewer: str, root: str) -> str | None:
    """The viewer page of the object at `url`, or None when `url` is outside `root` (or
    either setting is empty).

    >>> viewer_link("s3://results/team a/run/output.ipynb", "https://nb.example/k/", "s3://results/")
    'https://nb.example/k/view/team%20a/run/output.ipynb'
    """
    if not (viewer and root and url):
        return None
    base = root if root.endswith("/") else root + "/"
    if not url.startswith(base) or url == base:
        return None
    path = url[len(base) :]
    if any(part in ("", ".", "..") for part in path.split("/")):
        return None  # not a key the viewer would serve under this root
    return f"{viewer.rstrip('/')}/view/{quote(path, safe='/')}"
