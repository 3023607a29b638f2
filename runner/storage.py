"""Where notebooks come from and where outputs go: local files, stdin/stdout, S3, HTTP(S).

The S3 client is made by a factory passed in, so tests and the CLI choose endpoint and
credentials in one place and nothing here reads the environment.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse, urlsplit, urlunsplit

from .errors import BadInputError, InputNotFound, StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "Fetched",
    "Location",
    "Storage",
    "content_type",
    "display_uri",
    "make_s3_client",
    "s3_error",
    "source_identity",
    "storage_from_environ",
]

#: Outputs above this size go up in parts, so a large notebook is neither one huge request nor
#: held twice in memory by the transfer manager.
MULTIPART_THRESHOLD = 8 * 1024 * 1024

_CONTENT_TYPES = {
    ".ipynb": "application/x-ipynb+json",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
}


def display_uri(uri: str) -> str:
    """A URI as it may be recorded: without user:password@ or query (presigned signatures)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def content_type(uri: str) -> str:
    return _CONTENT_TYPES.get(Path(urlparse(uri).path).suffix, "application/octet-stream")


@dataclass(frozen=True)
class Location:
    """A parsed input or output address."""

    scheme: str  # "file", "s3", "http", "https" or "-" (stdin/stdout)
    uri: str  # as the user wrote it, normalised for file:// and S3
    bucket: str = ""
    key: str = ""
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Location:
        if text == "-":
            return cls("-", "-")
        if text.startswith("s3://"):
            # Not urlparse: an S3 key may hold '#' and '?', which it would cut off as a fragment
            # or a query, so the runner would read another object than the one asked for.
            bucket, _, key = text.removeprefix("s3://").partition("/")
            if not bucket:
                raise BadInputError(f"{text!r} has no bucket; write s3://BUCKET/KEY")
            return cls("s3", text, bucket=bucket, key=key.lstrip("/"))
        parsed = urlparse(text)
        if parsed.scheme in ("http", "https"):
            return cls(parsed.scheme, text)
        if parsed.scheme == "file":
            return cls("file", text, path=parsed.path)
        if parsed.scheme and len(parsed.scheme) > 1:
            raise BadInputError(
                f"{text!r} uses the unsupported scheme {parsed.scheme!r}; "
                "use a local path, -, s3:// or http(s)://"
            )
        return cls("file", text, path=text)

    @property
    def is_folder(self) -> bool:
        return self.uri.endswith("/")

    def child(self, name: str) -> Location:
        """The location of `name` inside this folder."""
        return Location.parse(self.uri + name)


@dataclass(frozen=True)
class Fetched:
    """An input's bytes and what identifies that exact version of it."""

    data: bytes
    sha256: str
    etag: str | None = None
    version_id: str | None = None


