"""The viewer as a real HTTP server on loopback, in a thread, for tests that speak HTTP to it.

Requests go through http.client with the path exactly as given (already percent-encoded), so
tests can send what a browser would never send: `..` segments, encoded slashes.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from typing import Any

from aiohttp import web

from kubemill.viewer.access import Reviews
from kubemill.viewer.app import Renderer, create_app
from kubemill.viewer.settings import ViewerSettings
from kubemill.viewer.storage import Store


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def links(self) -> list[str]:
        """Every href in an HTML page, unescaped, in order."""
        return [unescape(h) for h in re.findall(r'href="([^"]*)"', self.text)]


class LiveViewer:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        source: str | None = None,
    ) -> Reply:
        """`source`: the loopback address to send from (127.0.0.2, say), for a viewer that
        trusts one address as its authenticating proxy."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=60, source_address=(source, 0) if source else None
        )
        try:
            connection.request(method, path, headers=dict(headers or {}))
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(
        self, path: str, headers: Mapping[str, str] | None = None, *, source: str | None = None
    ) -> Reply:
        return self.request("GET", path, headers, source=source)


@contextmanager
def live_viewer(
    settings: ViewerSettings,
    *,
    store: Store | None = None,
    renderer: Renderer | None = None,
    reviews: Reviews | None = None,
) -> Iterator[LiveViewer]:
    """The viewer serving on a free loopback port until the block ends."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        runner = web.AppRunner(
            create_app(settings, store=store, renderer=renderer, reviews=reviews)
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            state["port"] = runner.addresses[0][1]
            state["stop"] = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await state["stop"].wait()
        finally:
            await runner.cleanup()

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by the test thread below
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in state:
        raise state["error"]
    try:
        yield LiveViewer(state["port"])
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)
        if "error" in state:
            raise state["error"]
