"""Folder listings kept in memory for a few seconds, so paging and sorting a folder lists it once.

Each listing also keeps its sorted orders (by name, by time) once asked for, so paging through
a large folder sorts it once. Bounded: at most `max_entries` entries over all cached folders,
the least recently used folder dropped first (its sorted orders, lists of references to the
same entries, go with it); a folder larger than that alone is served but not kept. Concurrent
requests for the same folder share one listing (single flight), so a burst of page views of a
100,000-key folder costs one walk through its ListObjectsV2 pages, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .cache import shared
from .listing import Arranged, Entry, Sort, arrange

__all__ = ["FolderCache"]


@dataclass(frozen=True)
class _Listed:
    at: float
    entries: tuple[Entry, ...]
    #: The listing sorted each way it was asked for; lives and dies with the listing.
    arranged: dict[Sort, Arranged] = field(default_factory=dict)


class FolderCache:
    def __init__(
        self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._listed: OrderedDict[str, _Listed] = OrderedDict()
        self._size = 0
        self._pending: dict[str, asyncio.Future[tuple[Entry, ...]]] = {}

    @property
    def size(self) -> int:
        """Entries held now (what the bound applies to)."""
        return self._size

    async def entries(
        self, path: str, load: Callable[[], Awaitable[list[Entry]]]
    ) -> tuple[Entry, ...]:
        """The folder's entries, listed by `load` unless a listing younger than the TTL is kept."""
        listed = self._listed.get(path)
        if listed is not None and self._clock() - listed.at < self._ttl:
            self._listed.move_to_end(path)
            return listed.entries

        async def listed_and_kept() -> tuple[Entry, ...]:
            entries = tuple(await load())
            self._keep(path, entries)
            return entries

        return await shared(self._pending, path, listed_and_kept)

    async def arranged(
        self,
        path: str,
        sort: Sort,
        load: Callable[[], Awaitable[list[Entry]]],
        sorter: Callable[[tuple[Entry, ...], Sort], Awaitable[Arranged]] | None = None,
    ) -> Arranged:
        """The folder's entries sorted by `sort`, sorted once per listing; `sorter` sorts
        (the viewer's sorts in a thread: 100,000 entries take a tenth of a second)."""
        entries = await self.entries(path, load)
        listed = self._listed.get(path)
        if listed is not None and listed.entries is entries and sort in listed.arranged:
            return listed.arranged[sort]
        arranged = await sorter(entries, sort) if sorter else arrange(entries, sort)
        if listed is not None and listed.entries is entries:  # still the kept listing
            listed.arranged[sort] = arranged
        return arranged

    def _keep(self, path: str, entries: tuple[Entry, ...]) -> None:
        old = self._listed.pop(path, None)
        if old is not None:
            self._size -= len(old.entries)
        if len(entries) > self._max_entries:
            return
        while self._listed and self._size + len(entries) > self._max_entries:
            _, dropped = self._listed.popitem(last=False)
            self._size -= len(dropped.entries)
        self._listed[path] = _Listed(self._clock(), entries)
        self._size += len(entries)
