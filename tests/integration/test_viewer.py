"""The viewer against a real S3 server (SeaweedFS) and a real folder, over real HTTP.

What Commuter got wrong is tested here: every key of a prefix with more than 1,000 keys is
listed, a missing path is 404, keys with spaces and non-ASCII letters list and download, and
no method changes what is stored.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nbformat
import pytest

from kubemill.viewer import paths, render
from kubemill.viewer.app import NOTEBOOK_CSP, OUTPUT_CSP
from kubemill.viewer.render import Rendered
from kubemill.viewer.settings import ViewerSettings
from kubemill.viewer.storage import LocalStore, StoredObject
from kubemill_testenv.s3server import S3Server
from tests.conftest import s3_client
from tests.integration.viewer_server import LiveViewer, Reply, live_viewer

pytestmark = pytest.mark.integration

ROW = re.compile(r'<tr class="(folder|notebook|file)"><td><a href="([^"]*)">([^<]*)</a>')

#: Keys a browser, a URL parser or a careless decoder would break.
ODD_NAMES = [
    "a b.ipynb",
    "é ü+%#?.txt",
    "x+y.ipynb",
    "100% [done] & 'so'.json",
    "日本語.txt",
    "a%2Fb%20c.txt",  # decoded once, this stays a name, not a path or a space
]


def rows(reply: Reply) -> list[tuple[str, str, str]]:
    assert reply.status == 200, reply.text
    return [(kind, unescape(href), unescape(name)) for kind, href, name in ROW.findall(reply.text)]


def next_link(reply: Reply) -> str | None:
    found = re.search(r'<a rel="next" href="([^"]*)"', reply.text)
    return unescape(found.group(1)) if found else None


def walk(viewer: LiveViewer, start: str) -> tuple[list[tuple[str, str, str]], int]:
    """Every row of a listing, following its next-page links; and how many pages it took."""
    seen: list[tuple[str, str, str]] = []
    url: str | None = start
    pages = 0
    while url:
        reply = viewer.get(url)
        seen += rows(reply)
        pages += 1
        url = next_link(reply)
        assert pages < 1000
    return seen, pages


def notebook_bytes(marker: str, *, outputs: list[Any] | None = None) -> bytes:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"print({marker!r})", execution_count=1)
    cell.outputs = outputs or [nbformat.v4.new_output("stream", name="stdout", text=marker)]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {marker}"), cell]
    return nbformat.writes(nb).encode()


@pytest.fixture
def s3_settings(
    s3_server: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., ViewerSettings]:
    """Settings for a viewer of s3://<bucket>/runs/ that reads with the read-only identity,
    through the same credential chain as the runner (the environment)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader_secret_key)

    def make(**overrides: Any) -> ViewerSettings:
        values: dict[str, Any] = {
            "root": f"s3://{bucket}/runs/",
            "cache_dir": tmp_path / "cache",
            "s3_endpoint_url": s3_server.endpoint_url,
            "s3_region": "us-east-1",
        }
        values.update(overrides)
        return ViewerSettings(**values)

    return make


def put_all(s3: Any, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(10) as pool:  # boto3's connection pool holds 10
        list(
            pool.map(
                lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()
            )
        )


def snapshot(s3: Any, bucket: str) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket=bucket)
    return {o["Key"]: o["ETag"] for o in listed.get("Contents", [])}


# --- listing at scale ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_bucket(s3_server: S3Server) -> Iterator[str]:
    """2,500 notebooks under one prefix, plus three folders: more than two full ListObjectsV2
    pages (Commuter showed the first 1,000)."""
    s3 = s3_client(s3_server)
    name = f"big-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    objects = {f"runs/big/run-{i:05d}.ipynb": b"{}" for i in range(2500)}
    objects.update({f"runs/big/folder-{c}/x.txt": b"x" for c in "abc"})
    put_all(s3, name, objects)
    yield name


