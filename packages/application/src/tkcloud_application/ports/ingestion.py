"""Ports of the ingestion hot path.

Adapters translate driver, Redis and network failures into `ServiceUnavailable`; they never let a
driver exception through, and never answer "allowed" when they could not ask.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from typing import Protocol

from tkcloud_domain.events import EventSchema
from tkcloud_domain.limits import QuotaDecision, QuotaScope, RateDecision, RateLimitState
from tkcloud_domain.tenancy import IngestApp


class IngestDirectory(Protocol):
    async def find_ingest_app(self, org_id: str, app_id: str) -> IngestApp | None:
        """The app with its org's plan and decrypted live secrets, or None if it does not exist
        or does not belong to that org."""
        ...


class NonceStore(Protocol):
    async def claim(self, app_id: str, nonce: str, ttl_seconds: int) -> bool:
        """Record the nonce atomically; True if it was new, False if seen within the TTL.
        Holds across processes (Redis SET NX EX) in production."""
        ...


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: int, now: datetime) -> RateDecision:
        """Count one request against `key`: allowed while fewer than `limit` requests were
        counted in the last `window_seconds` (a sliding window, shared by all processes).
        A refused request is not counted."""
        ...

    async def peek(
        self, key: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitState:
        """The state `hit` would report, without counting a request (for answers that carry
        the X-RateLimit-* headers but are not rate-limited themselves, such as DNT)."""
        ...


class QuotaCounter(Protocol):
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
        """Atomically add `amount` to the month's counter when the count before it is below
        `limit`; otherwise add nothing and refuse. A missing counter is first initialised (once,
        SET NX) from `load_seed()`, the durable count in the event store, so a cache restart
        never resets a quota."""
        ...

    async def release(self, scope: QuotaScope, month: str, amount: int) -> None:
        """Give back a reservation for events that were rejected or duplicates."""
        ...


class EventStore(Protocol):
    async def store(
        self, app: IngestApp, events: Sequence[EventSchema], received_at: datetime
    ) -> int:
        """Insert the events, skipping any (app, event_id) already stored, and add the number
        inserted to the app's monthly usage, in one transaction. Returns how many were inserted.
        Returns only after the commit: its answer means "durably stored"."""
        ...

    async def events_this_month(self, scope: QuotaScope, month: str) -> int:
        """The durable count of accepted events for the scope in that month (YYYY-MM)."""
        ...

    async def count_dnt(self, app: IngestApp, day: date) -> None:
        """Count one `DNT: 1` request for the app (nothing else is stored)."""
        ...
