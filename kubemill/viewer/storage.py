"""The viewer's store: a read-only view of a local folder or an S3 prefix.

There is no write or delete operation here at all, so no route of the viewer can change what it
serves. The S3 client is the runner's (`kubemill.runner.storage.make_s3_client`: the same
endpoint, region and credential chain) and is passed in; boto3 is synchronous, so the
application calls these methods from a thread pool, never on its event loop.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kubemill.runner.storage import Location, s3_error

from .errors import NotFound, StoreError
from .listing import Entry
from .runindex_sources import LocalObjects, S3Objects, s3_root

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from .runindex import Objects
    from .s3lean import LeanS3

__all__ = [
    "FolderPage",
    "LocalStore",
    "ObjectInfo",
    "OpenedObject",
    "Reader",
    "S3Store",
    "Store",
    "StoredObject",
]

#: Keys per ListObjectsV2 request: S3's maximum, so 100,000 keys take 100 requests.
LIST_PAGE_KEYS = 1000


@dataclass(frozen=True)
class ObjectInfo:
    """What a HEAD tells about one object."""

    path: str
    size: int
    modified: datetime
    #: The object version's identity, without quotes; what ETag and the render cache use.
    etag: str
    version_id: str | None = None


@dataclass(frozen=True)
class StoredObject:
    info: ObjectInfo
    data: bytes


class Reader(Protocol):
    """An object's bytes being read (boto3's StreamingBody, or a file)."""

    def read(self, size: int = -1, /) -> bytes: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class OpenedObject:
    """An object whose bytes are read piece by piece, so a download of a big notebook is never
    held in memory whole; the reader must be closed."""

    info: ObjectInfo
    reader: Reader


@dataclass(frozen=True)
class FolderPage:
    entries: list[Entry]
    #: Where the next page starts (S3's ContinuationToken), None after the last page.
    next_token: str | None


class Store(Protocol):
    """What the viewer reads a store through. Paths are `paths.clean_path` results."""

    #: The store's address (`s3://bucket/prefix/` or an absolute folder), for titles and links.
    root: str

    def list_page(self, path: str, token: str | None = None) -> FolderPage:
        """One page of the folder `path`'s entries; NotFound when no such folder exists."""

    def head(self, path: str) -> ObjectInfo:
        """The object at `path`; NotFound when there is none (a folder is not an object)."""

    def get(self, path: str) -> StoredObject:
        """The object at `path` with its bytes; NotFound when there is none."""

    def open(self, path: str) -> OpenedObject:
        """The object at `path`, its bytes to be read; NotFound when there is none."""

    def is_folder(self, path: str) -> bool:
        """Whether `path` names a folder with at least one entry (the root always does)."""

    def folder_modified(self, path: str) -> datetime | None:
        """When a folder changed, where the store knows (a local folder; not an S3 prefix)."""

    def objects(self) -> Objects:
        """The same root as the runs index reads it: every key, recursively, with the same
        client (one connection pool, one credential chain)."""


def list_folder(store: Store, path: str) -> list[Entry]:
    """Every entry of a folder, following the store's pages to the end."""
    result = store.list_page(path)
    entries = list(result.entries)
    while result.next_token:
        result = store.list_page(path, result.next_token)
        entries += result.entries
    return entries