def test_a_folder_of_2500_keys_lists_every_key_across_pages(
    big_bucket: str, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader_secret_key)
    settings = ViewerSettings(
        root=f"s3://{big_bucket}/runs",
        cache_dir=tmp_path,
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region="us-east-1",
    )
    expected = {f"run-{i:05d}.ipynb" for i in range(2500)}
    with live_viewer(settings) as viewer:
        first = viewer.get("/tree/big/")
        assert "2503 entries" in first.text
        for query in ("", "?sort=name&order=desc", "?sort=time", "?sort=time&order=asc"):
            seen, pages = walk(viewer, "/tree/big/" + query)
            names = [name for _, _, name in seen]
            assert len(names) == len(set(names)) == 2503
            # Folders first; S3 folders have no time, so by time they tie and go by name,
            # in the listing's direction (time is newest first unless asked otherwise).
            descending = "desc" in query or query == "?sort=time"
            folders = ["folder-a/", "folder-b/", "folder-c/"]
            assert names[:3] == (folders[::-1] if descending else folders)
            assert set(names[3:]) == expected
            assert pages == 13  # 200 a page
            if query == "":
                assert names[3:] == sorted(expected)
        notebook = next(row for row in seen if row[0] == "notebook")
        assert notebook[1].startswith("/view/big/run-")

        # The contents API lists the whole folder too.
        listing = json.loads(viewer.get("/api/contents/big").body)
        assert len(listing["content"]) == 2503


# --- missing, odd and refused paths --------------------------------------------------------


def test_missing_paths_are_404_never_200(
    s3_settings: Callable[..., ViewerSettings], s3_admin: Any, bucket: str
) -> None:
    s3_admin.put_object(Bucket=bucket, Key="runs/here/out.ipynb", Body=notebook_bytes("x"))
    s3_admin.put_object(Bucket=bucket, Key="runs/empty/", Body=b"")  # a console's folder
    with live_viewer(s3_settings()) as viewer:
        empty = viewer.get("/tree/empty/")
        assert (empty.status, rows(empty)) == (200, [])
        assert json.loads(viewer.get("/api/contents/empty").body)["content"] == []
        for url in (
            "/tree/nope/",
            "/tree/here/nope/",
            "/files/here/nope.ipynb",
            "/view/here/nope.ipynb",
            "/view/here/out.ipynb.not",
            "/nothing-routed-here",
        ):
            reply = viewer.get(url)
            assert reply.status == 404, url
            assert "text/html" in reply.headers["Content-Type"]
        reply = viewer.get("/api/contents/here/nope.ipynb")
        assert reply.status == 404
        assert json.loads(reply.body)["message"]
        assert viewer.get("/tree/here/").status == 200


def test_keys_with_spaces_and_non_ascii_letters_list_and_download(
    s3_settings: Callable[..., ViewerSettings], s3_admin: Any, bucket: str
) -> None:
    objects = {f"runs/odd dir/{name}": f"content of {name}".encode() for name in ODD_NAMES}
    put_all(s3_admin, bucket, objects)
    with live_viewer(s3_settings()) as viewer:
        listed = rows(viewer.get("/tree/"))
        assert [(kind, name) for kind, _, name in listed] == [("folder", "odd dir/")]
        listed = rows(viewer.get(listed[0][1]))
        assert sorted(name for _, _, name in listed) == sorted(ODD_NAMES)
        for kind, href, name in listed:
            # Follow the listing's own link, as a browser does.
            reply = viewer.get(href.replace("/view/", "/files/"))
            assert reply.status == 200, (name, href, reply.status)
            assert reply.body == f"content of {name}".encode()
            disposition = reply.headers["Content-Disposition"]
            assert disposition.startswith("attachment" if kind == "notebook" else "inline")
            model = json.loads(
                viewer.get(
                    href.replace("/view/", "/api/contents/").replace("/files/", "/api/contents/")
                    + "?type=file&format=text"
                ).body
            )
            assert (model["name"], model["path"]) == (name, f"odd dir/{name}")
            assert model["content"] == f"content of {name}"


