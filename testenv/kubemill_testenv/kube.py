"""Raw REST access (plain dicts) on top of the official client's transport.

The generated models drop fields they do not know and are slow to build; the node agent and the
wait helpers work on the JSON the API server sends, through the client's authenticated
connection pool. ``watch`` is a plain list-then-watch, because the client's own ``Watch`` loses
the resource version when asked not to deserialize.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

JSON = dict[str, Any]
AUTH = ["BearerToken"]


def request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: dict[str, Any] | None = None,
    content_type: str = "application/json",
    timeout: float | tuple[float, float] | None = 30,
) -> JSON:
    """Send one request and return the decoded JSON body; raises ``ApiException`` on errors."""
    response = api.call_api(
        path,
        method,
        query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=AUTH,
        _preload_content=False,
        _return_http_data_only=True,
        _request_timeout=timeout,
    )
    data = response.data
    return json.loads(data) if data else {}


def text(api: client.ApiClient, path: str, **query: Any) -> str:
    """GET a plain-text resource, such as ``pods/<name>/log``."""
    response = api.call_api(
        path,
        "GET",
        query_params=list(query.items()),
        header_params={"Accept": "*/*"},
        auth_settings=AUTH,
        _preload_content=False,
        _return_http_data_only=True,
        _request_timeout=30,
    )
    data: bytes = response.data
    return data.decode(errors="replace")


def get(api: client.ApiClient, path: str, **query: Any) -> JSON:
    return request(api, "GET", path, query=query)


def get_or_none(api: client.ApiClient, path: str) -> JSON | None:
    try:
        return get(api, path)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def merge_patch(api: client.ApiClient, path: str, patch: JSON) -> JSON:
    return request(api, "PATCH", path, body=patch, content_type="application/merge-patch+json")


def watch(
    api: client.ApiClient,
    path: str,
    resource_version: str,
    *,
    timeout_seconds: int = 60,
    **query: Any,
) -> Iterator[JSON]:
    """Yield watch events (``{"type", "object"}``) from ``resource_version`` on.

    Ends when the server closes the watch after ``timeout_seconds``; raises ``ApiException`` with
    status 410 when the version is too old, so the caller relists.
    """
    params = {
        **query,
        "watch": "true",
        "resourceVersion": resource_version,
        "allowWatchBookmarks": "true",
        "timeoutSeconds": str(timeout_seconds),
    }
    response = api.call_api(
        path,
        "GET",
        query_params=list(params.items()),
        header_params={"Accept": "application/json"},
        auth_settings=AUTH,
        _preload_content=False,
        _return_http_data_only=True,
        _request_timeout=(10, timeout_seconds + 15),
    )
    try:
        for line in iter_resp_lines(response):
            if not line.strip():
                continue
            event: JSON = json.loads(line)
            if event["type"] == "ERROR":
                status = event["object"]
                raise ApiException(status=status.get("code", 500), reason=status.get("message"))
            yield event
    finally:
        response.close()
        response.release_conn()
