"""The two stores the runs index reads today: a local folder and an S3 prefix.

Both implement `kubemill.viewer.runindex.Objects`; the viewer's own storage may implement it
instead (its `ObjectInfo` is already a `ListedObject`). The S3 client is the runner's
(`make_s3_client`: the same endpoint, region and credential chain), passed in.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubemill.runner.storage import Location

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from .s3lean import LeanS3

__all__ = ["Listed", "LocalObjects", "S3Objects", "SourceError"]

_log = logging.getLogger(__name__)

#: Keys per ListObjectsV2 request: S3's maximum.
LIST_PAGE_KEYS = 1000


class SourceError(Exception):
    """The store could not be listed or read (unreachable, denied): worth retrying later."""


@dataclass(frozen=True)
class Listed:
    """One object of a walk (a `runindex.ListedObject`)."""

    path: str
    etag: str
    size: int
    modified: datetime.datetime


class LocalObjects:
    """A folder on this machine; paths are relative to it, `/`-separated.

    A file's etag is its inode, size and modification time in nanoseconds, which a rewrite
    (the runner replaces files atomically, so a new inode) always changes, without reading it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise SourceError(f"{root} is not a folder")

    def walk(self, prefix: str = "") -> Iterator[Listed]:
        start = self.root / prefix if prefix else self.root
        stack = [start]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed while walking, as an S3 listing would no longer show it
            except PermissionError as exc:
                if folder == start:
                    raise SourceError(f"cannot list {folder}: permission denied") from exc
                # One folder this user may not read (a volume's lost+found) holds no run it
                # could show; the rest of the store still is indexed.
                _log.warning("skipping %s: permission denied", folder)
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield Listed(
                        path=Path(entry.path).relative_to(self.root).as_posix(),
                        etag=f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}",
                        size=st.st_size,
                        modified=datetime.datetime.fromtimestamp(st.st_mtime, datetime.UTC),
                    )

    def read(self, path: str) -> bytes:
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise KeyError(path)
        try:
            return target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(path) from None
        except OSError as exc:
            raise SourceError(f"cannot read {target}: {exc.strerror or exc}") from exc


def s3_root(root: str) -> tuple[str, str]:
    """The bucket and the key prefix (empty, or ending in `/`) of an `s3://bucket/prefix`
    address that is served as a folder; ValueError for any other address."""
    location = Location.parse(root)
    if location.scheme != "s3":
        raise ValueError(f"{root!r} is not an s3:// address")
    key = location.key
    return location.bucket, key if not key or key.endswith("/") else key + "/"


class S3Objects:
    """The keys under an `s3://bucket/prefix/` address; paths are relative to the prefix.

    With `lean` (`s3lean.LeanS3.of(client, ...)`), reads and listings take its fast path and
    fall back to `client` for any answer it does not handle.
    """

    def __init__(self, client: S3Client, root: str, lean: LeanS3 | None = None) -> None:
        self._client = client
        self._bucket, self._prefix = s3_root(root)
        self.root = f"s3://{self._bucket}/{self._prefix}"
        self._lean = lean

    def walk(self, prefix: str = "") -> Iterator[Listed]:
        full = self._prefix + prefix
        token: str | None = None
        while True:
            response = self._lean_page(full, token)
            if response is None:
                response = self._page(full, token)
            for item in response.get("Contents", []):
                yield Listed(
                    path=item["Key"][len(self._prefix) :],
                    etag=str(item.get("ETag", "")).strip('"'),
                    size=item.get("Size", 0),
                    modified=item["LastModified"],
                )
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return

    def _page(self, prefix: str, token: str | None) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if token is None:
                return self._client.list_objects_v2(
                    Bucket=self._bucket, Prefix=prefix, MaxKeys=LIST_PAGE_KEYS
                )
            return self._client.list_objects_v2(
                Bucket=self._bucket, Prefix=prefix, MaxKeys=LIST_PAGE_KEYS, ContinuationToken=token
            )
        except (ClientError, BotoCoreError) as exc:
            raise SourceError(f"cannot list s3://{self._bucket}/{prefix}: {exc}") from exc

    def _lean_page(self, prefix: str, token: str | None) -> Any:
        from .s3lean import NotLean

        if self._lean is None or not self._lean.usable:
            return None
        try:
            return self._lean.list_page(
                self._bucket, prefix, delimiter=None, token=token, max_keys=LIST_PAGE_KEYS
            )
        except NotLean:
            return None

    def read(self, path: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        from .s3lean import NotLean

        key = self._prefix + path
        if self._lean is not None and self._lean.usable:
            try:
                data = self._lean.get(self._bucket, key)
            except NotLean:
                pass
            else:
                if data is None:
                    raise KeyError(path)
                return data
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
                raise KeyError(path) from None
            raise SourceError(f"cannot read s3://{self._bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise SourceError(f"cannot read s3://{self._bucket}/{key}: {exc}") from exc