@pytest.mark.parametrize(
    "url",
    [
        "/tree/..%2F..%2Fetc/",
        "/files/%2Fetc%2Fpasswd",
        "/files/a%2F..%2F..%2Fsecret.txt",
        "/view/%2E%2E%2Fsecret.ipynb",
        "/api/contents/..%2Fsecret.txt",
        "/files/a//b",
    ],
)
def test_a_path_escaping_the_root_is_400(url: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "secret.ipynb").write_text("{}")
    with live_viewer(ViewerSettings(root=str(root), cache_dir=tmp_path / "c")) as viewer:
        reply = viewer.get(url)
        assert reply.status == 400, reply.status
        assert b"secret" not in reply.body.replace(b"secret.txt", b"").replace(b"secret.ipynb", b"")


def test_dot_segments_and_links_never_leave_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("the secret")
    (root / "inside.txt").write_text("inside")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    (root / "linked-dir").symlink_to(tmp_path)
    with live_viewer(ViewerSettings(root=str(root), cache_dir=tmp_path / "c")) as viewer:
        for url in (
            "/files/../secret.txt",
            "/files/inside.txt/../../secret.txt",
            "/files/link.txt",
            "/files/linked-dir/secret.txt",
            "/tree/linked-dir/",
        ):
            reply = viewer.get(url)
            assert reply.status in (400, 404), (url, reply.status)
            assert b"the secret" not in reply.body
        assert viewer.get("/files/inside.txt").body == b"inside"


def test_write_methods_are_405_and_nothing_changes(
    s3_settings: Callable[..., ViewerSettings], s3_admin: Any, bucket: str
) -> None:
    put_all(s3_admin, bucket, {"runs/r/out.ipynb": notebook_bytes("x"), "runs/r/a b.txt": b"a"})
    before = snapshot(s3_admin, bucket)
    with live_viewer(s3_settings()) as viewer:
        for method in ("DELETE", "PUT", "POST", "PATCH"):
            for url in (
                "/api/contents/r/out.ipynb",
                "/api/contents/r/a%20b.txt",
                "/api/contents/r",
                "/files/r/out.ipynb",
                "/view/r/out.ipynb",
                "/tree/r/",
            ):
                reply = viewer.request(method, url)
                assert reply.status == 405, (method, url, reply.status)
                assert reply.headers["Allow"] == "GET, HEAD"
    assert snapshot(s3_admin, bucket) == before
    assert s3_admin.get_object(Bucket=bucket, Key="runs/r/a b.txt")["Body"].read() == b"a"


# --- raw objects -----------------------------------------------------------------------------


def test_files_revalidate_by_etag(
    s3_settings: Callable[..., ViewerSettings], s3_admin: Any, bucket: str
) -> None:
    s3_admin.put_object(Bucket=bucket, Key="runs/r/results.json", Body=b'{"a": 1}')
    with live_viewer(s3_settings()) as viewer:
        first = viewer.get("/files/r/results.json")
        assert first.status == 200
        assert first.headers["Content-Type"] == "application/json"
        etag = first.headers["ETag"]
        assert etag.startswith('"') and etag.endswith('"')
        again = viewer.get("/files/r/results.json", {"If-None-Match": etag})
        assert (again.status, again.body, again.headers["ETag"]) == (304, b"", etag)
        assert viewer.get("/files/r/results.json", {"If-None-Match": '"other"'}).status == 200
        head = viewer.request("HEAD", "/files/r/results.json")
        assert (head.status, head.body, head.headers["ETag"]) == (200, b"", etag)

        s3_admin.put_object(Bucket=bucket, Key="runs/r/results.json", Body=b'{"a": 2}')
        changed = viewer.get("/files/r/results.json", {"If-None-Match": etag})
        assert changed.status == 200
        assert changed.body == b'{"a": 2}'
        assert changed.headers["ETag"] != etag


