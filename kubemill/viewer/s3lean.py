"""S3 GetObject, HeadObject and ListObjectsV2 without boto3's per-request overhead, for the
viewer's hot paths (the runs index reads one run.json per run and walks every key; a folder page
lists, a cached notebook page asks for one HEAD).

boto3 spends about 0.9 ms of CPU on a GetObject of a 2 KB run.json and about 55 ms on parsing a
ListObjectsV2 page of 1,000 keys; its threads share one interpreter lock, so a rebuild of
100,000 runs was CPU-bound at well over two minutes. Here a request is signed with botocore's
own SigV4 signer (`S3SigV4Auth`, with credentials from the same chain as the client's) and sent
through a urllib3 connection pool, and a listing is parsed with ElementTree: about 0.3 ms per
GetObject and a few ms per page (`benchmarks/bench_viewer.py`).

It is a fast path, never the only one: a request that does not get the plain answer expected
(200, or 404 for a key that is gone) is made again through the boto3 client (which knows
redirects, retries, virtual hosts and every error), and after `GIVE_UP` such answers in a row
the lean path is left for good. It only serves path-style endpoints (SeaweedFS, MinIO, Ceph
and the like, as `make_s3_client` configures them).
"""

from __future__ import annotations

import datetime
import logging
import threading
import xml.etree.ElementTree as ElementTree
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote, unquote_plus, urlencode, urlsplit
from urllib.request import getproxies, proxy_bypass

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["LeanS3", "NotLean"]

_log = logging.getLogger(__name__)

#: Unexpected answers in a row after which the lean path is no longer tried.
GIVE_UP = 8
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class NotLean(Exception):
    """The lean path got an answer it does not handle; ask the boto3 client instead."""


