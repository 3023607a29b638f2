"""The node's image store: ``make images`` unpacks each image into a folder (``rootfs/``, never
written, and the OCI image ``config.json``) and lists them in an index. Nothing is pulled: an
image not in the index fails like a pull the kubelet could not make."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import ocispec
from ..kube import JSON
from ..podconfig import ContainerConfigError
from .model import BACKOFF_MAX, BACKOFF_START, ERR_IMAGE_PULL_SECONDS

NO_IMAGES = "no images: run `make images`"


class ImagePullError(ContainerConfigError):
    """The image is not in this node's store; the kubelet's image back-off applies."""


@dataclass(frozen=True)
class Image:
    ref: str
    id: str
    rootfs: Path
    config: JSON


def load_images(path: Path) -> dict[str, str]:
    """The ``make images`` index: image reference -> store folder."""
    if not path.is_file():
        raise SystemExit(f"{NO_IMAGES} ({path} is missing)")
    images: dict[str, str] = dict(json.loads(path.read_text())["images"])
    return images


class ImageStore:
    """Looks references up in the index; each image's config is read once, since the store
    never changes under an image. Safe to use from every pod worker."""

    def __init__(self, index: dict[str, str]) -> None:
        self._index = index
        self._lock = threading.Lock()
        self._images: dict[str, Image] = {}

    def image(self, ref: str) -> Image:
        folder = ocispec.find_image(ref, self._index)
        if folder is None:
            raise ImagePullError(
                f'failed to pull and unpack image "{ref}": not found in this node\'s local image '
                "store (this node pulls nothing; build it with make images)"
            )
        with self._lock:
            cached = self._images.get(folder)
        if cached is None and not (Path(folder) / "config.json").is_file():
            # Another clone's `make images` pruned it (the store keeps the newest few).
            raise ImagePullError(
                f'failed to pull and unpack image "{ref}": its store folder {folder} is gone '
                "(pruned since this clone's make images); run make images again"
            )
        if cached is None:
            path = Path(folder)
            config = json.loads((path / "config.json").read_text())
            cached = Image(ref, path.name, path / "rootfs", dict(config.get("config") or {}))
            with self._lock:
                self._images[folder] = cached
        return cached


def read_image_file(rootfs: Path, relative: str) -> str:
    """A file of the image, never following a symlink out of it onto the host's file."""
    path = rootfs / relative
    if path.is_symlink() or not path.is_file():
        return ""
    return path.read_text(errors="replace")


class PullBackoff:
    """One pod's failed image lookups per container: the kubelet's doubling back-off, and the
    moment when ErrImagePull turns into ImagePullBackOff. Used by the pod's worker thread only."""

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}
        self._error_until: dict[str, float] = {}

    def failed(self, name: str) -> float:
        """Count a failed lookup; the back-off before the next attempt."""
        attempts = self._failures.get(name, 0) + 1
        self._failures[name] = attempts
        self._error_until[name] = time.monotonic() + ERR_IMAGE_PULL_SECONDS
        return float(min(BACKOFF_START * 2 ** (attempts - 1), BACKOFF_MAX))

    def pulled(self, name: str) -> None:
        self._failures.pop(name, None)

    def error_shown(self, name: str) -> bool:
        """True once per failure, when ErrImagePull has been shown long enough."""
        until = self._error_until.get(name)
        if until is None or time.monotonic() < until:
            return False
        del self._error_until[name]
        return True