def make_s3_client(
    endpoint_url: str | None,
    region: str | None = None,
    *,
    quick: bool = False,
    connections: int = 10,
) -> S3Client:
    """A boto3 S3 client using the standard credential chain.

    Path-style addressing for custom endpoints, because S3-compatible stores rarely serve
    virtual-hosted buckets; standard retry mode with backoff for transient errors. A `quick`
    client (checkpoints, the save after SIGTERM) gives up after about 14 s per object instead
    of minutes, so a stop always fits in the pod's grace period. `connections` is the pool size
    (botocore's default, 10, unless a caller reads from more threads than that, as the viewer's
    runs index does).
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 2 if quick else 5, "mode": "standard"},
        connect_timeout=2 if quick else 5,
        read_timeout=5 if quick else 60,
        s3={"addressing_style": "path"} if endpoint_url else {},
        max_pool_connections=connections,
    )
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
    )
    return client


def storage_from_environ(environ: Mapping[str, str], endpoint_url: str | None = None) -> Storage:
    """Storage configured the way a user's shell or a pod configures S3 tools: the endpoint from
    `endpoint_url`, else $AWS_ENDPOINT_URL; the region from $AWS_REGION or $AWS_DEFAULT_REGION.

    The one place an entry point (the CLI, `kubemill.testing`) turns its environment into
    storage, so every reader addresses the same S3 store the same way.
    """
    endpoint = endpoint_url or environ.get("AWS_ENDPOINT_URL")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    return Storage(lambda quick: make_s3_client(endpoint, region, quick=quick))


def _missing_bucket(location: Location, action: str) -> StorageError:
    return StorageError(
        f"cannot {action} s3://{location.bucket}/{location.key}: bucket {location.bucket!r} "
        "does not exist; create it or fix the URL"
    )


def s3_error(exc: Exception, action: str, location: Location) -> StorageError:
    """A one-line explanation of an S3 failure, with the fix (the runner's and the viewer's)."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = f"s3://{location.bucket}/{location.key}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError(
            f"cannot {action} {where}: no S3 credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web identity role"
        )
    if isinstance(exc, EndpointConnectionError):
        return StorageError(
            f"cannot {action} {where}: the S3 endpoint is unreachable ({exc}); check "
            "--s3-endpoint-url / AWS_ENDPOINT_URL and the network"
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in ("NoSuchBucket",):
            return _missing_bucket(location, action)
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return StorageError(
                f"cannot {action} {where}: access denied; check the credentials' permissions "
                "and the bucket policy"
            )
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"cannot {action} {where}: the S3 credentials were rejected ({code}); "
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return StorageError(f"cannot {action} {where}: {code}: {error.get('Message', exc)}")
    return StorageError(f"cannot {action} {where}: {exc}")


class Storage:
    """Reads inputs and writes outputs for every supported location."""

    def __init__(
        self,
        s3_client_factory: Callable[[bool], S3Client],
        *,
        http_timeout: float = 30.0,
        http_attempts: int = 3,
    ) -> None:
        """`s3_client_factory(quick)` makes the normal (False) or the short-timeout client."""
        self._s3_factory = s3_client_factory
        self._clients: dict[bool, S3Client] = {}
        self._http_timeout = http_timeout
        self._http_attempts = http_attempts
        # Files get the mode a plain open() would give them, not one chosen here.
        umask = os.umask(0o022)
        os.umask(umask)
        self._file_mode = 0o666 & ~umask

    def _client(self, quick: bool = False) -> S3Client:
        if quick not in self._clients:
            self._clients[quick] = self._s3_factory(quick)
        return self._clients[quick]

    @property
    def s3(self) -> S3Client:
        return self._client()

    # --- reading --------------------------------------------------------------------------

    def read(self, location: Location) -> Fetched:
        if location.scheme == "-":
            data = sys.stdin.buffer.read()
            return Fetched(data, hashlib.sha256(data).hexdigest())
        if location.scheme == "file":
            try:
                data = Path(location.path).read_bytes()
            except FileNotFoundError:
                raise InputNotFound(f"{location.uri}: no such file") from None
            except IsADirectoryError:
                raise BadInputError(f"{location.uri} is a directory, not a notebook") from None
            except PermissionError:
                raise BadInputError(f"{location.uri}: permission denied") from None
            return Fetched(data, hashlib.sha256(data).hexdigest())
        if location.scheme == "s3":
            return self._read_s3(location)
        return self._read_http(location)

    def _read_s3(self, location: Location) -> Fetched:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.s3.get_object(Bucket=location.bucket, Key=location.key)
            data = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise InputNotFound(f"{location.uri} does not exist") from None
            raise self._explain(exc, "read", location) from None
        except BotoCoreError as exc:
            raise s3_error(exc, "read", location) from None
        return Fetched(
            data,
            hashlib.sha256(data).hexdigest(),
            etag=str(response.get("ETag", "")).strip('"') or None,
            version_id=response.get("VersionId") or None,
        )

    def _read_http(self, location: Location) -> Fetched:
        request = urllib.request.Request(location.uri, headers={"User-Agent": "kubemill"})
        delay = 0.5
        for attempt in range(1, self._http_attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self._http_timeout) as response:
                    data = response.read()
                    etag = response.headers.get("ETag")
                return Fetched(data, hashlib.sha256(data).hexdigest(), etag=etag)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise InputNotFound(f"{location.uri} does not exist (HTTP 404)") from None
                if exc.code < 500 or attempt == self._http_attempts:
                    raise StorageError(f"cannot read {location.uri}: HTTP {exc.code}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt == self._http_attempts:
                    reason = getattr(exc, "reason", exc)
                    raise StorageError(f"cannot read {location.uri}: {reason}") from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    # --- writing --------------------------------------------------------------------------

    def check_writable(self, location: Location) -> None:
        """Fail before any work is done when the output obviously cannot be written.

        A missing bucket or an unreachable endpoint is found here, not after an hour of
        execution. Denied permission to *look* at a bucket proves nothing about writing to it,
        so that case is left for the real write to decide.
        """
        if location.scheme == "file":
            if not location.is_folder and Path(location.path).is_dir():
                raise StorageError(
                    f"cannot write {location.uri}: it is a directory; end the output with / "
                    "to write a run folder into it"
                )
            existing = Path(location.path) if location.is_folder else Path(location.path).parent
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            if not os.access(existing, os.W_OK):
                raise StorageError(f"cannot write {location.uri}: {existing} is not writable")
        elif location.scheme == "s3":
            from botocore.exceptions import BotoCoreError, ClientError

            try:
                self.s3.head_bucket(Bucket=location.bucket)
            except ClientError as exc:
                if self._bucket_missing(exc):
                    raise _missing_bucket(location, "write") from None
            except BotoCoreError as exc:
                raise s3_error(exc, "write", location) from None

    def write(
        self, location: Location, data: bytes, *, durable: bool = False, quick: bool = False
    ) -> None:
        """Write `data`; local files are replaced atomically, fsynced when `durable`; `quick`
        uses short S3 timeouts."""
        if location.scheme == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        elif location.scheme == "file":
            self._write_file(Path(location.path), data, durable)
        elif location.scheme == "s3":
            self._write_s3(location, data, self._client(quick))
        else:
            raise BadInputError(f"cannot write to {location.uri}: use a local path, - or s3://")

    def _write_file(self, path: Path, data: bytes, durable: bool) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    if durable:
                        handle.flush()
                        os.fsync(handle.fileno())
                os.chmod(tmp, self._file_mode)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _write_s3(self, location: Location, data: bytes, client: S3Client) -> None:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        kind = content_type(location.key)
        try:
            if len(data) < MULTIPART_THRESHOLD:
                client.put_object(
                    Bucket=location.bucket, Key=location.key, Body=data, ContentType=kind
                )
            else:
                config = TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD,
                    multipart_chunksize=MULTIPART_THRESHOLD,
                    max_concurrency=4,
                )
                client.upload_fileobj(
                    io.BytesIO(data),
                    location.bucket,
                    location.key,
                    ExtraArgs={"ContentType": kind},
                    Config=config,
                )
        except (ClientError, BotoCoreError) as exc:
            raise self._explain(exc, "write", location) from None
        except Exception as exc:  # the transfer manager wraps errors in its own types
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError | BotoCoreError):
                raise self._explain(cause, "write", location) from None
            raise

    @staticmethod
    def _bucket_missing(exc: Exception) -> bool:
        error = getattr(exc, "response", {}).get("Error", {})
        return str(error.get("Code")) in ("404", "NoSuchBucket", "NotFound")

    def _explain(self, exc: Exception, action: str, location: Location) -> StorageError:
        """Like `s3_error`, but tells a missing bucket from a denied one.

        Some S3-compatible stores (SeaweedFS among them) answer a write to a bucket that does
        not exist with AccessDenied; a HEAD on the bucket tells the two apart.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("AccessDenied", "403", "Forbidden"):
            try:
                self.s3.head_bucket(Bucket=location.bucket)
            except ClientError as head:
                if self._bucket_missing(head):
                    return _missing_bucket(location, action)
            except BotoCoreError:
                pass
        return s3_error(exc, action, location)


def source_identity(fetched: Fetched) -> dict[str, Any]:
    """The identifying fields of an input, for lineage."""
    out: dict[str, Any] = {"sha256": fetched.sha256}
    if fetched.etag:
        out["etag"] = fetched.etag
    if fetched.version_id:
        out["versionId"] = fetched.version_id
    return out