class LeanS3:
    """GetObject, HeadObject and ListObjectsV2 through a pool of `connections`."""

    def __init__(self, endpoint: str, region: str, credentials: Any, connections: int) -> None:
        import urllib3
        from botocore.httpsession import get_cert_path

        self._endpoint = endpoint.rstrip("/")
        self._region = region
        self._credentials = credentials
        kwargs: dict[str, Any] = {}
        if self._endpoint.startswith("https:"):
            kwargs = {"cert_reqs": "CERT_REQUIRED", "ca_certs": get_cert_path(True)}
        self._pool = urllib3.PoolManager(
            maxsize=connections,
            retries=False,
            timeout=urllib3.Timeout(connect=5, read=60),
            **kwargs,
        )
        self._failures = 0
        self._lock = threading.Lock()

    @classmethod
    def of(cls, client: S3Client, connections: int) -> LeanS3 | None:
        """The lean path beside `client` (its endpoint, region and credential chain), or None
        where it does not apply: virtual-hosted addressing (AWS), an endpoint reached through
        a proxy, or no credentials."""
        import boto3

        config = client.meta.config
        if (getattr(config, "s3", None) or {}).get("addressing_style") != "path":
            return None
        endpoint = client.meta.endpoint_url
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https"):
            return None
        if parts.scheme in getproxies() and not proxy_bypass(parts.hostname or ""):
            return None  # botocore goes through the proxy the environment names; this would not
        credentials = boto3.session.Session().get_credentials()
        if credentials is None:
            return None
        return cls(endpoint, client.meta.region_name or "us-east-1", credentials, connections)

    @property
    def usable(self) -> bool:
        return self._failures < GIVE_UP

    def get(self, bucket: str, key: str) -> bytes | None:
        """The object's bytes, None when there is no such key; NotLean for anything else."""
        response = self._request(f"/{bucket}/{quote(key, safe='/~')}")
        if response.status == 404 and _error_code(response.data) == "NoSuchKey":
            self._succeeded()
            return None
        if response.status != 200:
            self._failed(f"GET s3://{bucket}/{key}: HTTP {response.status}")
        self._succeeded()
        data: bytes = response.data
        return data

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """HeadObject shaped as boto3 answers it (ContentLength, LastModified, ETag,
        VersionId), None when there is no such key; NotLean for anything else. A cached
        notebook page costs one HEAD: boto3's took longer than sending the page."""
        response = self._request(f"/{bucket}/{quote(key, safe='/~')}", method="HEAD")
        if response.status == 404:
            self._succeeded()
            return None
        if response.status != 200:
            self._failed(f"HEAD s3://{bucket}/{key}: HTTP {response.status}")
        headers = response.headers
        try:
            answer = {
                "ContentLength": int(headers["Content-Length"]),
                "LastModified": parsedate_to_datetime(headers["Last-Modified"]),
                "ETag": headers.get("ETag", ""),
            }
        except (KeyError, ValueError, TypeError) as exc:
            self._failed(f"HEAD s3://{bucket}/{key}: unreadable headers ({exc})")
        if headers.get("x-amz-version-id"):
            answer["VersionId"] = headers["x-amz-version-id"]
        self._succeeded()
        return answer

    def list_page(
        self, bucket: str, prefix: str, *, delimiter: str | None, token: str | None, max_keys: int
    ) -> dict[str, Any]:
        """One ListObjectsV2 page, shaped as boto3 answers it (keys decoded, LastModified a
        datetime, Size an int); NotLean for anything but a 200 with a listing."""
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
        query["encoding-type"] = "url"
        if delimiter:
            query["delimiter"] = delimiter
        if token:
            query["continuation-token"] = token
        response = self._request(f"/{bucket}", query)
        if response.status != 200:
            self._failed(f"LIST s3://{bucket}/{prefix}: HTTP {response.status}")
        try:
            parsed = _listing(response.data)
        except (ElementTree.ParseError, ValueError, KeyError) as exc:
            self._failed(f"LIST s3://{bucket}/{prefix}: unreadable answer ({exc})")
        self._succeeded()
        return parsed

    def _request(
        self, path: str, query: dict[str, str] | None = None, *, method: str = "GET"
    ) -> Any:
        import urllib3
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self._endpoint + path
        if query:
            url += "?" + urlencode(sorted(query.items()), quote_via=quote, safe="~")
        request = AWSRequest(method=method, url=url)
        # Frozen per request: refreshable credentials (a pod's web identity) renew themselves.
        S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self._region).add_auth(
            request
        )
        try:
            return self._pool.request(
                method, url, headers=dict(request.headers.items()), preload_content=True
            )
        except urllib3.exceptions.HTTPError as exc:
            self._failed(f"{method} {url}: {exc}")

    def _failed(self, what: str) -> NoReturn:
        with self._lock:
            self._failures += 1
            if self._failures == GIVE_UP:
                _log.warning("S3 requests go through boto3 from now on; the last one: %s", what)
        raise NotLean(what)

    def _succeeded(self) -> None:
        if self._failures:
            with self._lock:
                self._failures = 0


def _error_code(body: bytes) -> str | None:
    try:
        return ElementTree.fromstring(body).findtext("Code")
    except ElementTree.ParseError:
        return None


def _listing(body: bytes) -> dict[str, Any]:
    root = ElementTree.fromstring(body)
    if root.tag != f"{_NS}ListBucketResult":
        raise ValueError(f"not a listing but {root.tag}")
    encoded = root.findtext(f"{_NS}EncodingType") == "url"

    def name(text: str | None) -> str:
        text = text or ""
        return unquote_plus(text) if encoded else text

    contents = [
        {
            "Key": name(item.findtext(f"{_NS}Key")),
            "ETag": item.findtext(f"{_NS}ETag") or "",
            "Size": int(item.findtext(f"{_NS}Size") or 0),
            "LastModified": datetime.datetime.fromisoformat(
                item.findtext(f"{_NS}LastModified") or ""
            ),
        }
        for item in root.iterfind(f"{_NS}Contents")
    ]
    prefixes = [
        {"Prefix": name(item.findtext(f"{_NS}Prefix"))}
        for item in root.iterfind(f"{_NS}CommonPrefixes")
    ]
    parsed: dict[str, Any] = {
        "IsTruncated": root.findtext(f"{_NS}IsTruncated") == "true",
        "KeyCount": int(root.findtext(f"{_NS}KeyCount") or len(contents) + len(prefixes)),
    }
    if contents:
        parsed["Contents"] = contents
    if prefixes:
        parsed["CommonPrefixes"] = prefixes
    token = root.findtext(f"{_NS}NextContinuationToken")
    if token:
        parsed["NextContinuationToken"] = token
    return parsed
