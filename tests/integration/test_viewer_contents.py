"""The viewer's read-only Jupyter contents API, checked three ways: against the OpenAPI document
jupyter_server ships, against jupyter_server's own FileContentsManager over the same folder, and
with a Jupyter contents-API client library (jupyter-server-client)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kubemill.viewer import paths
from kubemill.viewer.settings import ViewerSettings
from kubemill_testenv.s3server import S3Server
from tests.conftest import NOTEBOOKS
from tests.integration.viewer_server import LiveViewer, live_viewer

pytestmark = pytest.mark.integration

#: What the folder (and the S3 prefix) holds: a notebook, UTF-8 text, bytes that are not text,
#: odd names, and a sub-folder.
FILES = {
    "params.ipynb": (NOTEBOOKS / "params.ipynb").read_bytes(),
    "notes é.txt": "héllo\n".encode(),
    "blob.bin": b"\x00\xff\x10",
    "sub dir/run #1?.ipynb": (NOTEBOOKS / "values.ipynb").read_bytes(),
    "sub dir/results.json": b'{"rows": 3}',
}

#: Every request of the contents API a reader makes: (path, query).
REQUESTS = [
    ("", ""),
    ("", "?content=0"),
    ("sub dir", ""),
    ("sub dir", "?type=directory&content=1"),
    ("params.ipynb", ""),
    ("params.ipynb", "?content=0"),
    ("params.ipynb", "?type=notebook&format=json"),
    ("params.ipynb", "?type=file&format=text"),
    ("params.ipynb", "?type=file&format=base64"),
    ("notes é.txt", ""),
    ("notes é.txt", "?format=base64"),
    ("notes é.txt", "?content=0"),
    ("blob.bin", ""),
    ("sub dir/run #1?.ipynb", ""),
    ("sub dir/results.json", "?type=file"),
]


def contents_schema() -> dict[str, Any]:
    """The `Contents` definition of jupyter_server's services/api/api.yaml as a JSON Schema.

    The document is Swagger 2.0, which cannot say "or null"; its own description of the
    definition says what may be null ("The content and format keys may be null if content is
    not contained. The hash maybe null ... If type is 'file', then the mimetype will be null"
    for directories and notebooks) and that content "will be an array if type is 'directory'"
    (and a notebook's is its JSON). Only those statements are added; every required key, type
    and enum is the document's. jupyter_server's own FileContentsManager answers the same way
    (test_models_match_jupyter_servers_own below).
    """
    import jupyter_server

    api = Path(jupyter_server.__file__).parent / "services" / "api" / "api.yaml"
    spec = yaml.safe_load(api.read_text())
    schema: dict[str, Any] = copy.deepcopy(spec["definitions"]["Contents"])
    properties = schema["properties"]
    for name in ("content", "format", "mimetype", "hash", "hash_algorithm", "size"):
        properties[name] = {"anyOf": [properties[name], {"type": "null"}]}
    properties["content"]["anyOf"] += [
        {"type": "array", "items": {"$ref": "#"}},
        {"type": "object", "required": ["cells", "metadata", "nbformat"]},
    ]
    assert spec["paths"]["/api/contents/{path}"]["get"]["responses"][200]["schema"] == {
        "$ref": "#/definitions/Contents"
    }
    return schema


def error_schema() -> dict[str, Any]:
    import jupyter_server

    api = Path(jupyter_server.__file__).parent / "services" / "api" / "api.yaml"
    spec = yaml.safe_load(api.read_text())
    schema: dict[str, Any] = spec["paths"]["/api/contents/{path}"]["get"]["responses"][400][
        "schema"
    ]
    return schema


FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("dateTime", raises=ValueError)
def _date_time(value: object) -> bool:
    """The document's `format: dateTime`: ISO 8601, as Jupyter writes it (UTC with Z)."""
    return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None


def validate(model: Any) -> None:
    jsonschema.validate(model, contents_schema(), format_checker=FORMATS)


def url(path: str, query: str = "") -> str:
    return "/api/contents/" + paths.quote_path(path) + query if path else "/api/contents" + query


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture
def local_viewer(folder: Path, tmp_path: Path) -> Iterator[LiveViewer]:
    with live_viewer(ViewerSettings(root=str(folder), cache_dir=tmp_path / "cache")) as viewer:
        yield viewer


@pytest.fixture
def s3_viewer(
    s3_server: S3Server, s3_admin: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveViewer]:
    for name, data in FILES.items():
        s3_admin.put_object(Bucket=bucket, Key=f"prefix/{name}", Body=data)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.reader_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.reader_secret_key)
    settings = ViewerSettings(
        root=f"s3://{bucket}/prefix/",
        cache_dir=tmp_path / "cache",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region="us-east-1",
    )
    with live_viewer(settings) as viewer:
        yield viewer


@pytest.mark.parametrize("store", ["local", "s3"])
def test_responses_validate_against_jupyter_servers_openapi_document(
    store: str, request: pytest.FixtureRequest
) -> None:
    # One store, every request: a fresh bucket per request would cost more than the requests.
    viewer: LiveViewer = request.getfixturevalue(f"{store}_viewer")
    for path, query in REQUESTS:
        reply = viewer.get(url(path, query))
        assert reply.status == 200, (path, query, reply.text)
        assert reply.headers["Content-Type"].startswith("application/json")
        model = json.loads(reply.body)
        validate(model)
        assert model["path"] == path
        assert model["writable"] is False
        if model["type"] == "directory" and model["content"] is not None:
            assert model["content"], "a listing of a folder that has entries"
        assert parsedate_to_datetime(reply.headers["Last-Modified"]).tzinfo is not None


