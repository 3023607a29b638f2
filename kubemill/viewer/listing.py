"""One folder's entries: sorting and paging, pure.

How sorting by time works with paging: S3 lists keys in name order only (ListObjectsV2 has no
other), so a folder is listed whole, once, through every ContinuationToken page, and the
listing is kept for a few seconds (folders.FolderCache, bounded by a total number of entries).
Each page of the HTML listing is then a slice of that sorted, in-memory listing. The page
token is not an offset but the sort key of the last entry shown, so the next page starts
right after it even when the folder was re-listed in between and entries were added before it:
nothing is shown twice, and a page is found by bisection, not by counting from the top.

Folders come first, then files, in both orders. Equal times go by name, in the same
direction; S3 folders have no time of their own (they are key prefixes), so by time they all
tie and go by name.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from .errors import BadRequest

__all__ = ["Arranged", "Entry", "Page", "Sort", "arrange", "page", "page_of", "parse_sort"]

Sort = Literal["name", "time"]
Order = Literal["asc", "desc"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a folder: a sub-folder (`is_dir`) or an object."""

    name: str
    is_dir: bool
    size: int | None = None
    #: When the object was last written; None for S3 folders, which are only key prefixes.
    modified: datetime | None = None
    etag: str | None = None


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    #: The token of the page after this one, or None on the last page.
    next_token: str | None


def parse_sort(sort: str | None, order: str | None) -> tuple[Sort, Order]:
    """The query's `sort` and `order`, defaulting to name ascending, or newest first by time."""
    if sort not in (None, "", "name", "time"):
        raise BadRequest(f"sort must be name or time, not {sort!r}")
    if order not in (None, "", "asc", "desc"):
        raise BadRequest(f"order must be asc or desc, not {order!r}")
    chosen: Sort = "time" if sort == "time" else "name"
    default: Order = "desc" if chosen == "time" else "asc"
    return chosen, (order or default)  # type: ignore[return-value]


def _key(entry: Entry, sort: Sort) -> tuple[float, str]:
    if sort == "name":
        return (0.0, entry.name)
    return ((entry.modified or _EPOCH).timestamp(), entry.name)


def _encode(group: int, key: tuple[float, str]) -> str:
    raw = json.dumps([group, key[0], key[1]], ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> tuple[int, tuple[float, str]]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        group, stamp, name = json.loads(raw)
        if group not in (0, 1) or not isinstance(name, str):
            raise ValueError(token)
        return int(group), (float(stamp), name)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(f"{token!r} is not a page token of this listing") from None


@dataclass(frozen=True)
class Arranged:
    """A listing sorted one way (folders, then files, each ascending), with each entry's sort
    key: what every page of that listing in that sort is cut from, so a folder of 100,000
    entries is sorted once per listing, not once per page."""

    sort: Sort
    groups: tuple[list[Entry], list[Entry]]
    keys: tuple[list[tuple[float, str]], list[tuple[float, str]]]


def arrange(entries: Sequence[Entry], sort: Sort) -> Arranged:
    groups: list[list[Entry]] = []
    keys: list[list[tuple[float, str]]] = []
    for is_dir in (True, False):
        # Each key computed once (a datetime's timestamp is not free at 100,000 entries).
        keyed = sorted(
            ((_key(e, sort), e) for e in entries if e.is_dir is is_dir), key=lambda pair: pair[0]
        )
        keys.append([key for key, _ in keyed])
        groups.append([entry for _, entry in keyed])
    return Arranged(sort, (groups[0], groups[1]), (keys[0], keys[1]))


def page(entries: Sequence[Entry], sort: Sort, order: Order, after: str | None, limit: int) -> Page:
    """Up to `limit` entries following the token `after` (from the top when None)."""
    return page_of(arrange(entries, sort), order, after, limit)


def page_of(arranged: Arranged, order: Order, after: str | None, limit: int) -> Page:
    """`page` of a listing already arranged."""
    sort = arranged.sort
    start_group, cursor = _decode(after) if after else (0, None)
    shown: list[Entry] = []
    last: tuple[int, Entry] | None = None
    more = False
    for index, group in enumerate(arranged.groups):
        if index < start_group:
            continue
        keys = arranged.keys[index]
        if order == "asc":
            begin = bisect.bisect_right(keys, cursor) if cursor and index == start_group else 0
            remaining = group[begin:]
        else:
            end = bisect.bisect_left(keys, cursor) if cursor and index == start_group else None
            remaining = group[:end][::-1]
        room = limit - len(shown)
        if len(remaining) > room:
            shown += remaining[:room]
            more = True
        else:
            shown += remaining
        if shown and (last is None or last[1] is not shown[-1]):
            last = (index, shown[-1])
        if more:
            break
    if not more:
        return Page(shown, None)
    assert last is not None
    return Page(shown, _encode(last[0], _key(last[1], sort)))
