"""Rendered notebook pages on disk, one file per (path, object version), least recently used
evicted first.

A notebook version is rendered once: the key is the object's path and its ETag (the ETag changes
with every write), plus what else the page depends on (the render code's digest, the base path
of its links), so a cached page is never stale and needs no expiry, only a size bound. Files
live in the viewer's cache folder, so they survive a restart (and, in a cluster, sit on the
viewer's own volume). Use counts as the file's modification time, refreshed on every hit;
eviction removes the oldest files until the folder is under its bound. Every write is a
temporary file renamed into place, so a reader never sees half a page and two viewers sharing a
folder do not corrupt each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

__all__ = ["CachedPage", "MemoryCache", "RenderCache", "shared"]

K = TypeVar("K")
V = TypeVar("V")

#: Bumped when the stored format changes, so old files are ignored rather than misread.
FORMAT = "v2"


@dataclass(frozen=True)
class CachedPage:
    """A rendered notebook: what render.Rendered holds, its body already UTF-8, as it is sent
    (a cached 4 MB page spent more time being decoded and encoded again than being read)."""

    title: str
    head: str
    body: bytes


class RenderCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self._folder = folder / FORMAT
        self._max_bytes = max_bytes

    @staticmethod
    def key(path: str, etag: str, variant: str = "") -> str:
        """The file name of one page: the object's path and version, and `variant` for what
        else the page depends on (the renderer's version, the base path of its links)."""
        text = json.dumps([path, etag, variant], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def _file(self, key: str) -> Path:
        return self._folder / f"{key}.page"

    def get(self, key: str) -> CachedPage | None:
        """The page stored under `key`: one line of JSON (title, head, the body's length),
        then the body's bytes as they are sent, never parsed."""
        file = self._file(key)
        try:
            data = file.read_bytes()
        except OSError:  # not there, or the folder cannot be read: render again
            return None
        header, _, body = data.partition(b"\n")
        try:
            fields = json.loads(header)
            page = CachedPage(str(fields["title"]), str(fields["head"]), body)
            if fields["bytes"] != len(body):
                raise ValueError("the body is cut short")
        except (ValueError, KeyError, TypeError):  # damaged: render again
            file.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(file)
        return page

    def put(self, key: str, page: CachedPage) -> None:
        self._folder.mkdir(parents=True, exist_ok=True)
        header = {"title": page.title, "head": page.head, "bytes": len(page.body)}
        data = json.dumps(header).encode() + b"\n" + page.body
        if len(data) > self._max_bytes:
            return
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self._folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self._file(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.evict()

    def evict(self) -> None:
        """Remove the least recently used pages until the folder is within its bound."""
        files: list[tuple[float, int, Path]] = []
        for file in self._folder.glob("*.page"):
            with contextlib.suppress(FileNotFoundError):
                st = file.stat()
                files.append((st.st_mtime, st.st_size, file))
        total = sum(size for _, size, _ in files)
        for _, size, file in sorted(files, key=lambda item: item[0]):
            if total <= self._max_bytes:
                break
            file.unlink(missing_ok=True)
            total -= size

    def size(self) -> int:
        return sum(f.stat().st_size for f in self._folder.glob("*.page"))


class MemoryCache(Generic[K, V]):
    """Values in memory, least recently used dropped first, at most `max_bytes` in all by the
    size each was put with (a value larger than that alone is not kept). Keys name one version
    of one object, so nothing kept is ever stale."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._kept: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._size = 0

    def get(self, key: K) -> V | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        self._kept.move_to_end(key)
        return kept[0]

    def put(self, key: K, value: V, size: int) -> None:
        old = self._kept.pop(key, None)
        if old is not None:
            self._size -= old[1]
        if size > self._max_bytes:
            return
        while self._kept and self._size + size > self._max_bytes:
            _, (_, dropped) = self._kept.popitem(last=False)
            self._size -= dropped
        self._kept[key] = (value, size)
        self._size += size


async def shared(
    pending: dict[K, asyncio.Future[V]], key: K, work: Callable[[], Awaitable[V]]
) -> V:
    """`work()`'s result, computed once for all callers that ask for `key` while it runs
    (single flight): a page whose outputs load on demand asks for one notebook many times at
    once, and a burst of requests for one new page would render it once per request. `pending`
    is the caller's own table of the work under way."""
    running = pending.get(key)
    if running is not None:
        return await asyncio.shield(running)
    future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
    pending[key] = future
    try:
        result = await work()
    except asyncio.CancelledError:
        future.cancel()
        raise
    except Exception as exc:
        future.set_exception(exc)
        future.exception()  # marked as retrieved: nobody else may be waiting for it
        raise
    finally:
        del pending[key]
    future.set_result(result)
    return result