def test_raw_html_and_scripts_cannot_run_in_the_viewers_origin(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.html").write_text("<script>alert(1)</script>")
    (tmp_path / "r" / "evil.js").write_text("alert(1)")
    with live_viewer(ViewerSettings(root=str(tmp_path), cache_dir=tmp_path / ".c")) as viewer:
        page = viewer.get("/files/r/report.html")
        assert page.headers["Content-Security-Policy"].startswith("sandbox;")
        script = viewer.get("/files/r/evil.js")
        assert script.headers["Content-Type"].startswith("text/plain")
        assert script.headers["X-Content-Type-Options"] == "nosniff"


def test_an_object_bigger_than_the_viewer_reads_whole_downloads_but_is_not_read(
    tmp_path: Path,
) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1\n" * 400)]
    nbformat.write(nb, str(tmp_path / "big.ipynb"))
    size = (tmp_path / "big.ipynb").stat().st_size
    settings = ViewerSettings(
        root=str(tmp_path), cache_dir=tmp_path / ".c", max_read_bytes=size - 1
    )
    with live_viewer(settings) as viewer:
        page = viewer.get("/view/big.ipynb")
        output = viewer.get("/view/big.ipynb?output=0.0")
        model = viewer.get("/api/contents/big.ipynb?content=1")
        listed = viewer.get("/api/contents/big.ipynb?content=0")
        raw = viewer.get("/files/big.ipynb")
    assert (page.status, output.status, model.status) == (413, 413, 413)
    assert "more than the viewer reads whole" in page.text and "/files/big.ipynb" in page.text
    assert "more than the viewer reads whole" in json.loads(model.text)["message"]
    assert (listed.status, raw.status, len(raw.body)) == (200, 200, size)


def test_a_request_addressed_to_another_name_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page of rebind.evil.example, its name re-pointed at 127.0.0.1, reaches
    the port with its own name in Host. Only this machine's names (and --allow-host) pass."""
    (tmp_path / "secret.txt").write_text("the store's contents")
    settings = ViewerSettings(
        root=str(tmp_path), cache_dir=tmp_path / ".c", allowed_hosts=("nb.example",)
    )
    with live_viewer(settings) as viewer:
        port = viewer.port
        forged = viewer.get("/files/secret.txt", {"Host": f"rebind.evil.example:{port}"})
        api = viewer.get("/api/contents/secret.txt?content=1", {"Host": "rebind.evil.example"})
        named = viewer.get("/files/secret.txt", {"Host": f"localhost:{port}"})
        proxied = viewer.get("/files/secret.txt", {"Host": "nb.example"})
    assert (forged.status, api.status) == (403, 403)
    assert "store's contents" not in forged.text + api.text
    assert "addressed to this machine only" in forged.text
    assert (named.status, proxied.status) == (200, 200)


def test_security_headers_on_every_response(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    with live_viewer(ViewerSettings(root=str(tmp_path), cache_dir=tmp_path / ".c")) as viewer:
        etag = viewer.get("/files/a.txt").headers["ETag"]
        replies = [
            viewer.get("/tree/"),
            viewer.get("/files/a.txt"),
            viewer.get("/files/a.txt", {"If-None-Match": etag}),
            viewer.get("/api/contents/a.txt"),
            viewer.get("/tree/missing/"),
            viewer.get("/tree/..%2Fx"),
            viewer.request("DELETE", "/files/a.txt"),
            viewer.get("/healthz"),
        ]
    assert [r.status for r in replies] == [200, 200, 304, 200, 404, 400, 405, 200]
    for reply in replies:
        csp = reply.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp or csp.startswith("sandbox;")
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in reply.headers


# --- base path ---------------------------------------------------------------------------------


def test_every_route_and_link_honours_the_base_path(
    s3_settings: Callable[..., ViewerSettings], s3_admin: Any, bucket: str
) -> None:
    put_all(
        s3_admin,
        bucket,
        {
            "runs/ns/r 1/output.ipynb": notebook_bytes("hello"),
            "runs/ns/r 1/results.json": b"{}",
        },
    )
    with live_viewer(s3_settings(base_path="/hub/kubemill")) as viewer:
        assert viewer.get("/tree/").status == 404
        assert viewer.get("/healthz").status == 404
        assert viewer.get("/hub/kubemill/healthz").status == 200
        home = viewer.get("/hub/kubemill")
        assert (home.status, home.headers["Location"]) == (302, "/hub/kubemill/tree/")
        seen, _ = walk(viewer, "/hub/kubemill/tree/ns/r%201/")
        assert {(kind, href) for kind, href, _ in seen} == {
            ("notebook", "/hub/kubemill/view/ns/r%201/output.ipynb"),
            ("file", "/hub/kubemill/files/ns/r%201/results.json"),
        }
        page = viewer.get("/hub/kubemill/view/ns/r%201/output.ipynb")
        assert page.status == 200
        assert "hello" in page.text
        for link in page.links() + viewer.get("/hub/kubemill/tree/ns/").links():
            if not link.startswith(("#", "?")):
                assert urlsplit(link).path.startswith("/hub/kubemill/"), link
        assert '<script src="/hub/kubemill/static/viewer.js"' in page.text
        assert viewer.get("/hub/kubemill/static/viewer.js").status == 200
        assert viewer.get("/hub/kubemill/api/contents/ns/r%201/output.ipynb").status == 200


# --- notebook pages ----------------------------------------------------------------------------


class CountingRenderer:
    """The real renderer, counting its calls: to see that a version is rendered once."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, data: bytes, *, name: str, link: Any, script_url: Any = None) -> Rendered:
        self.calls.append(name)
        return render.render_notebook(data, name=name, link=link, script_url=script_url)


def test_a_notebook_version_is_rendered_once_and_the_page_survives_a_restart(
    s3_settings: Callable[..., ViewerSettings], s3_admin: Any, bucket: str
) -> None:
    key = "runs/ns/daily é/output.ipynb"
    url = "/view/" + paths.quote_path("ns/daily é/output.ipynb")
    s3_admin.put_object(Bucket=bucket, Key=key, Body=notebook_bytes("first version"))
    renderer = CountingRenderer()
    with live_viewer(s3_settings(), renderer=renderer) as viewer:
        pages = [viewer.get(url) for _ in range(3)]
        assert [p.status for p in pages] == [200, 200, 200]
        assert "first version" in pages[0].text
        assert pages[0].headers["Content-Security-Policy"] == NOTEBOOK_CSP
        assert renderer.calls == ["output.ipynb"]
        etag = pages[0].headers["ETag"]
        revalidated = viewer.get(url, {"If-None-Match": etag})
        assert (revalidated.status, revalidated.body) == (304, b"")
    # A restart; the notebook's version is asked of S3 again at most every listing_ttl.
    with live_viewer(s3_settings(listing_ttl=1.0), renderer=renderer) as viewer:
        assert "first version" in viewer.get(url).text
        assert len(renderer.calls) == 1
        s3_admin.put_object(Bucket=bucket, Key=key, Body=notebook_bytes("second version"))
        written = time.monotonic()
        # Within the TTL the version seen stands (no request to S3 for a page shown again);
        # after it, the new version is rendered and sent.
        changed = viewer.get(url, {"If-None-Match": etag})
        while changed.status == 304:
            assert time.monotonic() - written < 10, "the new version never showed"
            time.sleep(0.1)
            changed = viewer.get(url, {"If-None-Match": etag})
        assert changed.status == 200
        assert "second version" in changed.text
        assert changed.headers["ETag"] != etag
        assert len(renderer.calls) == 2


def test_a_big_output_is_served_on_its_own_sandboxed(tmp_path: Path) -> None:
    big = "<b>" + "x" * (render.OUTPUT_INLINE_LIMIT + 10) + "</b>"
    output = nbformat.v4.new_output("display_data", data={"text/html": big})
    (tmp_path / "big.ipynb").write_bytes(notebook_bytes("big", outputs=[output]))
    with live_viewer(ViewerSettings(root=str(tmp_path), cache_dir=tmp_path / ".c")) as viewer:
        page = viewer.get("/view/big.ipynb")
        assert page.status == 200
        assert big not in page.text
        found = re.search(r'(?:src|data-src)="(\?output=1\.0)"', page.text)
        assert found, page.text[-2000:]
        served = viewer.get("/view/big.ipynb" + unescape(found.group(1)))
        assert served.status == 200
        assert "x" * 1000 in served.text
        assert served.headers["Content-Security-Policy"] == OUTPUT_CSP
        again = viewer.get("/view/big.ipynb?output=1.0", {"If-None-Match": served.headers["ETag"]})
        assert again.status == 304
        assert viewer.get("/view/big.ipynb?output=9.0").status == 404
        assert viewer.get("/view/big.ipynb?output=x").status == 400


class CountingStore(LocalStore):
    """A folder whose objects' reads are counted: to see that a notebook is read once."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets: list[str] = []

    def get(self, path: str) -> StoredObject:
        self.gets.append(path)
        return super().get(path)


def test_the_outputs_of_a_page_read_the_notebook_once_per_version(tmp_path: Path) -> None:
    def big(marker: str) -> Any:
        html = f"<b>{marker}</b>" + "x" * (render.OUTPUT_INLINE_LIMIT + 10)
        return nbformat.v4.new_output("display_data", data={"text/html": html})

    def write(version: str) -> None:
        outputs = [big(f"{version} {n}") for n in range(6)]
        (tmp_path / "big.ipynb").write_bytes(notebook_bytes("big", outputs=outputs))

    write("first")
    store = CountingStore(tmp_path)
    # No TTL: each request asks for the notebook's version, so a new one is seen at once.
    settings = ViewerSettings(root=str(tmp_path), cache_dir=tmp_path / ".c", listing_ttl=0.0)
    with live_viewer(settings, store=store) as viewer:
        assert viewer.get("/view/big.ipynb").status == 200  # the render's read serves them
        urls = [f"/view/big.ipynb?output=1.{n}" for n in range(6)]
        with ThreadPoolExecutor(6) as pool:  # as a browser loads a page's frames
            served = list(pool.map(viewer.get, urls))
        assert [r.status for r in served] == [200] * 6
        assert [f"<b>first {n}</b>" in r.text for n, r in enumerate(served)] == [True] * 6
        assert store.gets == ["big.ipynb"]
        write("second")
        changed = viewer.get(urls[2])
        assert "<b>second 2</b>" in changed.text
        assert viewer.get(urls[3]).status == 200
        assert store.gets == ["big.ipynb", "big.ipynb"]


def test_a_file_under_tree_redirects_and_a_non_notebook_view_goes_to_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "out.ipynb").write_bytes(notebook_bytes("x"))
    (tmp_path / "r" / "log.txt").write_text("log")
    with live_viewer(ViewerSettings(root=str(tmp_path), cache_dir=tmp_path / ".c")) as viewer:
        moved = viewer.get("/tree/r/out.ipynb")
        assert (moved.status, moved.headers["Location"]) == (302, "/view/r/out.ipynb")
        moved = viewer.get("/view/r/log.txt")
        assert (moved.status, moved.headers["Location"]) == (302, "/files/r/log.txt")
        assert viewer.request("HEAD", "/files/r/nope.txt").status == 404


def test_rejected_credentials_are_a_bad_gateway_that_says_why(
    s3_settings: Callable[..., ViewerSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with live_viewer(s3_settings()) as viewer:
        page = viewer.get("/tree/")
        assert page.status == 502
        assert "credentials were rejected" in page.text
        api = viewer.get("/api/contents/x.ipynb")
        assert api.status == 502
        # A HEAD has no error body: S3 says 403 only, which reads as denied.
        assert re.search("credentials were rejected|access denied", json.loads(api.body)["message"])


def test_a_renderer_bug_is_a_500_page_with_the_headers_and_is_not_cached(tmp_path: Path) -> None:
    (tmp_path / "a.ipynb").write_bytes(notebook_bytes("a"))
    calls: list[str] = []

    def broken(data: bytes, *, name: str, link: Any, script_url: Any = None) -> Rendered:
        calls.append(name)
        raise RuntimeError("a bug")

    settings = ViewerSettings(root=str(tmp_path), cache_dir=tmp_path / ".c")
    with live_viewer(settings, renderer=broken) as viewer:
        for _ in range(2):
            reply = viewer.get("/view/a.ipynb")
            assert reply.status == 500
            assert "a bug" not in reply.text
            assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
        assert calls == ["a.ipynb", "a.ipynb"]
        assert viewer.get("/files/a.ipynb").status == 200


def test_a_big_object_downloads_whole_in_pieces(
    s3_settings: Callable[..., ViewerSettings], s3_admin: Any, bucket: str
) -> None:
    import os

    data = os.urandom(5 * 1024 * 1024 + 17)  # more than five reads of the store
    s3_admin.put_object(Bucket=bucket, Key="runs/big/out.ipynb", Body=data)
    with live_viewer(s3_settings()) as viewer:
        reply = viewer.get("/files/big/out.ipynb")
        assert reply.status == 200
        assert int(reply.headers["Content-Length"]) == len(data)
        assert reply.body == data
        assert reply.headers["Content-Disposition"].startswith("attachment")


def test_control_characters_in_names_list_and_download(tmp_path: Path) -> None:
    names = ["line\nbreak.txt", "tab\there.ipynb", 'quote"back\\slash.txt']
    root = tmp_path / "root"  # the cache (pages, runs index) outside what is listed
    root.mkdir()
    for name in names:
        (root / name).write_text(name)
    with live_viewer(ViewerSettings(root=str(root), cache_dir=tmp_path / ".c")) as viewer:
        listed = rows(viewer.get("/tree/"))
        assert sorted(name for _, _, name in listed) == sorted(names)
        for _, href, name in listed:
            reply = viewer.get(href.replace("/view/", "/files/"))
            assert (reply.status, reply.body) == (200, name.encode())
            assert "\n" not in reply.headers["Content-Disposition"]
            model = viewer.get(
                href.replace("/view/", "/api/contents/").replace("/files/", "/api/contents/")
                + "?type=file"
            )
            assert json.loads(model.body)["name"] == name


def test_a_cache_folder_that_cannot_be_written_costs_speed_not_the_page(tmp_path: Path) -> None:
    (tmp_path / "a.ipynb").write_bytes(notebook_bytes("still shown"))
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    with live_viewer(ViewerSettings(root=str(tmp_path), cache_dir=blocked)) as viewer:
        page = viewer.get("/view/a.ipynb")
        assert page.status == 200
        assert "still shown" in page.text


def test_concurrent_first_views_render_once(tmp_path: Path) -> None:
    (tmp_path / "a.ipynb").write_bytes(notebook_bytes("once"))
    renderer = CountingRenderer()
    settings = ViewerSettings(root=str(tmp_path), cache_dir=tmp_path / ".c")
    with live_viewer(settings, renderer=renderer) as viewer, ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: viewer.get("/view/a.ipynb"), range(6)))
    assert [r.status for r in replies] == [200] * 6
    assert all("once" in r.text for r in replies)
    assert renderer.calls == ["a.ipynb"]
