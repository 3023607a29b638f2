"""The viewer's lean S3 path (`kubemill.viewer.s3lean`) against a real S3 server: it answers
exactly what boto3 answers for the same listing and object, keys a URL or an XML parser could
break included, and any answer it does not handle goes to boto3 instead."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.credentials import Credentials

from kubemill.runner.storage import make_s3_client
from kubemill.viewer.app import make_store
from kubemill.viewer.runindex_sources import S3Objects
from kubemill.viewer.s3lean import GIVE_UP, LeanS3, NotLean
from kubemill.viewer.settings import ViewerSettings
from kubemill.viewer.storage import S3Store, list_folder
from kubemill_testenv.s3server import S3Server

pytestmark = pytest.mark.integration

KEYS = [
    "runs/a b/run.json",
    "runs/é ü+%#?/run.json",
    "runs/x+y/output.ipynb",
    "runs/100% [done] & 'so'/run.json",
    "runs/日本語/results.json",
    "runs/a%2Fb%20c.txt",
    "runs/<tag>&amp;.txt",
    "runs/deep/er/still/run.json",
    "other/outside.txt",
]


@pytest.fixture
def reader_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read-only identity, through the credential chain (the environment), as the viewer
    reads a store."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader_secret_key)


def _filled(s3_admin: Any, bucket: str) -> None:
    for n, key in enumerate(KEYS):
        s3_admin.put_object(Bucket=bucket, Key=key, Body=f"object {n}: {key}".encode())


def _boto_pages(client: Any, bucket: str, prefix: str, delimiter: str | None) -> list[Any]:
    pages, token = [], None
    while True:
        args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 2}
        if delimiter:
            args["Delimiter"] = delimiter
        if token:
            args["ContinuationToken"] = token
        page = client.list_objects_v2(**args)
        pages.append(page)
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated"):
            return pages


def _lean_pages(lean: LeanS3, bucket: str, prefix: str, delimiter: str | None) -> list[Any]:
    pages, token = [], None
    while True:
        page = lean.list_page(bucket, prefix, delimiter=delimiter, token=token, max_keys=2)
        pages.append(page)
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated"):
            return pages


def _shape(pages: list[Any]) -> list[Any]:
    return [
        (
            [(o["Key"], o["ETag"], o["Size"], o["LastModified"]) for o in p.get("Contents", [])],
            [c["Prefix"] for c in p.get("CommonPrefixes", [])],
            p["IsTruncated"],
        )
        for p in pages
    ]


@pytest.mark.parametrize(("prefix", "delimiter"), [("runs/", None), ("runs/", "/"), ("", "/")])
def test_lean_listings_are_boto3s_page_by_page(
    s3_server: S3Server,
    s3_admin: Any,
    bucket: str,
    reader_env: None,
    prefix: str,
    delimiter: str | None,
) -> None:
    _filled(s3_admin, bucket)
    client = make_s3_client(s3_server.endpoint_url, "us-east-1")
    lean = LeanS3.of(client, 4)
    assert lean is not None
    expected = _shape(_boto_pages(client, bucket, prefix, delimiter))
    assert len(expected) > 1 or not prefix  # continuation tokens are followed (root: 2 entries)
    assert _shape(_lean_pages(lean, bucket, prefix, delimiter)) == expected


def test_lean_reads_are_boto3s_and_a_missing_key_is_none(
    s3_server: S3Server, s3_admin: Any, bucket: str, reader_env: None
) -> None:
    _filled(s3_admin, bucket)
    client = make_s3_client(s3_server.endpoint_url, "us-east-1")
    lean = LeanS3.of(client, 4)
    assert lean is not None
    for key in KEYS:
        assert lean.get(bucket, key) == client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert lean.get(bucket, "runs/nope/run.json") is None
    for key in KEYS:
        found = lean.head(bucket, key)
        expected = client.head_object(Bucket=bucket, Key=key)
        assert found is not None
        assert [found[k] for k in ("ContentLength", "LastModified", "ETag")] == [
            expected[k] for k in ("ContentLength", "LastModified", "ETag")
        ]
    assert lean.head(bucket, "runs/nope/run.json") is None
    with pytest.raises(NotLean):
        lean.get(f"{bucket}-missing", "runs/a b/run.json")  # NoSuchBucket: boto3 words it


def test_the_viewers_store_walks_and_reads_through_the_lean_path(
    s3_server: S3Server, s3_admin: Any, bucket: str, reader_env: None
) -> None:
    _filled(s3_admin, bucket)
    settings = ViewerSettings(
        root=f"s3://{bucket}/runs/",
        cache_dir=s3_server.workdir,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region="us-east-1",
    )
    store = make_store(settings)
    assert isinstance(store, S3Store)
    plain = S3Store(make_s3_client(s3_server.endpoint_url, "us-east-1"), settings.root)
    assert list_folder(store, "") == list_folder(plain, "")
    walked = [(o.path, o.etag, o.size, o.modified) for o in store.objects().walk("")]
    assert walked == [(o.path, o.etag, o.size, o.modified) for o in plain.objects().walk("")]
    assert len(walked) == len(KEYS) - 1
    assert (
        store.objects().read("é ü+%#?/run.json") == b"object 1: runs/\xc3\xa9 \xc3\xbc+%#?/run.json"
    )
    with pytest.raises(KeyError):
        store.objects().read("nope/run.json")


def test_answers_the_lean_path_does_not_handle_go_to_boto3_until_it_gives_up(
    s3_server: S3Server, s3_admin: Any, bucket: str, reader_env: None
) -> None:
    _filled(s3_admin, bucket)
    client = make_s3_client(s3_server.endpoint_url, "us-east-1")
    forged = LeanS3(s3_server.endpoint_url, "us-east-1", Credentials("nobody", "wrong"), 4)
    objects = S3Objects(client, f"s3://{bucket}/runs/", forged)
    for _ in range(GIVE_UP + 2):
        assert objects.read("a b/run.json") == b"object 0: runs/a b/run.json"
    assert not forged.usable
    assert len(list(objects.walk(""))) == len(KEYS) - 1
    with pytest.raises(KeyError):
        objects.read("nope/run.json")


def test_an_endpoint_behind_a_proxy_is_left_to_boto3(
    s3_server: S3Server, reader_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_s3_client(s3_server.endpoint_url, "us-east-1")
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.setenv("no_proxy", "")
    assert LeanS3.of(client, 4) is None
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    assert LeanS3.of(client, 4) is not None
    aws = make_s3_client(None, "us-east-1")  # virtual-hosted addressing
    assert LeanS3.of(aws, 4) is None