class S3Store:
    """A prefix of one bucket. Folders are the key prefixes ending in `/` (Delimiter "/").

    With `lean` (`s3lean.LeanS3.of(client, ...)`), listings and the runs index's reads take its
    fast path, falling back to `client` for any answer it does not handle: a folder of 100,000
    keys is 100 listing pages, each about 55 ms of CPU when boto3 parses it.
    """

    def __init__(self, client: S3Client, root: str, lean: LeanS3 | None = None) -> None:
        self._client = client
        self._bucket, self._prefix = s3_root(root)
        self.root = f"s3://{self._bucket}/{self._prefix}"
        self._lean = lean

    def _key(self, path: str) -> str:
        return self._prefix + path

    def _where(self, path: str) -> Location:
        return Location.parse(f"s3://{self._bucket}/{self._key(path)}")

    def _fail(self, exc: Exception, path: str) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return NotFound(f"{path or '/'} does not exist")
        return StoreError(s3_error(exc, "read", self._where(path)).message)

    def list_page(self, path: str, token: str | None = None) -> FolderPage:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = self._key(path + "/" if path else "")
        response = self._lean_page(prefix, token)
        if response is None:
            try:
                if token:
                    response = self._client.list_objects_v2(
                        Bucket=self._bucket,
                        Prefix=prefix,
                        Delimiter="/",
                        MaxKeys=LIST_PAGE_KEYS,
                        ContinuationToken=token,
                    )
                else:
                    response = self._client.list_objects_v2(
                        Bucket=self._bucket, Prefix=prefix, Delimiter="/", MaxKeys=LIST_PAGE_KEYS
                    )
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, path) from None
        entries = [
            Entry(name=common["Prefix"][len(prefix) : -1], is_dir=True)
            for common in response.get("CommonPrefixes", [])
            if len(common.get("Prefix", "")) > len(prefix) + 1
        ]
        marker = False
        for item in response.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if not name:  # a "folder marker" (consoles make one for an empty folder)
                marker = True
                continue
            entries.append(
                Entry(
                    name=name,
                    is_dir=False,
                    size=item.get("Size", 0),
                    modified=item.get("LastModified"),
                    etag=str(item.get("ETag", "")).strip('"') or None,
                )
            )
        next_token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        if path and not token and not entries and not next_token and not marker:
            raise NotFound(f"{path} does not exist")
        return FolderPage(entries, next_token)

    def _lean_page(self, prefix: str, token: str | None) -> Any:
        from .s3lean import NotLean

        if self._lean is None or not self._lean.usable:
            return None
        try:
            return self._lean.list_page(
                self._bucket, prefix, delimiter="/", token=token, max_keys=LIST_PAGE_KEYS
            )
        except NotLean:
            return None

    def _lean_head(self, path: str) -> Any:
        """HeadObject's answer through the lean path; None when it has none to give (boto3
        then asks, and words any error)."""
        from .s3lean import NotLean

        if self._lean is None or not self._lean.usable:
            return None
        try:
            found = self._lean.head(self._bucket, self._key(path))
        except NotLean:
            return None
        if found is None:
            raise NotFound(f"{path} does not exist")
        return found

    def head(self, path: str) -> ObjectInfo:
        from botocore.exceptions import BotoCoreError, ClientError

        if not path:
            raise NotFound("the root is a folder, not an object")
        response = self._lean_head(path)
        if response is None:
            try:
                response = self._client.head_object(Bucket=self._bucket, Key=self._key(path))
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc, path) from None
        return ObjectInfo(
            path=path,
            size=response.get("ContentLength", 0),
            modified=response["LastModified"],
            etag=str(response.get("ETag", "")).strip('"'),
            version_id=response.get("VersionId") or None,
        )

    def get(self, path: str) -> StoredObject:
        from botocore.exceptions import BotoCoreError, ClientError

        if not path:
            raise NotFound("the root is a folder, not an object")
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key(path))
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, path) from None
        info = ObjectInfo(
            path=path,
            size=len(data),
            modified=response["LastModified"],
            etag=str(response.get("ETag", "")).strip('"'),
            version_id=response.get("VersionId") or None,
        )
        return StoredObject(info, data)

    def open(self, path: str) -> OpenedObject:
        from botocore.exceptions import BotoCoreError, ClientError

        if not path:
            raise NotFound("the root is a folder, not an object")
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key(path))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, path) from None
        info = ObjectInfo(
            path=path,
            size=response.get("ContentLength", 0),
            modified=response["LastModified"],
            etag=str(response.get("ETag", "")).strip('"'),
            version_id=response.get("VersionId") or None,
        )
        return OpenedObject(info, response["Body"])

    def is_folder(self, path: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if not path:
            return True
        try:
            response = self._client.list_objects_v2(
                Bucket=self._bucket, Prefix=self._key(path + "/"), MaxKeys=1
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc, path) from None
        return bool(response.get("KeyCount") or response.get("Contents"))

    def folder_modified(self, path: str) -> datetime | None:
        return None

    def objects(self) -> Objects:
        return S3Objects(self._client, self.root, self._lean)


def _modified(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _etag(st: os.stat_result) -> str:
    """A file version's identity without reading it: inode, size and modification time in
    nanoseconds, as web servers derive theirs (a rewrite changes at least one)."""
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"


class LocalStore:
    """A folder on this machine. Symbolic links that lead outside it are treated as missing."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root).resolve()
        if not self._root.is_dir():
            raise NotFound(f"{root} is not a folder")
        self.root = str(self._root)

    def _resolve(self, path: str) -> Path:
        target = (self._root / path).resolve() if path else self._root
        if target != self._root and not target.is_relative_to(self._root):
            raise NotFound(f"{path} does not exist")
        return target

    def list_page(self, path: str, token: str | None = None) -> FolderPage:
        folder = self._resolve(path)
        entries: list[Entry] = []
        try:
            with os.scandir(folder) as scan:
                for item in scan:
                    try:
                        st = item.stat()
                    except OSError:  # a dangling link
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        entries.append(Entry(item.name, True, modified=_modified(st)))
                    elif stat.S_ISREG(st.st_mode):
                        entries.append(
                            Entry(item.name, False, st.st_size, _modified(st), _etag(st))
                        )
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{path or '/'} does not exist") from None
        except PermissionError:
            raise StoreError(f"{path or '/'}: permission denied") from None
        return FolderPage(entries, None)

    def _stat(self, path: str) -> tuple[Path, os.stat_result]:
        target = self._resolve(path)
        try:
            st = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{path} does not exist") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(f"{path} is not a file")
        return target, st

    def head(self, path: str) -> ObjectInfo:
        _, st = self._stat(path)
        return ObjectInfo(path, st.st_size, _modified(st), _etag(st))

    def get(self, path: str) -> StoredObject:
        target, _ = self._stat(path)
        try:
            with target.open("rb") as handle:
                st = os.fstat(handle.fileno())
                data = handle.read()
        except PermissionError:
            raise StoreError(f"{path}: permission denied") from None
        return StoredObject(ObjectInfo(path, len(data), _modified(st), _etag(st)), data)

    def open(self, path: str) -> OpenedObject:
        target, _ = self._stat(path)
        try:
            handle = target.open("rb")
        except PermissionError:
            raise StoreError(f"{path}: permission denied") from None
        st = os.fstat(handle.fileno())
        return OpenedObject(ObjectInfo(path, st.st_size, _modified(st), _etag(st)), handle)

    def is_folder(self, path: str) -> bool:
        try:
            return self._resolve(path).is_dir()
        except NotFound:
            return False

    def folder_modified(self, path: str) -> datetime | None:
        try:
            return _modified(self._resolve(path).stat())
        except (NotFound, OSError):
            return None

    def objects(self) -> Objects:
        return LocalObjects(self._root)
