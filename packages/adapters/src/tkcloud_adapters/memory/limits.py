"""Nonces, rate windows and quota counters held in this process's memory.

The embedded default for a single server process; the Redis adapters are the ones to use when
several processes serve the same apps. The methods do their check-and-update without awaiting in
between, which is what makes them atomic under asyncio. Memory stays proportional to live state:
nonces expire on the injected clock, idle windows and past months are dropped.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from bisect import bisect_right, insort
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tkcloud_application.ports.system import Clock
from tkcloud_domain.limits import QuotaDecision, QuotaScope, RateDecision, RateLimitState

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# How often the rate limiter looks for windows of keys that stopped sending requests.
_SWEEP_INTERVAL = timedelta(minutes=1)

# Quota counters kept per scope: the current month and the one before, for requests that
# straddle the turn of the month. Older months are never asked for again.
_MONTHS_KEPT = 2


class InProcessNonceStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._expiry: dict[tuple[str, str], datetime] = {}
        # The same entries as a heap ordered by expiry, so forgetting them costs O(log n) each.
        # A key is added again only after it expired, so each has exactly one heap entry.
        self._by_expiry: list[tuple[datetime, tuple[str, str]]] = []

    async def claim(self, app_id: str, nonce: str, ttl_seconds: int) -> bool:
        now = self._clock.now()
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, expired = heapq.heappop(self._by_expiry)
            del self._expiry[expired]
        key = (app_id, nonce)
        if key in self._expiry:
            return False
        expires_at = now + timedelta(seconds=ttl_seconds)
        self._expiry[key] = expires_at
        heapq.heappush(self._by_expiry, (expires_at, key))
        return True


@dataclass(slots=True)
class _Window:
    times: list[int]  # admitted requests, microseconds since the epoch, sorted
    span: int  # microseconds


class InProcessRateLimiter:
    """An exact sliding window: the timestamps of the requests admitted in it, per key."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._next_sweep: datetime | None = None

    async def hit(self, key: str, limit: int, window_seconds: int, now: datetime) -> RateDecision:
        return self._decide(key, limit, window_seconds, now, record=True)

    async def peek(
        self, key: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitState:
        return self._decide(key, limit, window_seconds, now, record=False).state

    def _decide(
        self, key: str, limit: int, window_seconds: int, now: datetime, *, record: bool
    ) -> RateDecision:
        self._sweep(now)
        now_us = (now - _EPOCH) // _MICROSECOND
        span = window_seconds * 1_000_000
        window = self._windows.setdefault(key, _Window([], span))
        window.span = span  # a plan change resizes the window
        # Entries at or before the cutoff have left the window.
        del window.times[: bisect_right(window.times, now_us - window.span)]
        allowed = len(window.times) < limit
        if allowed and record:
            # insort, not append: concurrent requests may arrive slightly out of clock order.
            insort(window.times, now_us)
        elif not window.times:
            del self._windows[key]  # nothing admitted, nothing to remember

        count = len(window.times)
        if count < limit:
            reset = 0
        elif limit > 0:
            # The next request is let in when the entry `limit` places from the newest leaves.
            blocker = window.times[count - limit]
            reset = max(1, math.ceil((blocker + window.span - now_us) / 1_000_000))
        else:
            reset = window_seconds
        return RateDecision(
            allowed=allowed,
            state=RateLimitState(limit=limit, remaining=max(0, limit - count), reset_seconds=reset),
        )

    def _sweep(self, now: datetime) -> None:
        """Drop the windows whose newest request has left them: keys that stopped sending."""
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL
        now_us = (now - _EPOCH) // _MICROSECOND
        for key, window in list(self._windows.items()):
            if window.times[-1] <= now_us - window.span:
                del self._windows[key]


class InProcessQuotaCounter:
    """Counters per month and scope. Months roll over instead of expiring, so `ttl_seconds` is
    not needed here."""

    def __init__(self) -> None:
        self._months: dict[str, dict[str, int]] = {}
        # Seeds being loaded, per counter: concurrent requests that find the counter missing
        # share one query to the event store.
        self._seeding: dict[tuple[str, str], asyncio.Future[int]] = {}

    async def reserve(
        self,
        scope: QuotaScope,
        month: str,
        amount: int,
        limit: int,
        *,
        load_seed: Callable[[], Awaitable[int]],
        ttl_seconds: int,
    ) -> QuotaDecision:
        counts = self._months.get(month)
        if counts is None or scope.key not in counts:
            seed = await self._load_seed_once((scope.key, month), load_seed)
            counts = self._months.setdefault(month, {})
            # Another request may have seeded (and counted) while this one awaited.
            counts.setdefault(scope.key, seed)
            while len(self._months) > _MONTHS_KEPT:
                del self._months[min(self._months)]  # "YYYY-MM" sorts chronologically
        used = counts[scope.key]
        if used < limit:
            counts[scope.key] = used + amount
        return QuotaDecision(admitted=used < limit, used_before=used)

    async def release(self, scope: QuotaScope, month: str, amount: int) -> None:
        counts = self._months.get(month)
        if counts is not None and scope.key in counts:
            counts[scope.key] = max(0, counts[scope.key] - amount)

    async def _load_seed_once(
        self, key: tuple[str, str], load_seed: Callable[[], Awaitable[int]]
    ) -> int:
        loading = self._seeding.get(key)
        if loading is None:
            loading = asyncio.ensure_future(load_seed())
            self._seeding[key] = loading
            loading.add_done_callback(lambda _: self._seeding.pop(key, None))
        # Shielded: one waiter being cancelled must not cancel the load the others wait for.
        return await asyncio.shield(loading)
