"""When a cron expression fires: wall-clock times in a time zone, as UTC instants.

Daylight saving is decided here: a wall time that happens twice fires once, on its first
occurrence (unless the expression runs every hour), and one skipped by clocks going forward
fires when the gap ends. Schedule is what the operator and `kubemill schedule preview` use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .cron_syntax import Cron, CronError, quoted

__all__ = ["Schedule"]

_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class Schedule:
    """A cron expression read as wall-clock times in a zone, fired at UTC instants.

    A matching wall time that exists once fires at that instant. One skipped when clocks go
    forward fires at the end of the gap, the first instant after it; skipped times that land on
    the same instant (or on a real slot) fire once, since slots are a set of instants. One that
    happens twice when clocks go back fires on its first occurrence only, unless the expression
    runs every hour (Cron.every_hour), which fires in both passes.
    """

    cron: Cron
    zone: ZoneInfo

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC") -> Schedule:
        return cls(Cron.parse(expression), _zone(time_zone))

    def next_after(self, t: datetime) -> datetime:
        """The first slot strictly after `t`, in UTC.

        Read on its first pass, wall time maps to instants in order; only the second pass of
        a repeated hour, which every_hour schedules also fire in, comes after the whole first
        pass. So outside a repeated hour the answer is the next matching wall time; inside one
        it is that or a second-pass copy, whichever is earlier. Each case costs one or two
        next_naive calls, which keeps per-second schedules cheap across the night clocks go
        back (visiting every candidate until one lies past `t` would cost an hour of seconds
        per slot there).
        """
        moment = _as_utc(t)
        local = moment.astimezone(self.zone)
        wall = local.replace(tzinfo=None)
        first, second = _offset(local.replace(fold=0)), _offset(local.replace(fold=1))
        if first == second:
            return self._instant(self.cron.next_naive(wall))
        # `t` is in a repeated hour: wall times in [start, stop) happen at `first` offset, then
        # again at `second` offset.
        change = self._transition(wall, first, second)
        start, stop = (change + second).replace(tzinfo=None), (change + first).replace(tzinfo=None)
        if local.fold == 0:
            earliest = self._instant(self.cron.next_naive(wall))
            if self.cron.every_hour:
                # Second-pass copies start when the first pass ends, so only the earliest copy
                # can beat the next first-pass slot, and only if that slot is past the hour.
                repeated = self.cron.next_naive(start - _SECOND)
                if repeated < stop:
                    earliest = min(earliest, (repeated - second).replace(tzinfo=UTC))
            return earliest
        following = self.cron.next_naive(wall)
        if following < stop:
            if self.cron.every_hour:
                return (following - second).replace(tzinfo=UTC)
            # The rest of the hour fired on its first pass, which is over.
            following = self.cron.next_naive(stop - _SECOND)
        return self._instant(following)

    def slots(self, after: datetime, until: datetime | None = None) -> Iterator[datetime]:
        """The slots in (after, until], in ascending order; endless without `until`."""
        start = _as_utc(after)
        end = None if until is None else _as_utc(until)
        return self._slots(start, end)

    def _slots(self, moment: datetime, end: datetime | None) -> Iterator[datetime]:
        while True:
            moment = self.next_after(moment)
            if end is not None and moment > end:
                return
            yield moment

    def latest_at_or_before(self, t: datetime, *, after: datetime) -> datetime | None:
        """The newest slot in (after, t], or None.

        `after` can be far back (a schedule suspended for a month, a per-second expression), so
        this never walks forward from it. It looks back from `t` over windows of 1, 2, 4, ...
        seconds (capped at `after`) until one holds a slot, then bisects within the last
        doubling: a few dozen calls to next_after, however many slots lie in between.
        """
        end, start = _as_utc(t), _as_utc(after)
        if end <= start:
            return None
        span = -((start - end) // _SECOND)  # whole seconds from `after` to `t`, rounded up

        def first_slot(back: int) -> datetime:
            return self.next_after(max(end - back * _SECOND, start))

        # Invariant: first_slot(missed) is after `t`, first_slot(found) is not.
        missed, found = 0, 1
        slot = first_slot(found)
        while slot > end:
            if found >= span:
                return None
            missed, found = found, min(2 * found, span)
            slot = first_slot(found)
        while found - missed > 1:
            middle = (missed + found) // 2
            candidate = first_slot(middle)
            if candidate > end:
                missed = middle
            else:
                found, slot = middle, candidate
        return slot

    def count(self, after: datetime, until: datetime, *, limit: int = 100_000) -> int:
        """How many slots lie in (after, until], counting no further than `limit`."""
        return sum(1 for _ in islice(self.slots(after, until), limit))

    def _instant(self, wall: datetime) -> datetime:
        """When a matching wall time fires: its first occurrence, or the end of its gap."""
        first = _offset(wall.replace(tzinfo=self.zone))
        second = _offset(wall.replace(tzinfo=self.zone, fold=1))
        if second > first:
            return self._transition(wall, first, second)
        return (wall - first).replace(tzinfo=UTC)

    def _transition(self, wall: datetime, first: timedelta, second: timedelta) -> datetime:
        """The instant the offset changed from `first` to `second`, to the second.

        `wall`, which clocks skipped or repeated, read with each offset gives one instant
        before the change and one after it; the change is found by bisection between them.
        """
        low = (wall - max(first, second)).replace(tzinfo=UTC)
        earlier, later = 0, abs(first - second) // _SECOND
        while later - earlier > 1:
            middle = (earlier + later) // 2
            if _offset((low + middle * _SECOND).astimezone(self.zone)) == first:
                earlier = middle
            else:
                later = middle
        return low + later * _SECOND


def _zone(name: str) -> ZoneInfo:
    if name.lower() in ("local", "localtime"):
        raise CronError(
            f"time zone {quoted(name)} depends on the machine; use an IANA name such as"
            " Europe/Berlin"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(
            f"unknown time zone {quoted(name)}; use an IANA name such as Europe/Berlin"
        ) from None


def _as_utc(moment: datetime) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; schedules work on instants")
    return moment.astimezone(UTC)


def _offset(moment: datetime) -> timedelta:
    # Always set for a datetime on a ZoneInfo; the `or` only tells the type checker so.
    return moment.utcoffset() or timedelta(0)