@pytest.mark.parametrize(
    ("path", "query", "reason"),
    [
        ("blob.bin", "?format=text", "bad format"),
        ("notes é.txt", "?type=directory", "bad type"),
        ("sub dir", "?type=file", "bad type"),
        ("params.ipynb", "?format=base64", "bad format"),
    ],
)
def test_unsatisfiable_requests_are_400_with_jupyters_reason(
    local_viewer: LiveViewer, path: str, query: str, reason: str
) -> None:
    reply = local_viewer.get(url(path, query))
    assert reply.status == 400
    body = json.loads(reply.body)
    jsonschema.validate(body, error_schema())
    assert body["reason"] == reason


def test_missing_is_404_and_writes_are_405(local_viewer: LiveViewer, folder: Path) -> None:
    assert local_viewer.get(url("nope.ipynb")).status == 404
    assert local_viewer.get(url("sub dir/nope")).status == 404
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        reply = local_viewer.request(method, url("params.ipynb"))
        assert (reply.status, reply.headers["Allow"]) == (405, "GET, HEAD")
    assert (folder / "params.ipynb").read_bytes() == FILES["params.ipynb"]


def _jupyter_model(folder: Path, path: str, query: str) -> dict[str, Any]:
    from jupyter_server.services.contents.filemanager import FileContentsManager

    params = dict(part.split("=") for part in query.lstrip("?").split("&") if part)
    manager = FileContentsManager(root_dir=str(folder))
    model: dict[str, Any] = manager.get(
        path,
        content=params.get("content", "1") == "1",
        type=params.get("type"),
        format=params.get("format"),
    )
    # As Jupyter Server's handler writes the model: datetimes in ISO 8601 with Z.
    serialized: dict[str, Any] = json.loads(
        json.dumps(model, default=lambda d: d.isoformat().replace("+00:00", "Z"))
    )
    return serialized


#: Where the two legitimately differ: the viewer writes nothing (writable), and S3 keeps no
#: creation time, so `created` is the last modification (Jupyter takes a file's ctime). Base64
#: with or without line breaks decodes the same (compared decoded, below).
IGNORED = {"writable", "created"}


@pytest.mark.parametrize(("path", "query"), REQUESTS)
def test_models_match_jupyter_servers_own(
    local_viewer: LiveViewer, folder: Path, path: str, query: str
) -> None:
    ours = json.loads(local_viewer.get(url(path, query)).body)
    theirs = _jupyter_model(folder, path, query)
    assert set(ours) == set(theirs)
    for key in set(ours) - IGNORED - {"content"}:
        assert ours[key] == theirs[key], key
    if theirs["type"] == "directory" and theirs["content"] is not None:
        assert sorted(
            (c["name"], c["type"], c["mimetype"], c["size"], c["format"]) for c in ours["content"]
        ) == sorted(
            (c["name"], c["type"], c["mimetype"], c["size"], c["format"]) for c in theirs["content"]
        )
    elif theirs["format"] == "base64":
        assert base64.b64decode(ours["content"]) == base64.b64decode(theirs["content"])
    elif theirs["type"] == "notebook" and theirs["content"] is not None:
        # Jupyter reads through nbformat (which may add what a version lacks): compare cells.
        assert [c["source"] for c in ours["content"]["cells"]] == [
            c["source"] for c in theirs["content"]["cells"]
        ]
    else:
        assert ours["content"] == theirs["content"]


def test_a_jupyter_contents_client_lists_and_reads_through_a_base_path(
    folder: Path, tmp_path: Path
) -> None:
    from jupyter_server_client import JupyterServerClient

    settings = ViewerSettings(root=str(folder), cache_dir=tmp_path / "c", base_path="/hub/km")
    with live_viewer(settings) as viewer:
        client = JupyterServerClient(f"http://127.0.0.1:{viewer.port}/hub/km", max_retries=0)
        listed = {(c.name, c.type) for c in client.contents.list_directory("")}
        assert listed == {
            ("params.ipynb", "notebook"),
            ("notes é.txt", "file"),
            ("blob.bin", "file"),
            ("sub dir", "directory"),
        }
        notebook = client.contents.get("sub dir/run #1?.ipynb")
        assert notebook.type == "notebook"
        assert isinstance(notebook.content, dict)
        assert notebook.content["nbformat"] == 4
        text = client.contents.get("notes é.txt", type="file", format="text")
        assert text.content == "héllo\n"
        with pytest.raises(Exception, match=r"405|Method Not Allowed"):
            client.contents.delete("params.ipynb")
    assert (folder / "params.ipynb").read_bytes() == FILES["params.ipynb"]


@pytest.mark.parametrize(
    "change",
    [
        {"type": "folder"},
        {"writable": "no"},
        {"created": "yesterday"},
        {"content": 3},
        {"name": None},
    ],
)
def test_the_schema_refuses_what_jupyter_would_not_send(change: dict[str, Any]) -> None:
    model = {
        "name": "a.txt",
        "path": "a.txt",
        "type": "file",
        "writable": False,
        "created": "2027-01-01T00:00:00Z",
        "last_modified": "2027-01-01T00:00:00Z",
        "size": 1,
        "mimetype": "text/plain",
        "content": "a",
        "format": "text",
    }
    validate(model)
    with pytest.raises(jsonschema.ValidationError):
        validate({**model, **change})
