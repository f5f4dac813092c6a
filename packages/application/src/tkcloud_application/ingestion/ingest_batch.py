"""The ingestion use case: every check of PROTOCOL.md's table, in its order.

The edge hands over the path ids, the headers as strings and a bounded body source; this module
decides everything else and returns a value the edge maps to the SDK's response shapes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from tkcloud_application.billing.quota_alerts import QuotaAlerts
from tkcloud_application.ports.ingestion import (
    EventStore,
    IngestDirectory,
    NonceStore,
    QuotaCounter,
    RateLimiter,
)
from tkcloud_application.ports.system import Clock
from tkcloud_domain.errors import (
    AllEventsRejected,
    DomainError,
    ExpiredTimestamp,
    InvalidRequest,
    InvalidSignature,
    InvalidToken,
    QuotaExceeded,
    RateLimited,
    ReplayAttack,
    ServiceUnavailable,
)
from tkcloud_domain.events import (
    MAX_BODY_BYTES,
    EnvelopeError,
    EventRejection,
    EventSchema,
    decode_envelope,
    parse_event,
)
from tkcloud_domain.limits import QuotaDecision, RateLimitState
from tkcloud_domain.months import month_key, seconds_until_next_month, start_of_next_month
from tkcloud_domain.tenancy import IngestApp

TIMESTAMP_WINDOW_SECONDS = 600
# Twice the window: a request dated +600 s cannot be replayed once its nonce has expired.
NONCE_TTL_SECONDS = 2 * TIMESTAMP_WINDOW_SECONDS
RATE_WINDOW_SECONDS = 60

_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}\Z")
_TIMESTAMP = re.compile(r"-?\d{1,15}\Z")
_NONCE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)


@dataclass(frozen=True, slots=True)
class ReceivedBody:
    sent: bytes  # as sent: what the signature covers
    decoded: bytes  # after content decoding (gzip)
    # Why the body could not be decoded; reported as a bad body (check 9), after the signature
    # checks, so an unsigned request never learns more than "invalid signature".
    problem: str | None = None


class BodySource(Protocol):
    async def read(self, limit: int) -> ReceivedBody:
        """The body, raising PayloadTooLarge past `limit` as sent or decoded, without reading
        the rest."""
        ...


@dataclass(frozen=True, slots=True)
class IngestHeaders:
    signature: str | None = None
    timestamp: str | None = None
    nonce: str | None = None
    batch_size: str | None = None
    authorization: str | None = None
    dnt: bool = False


@dataclass(frozen=True, slots=True)
class IngestRequest:
    org_id: str
    app_id: str
    headers: IngestHeaders
    body: BodySource


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int  # stored now + duplicates of already stored events
    duplicates: int
    rejections: Sequence[EventRejection] = field(default_factory=tuple)
    rate_limit: RateLimitState | None = None
    dnt: bool = False  # a DNT request: nothing stored, 204

    @property
    def rejected(self) -> int:
        return len(self.rejections)


class IngestBatch:
    def __init__(
        self,
        *,
        directory: IngestDirectory,
        nonces: NonceStore,
        rate_limiter: RateLimiter,
        quota: QuotaCounter,
        events: EventStore,
        clock: Clock,
        alerts: QuotaAlerts | None = None,
    ) -> None:
        self._alerts = alerts
        self._directory = directory
        self._nonces = nonces
        self._rate_limiter = rate_limiter
        self._quota = quota
        self._events = events
        self._clock = clock

    async def __call__(self, request: IngestRequest) -> IngestResult:
        headers = request.headers
        now = self._clock.now()

        # 1. the app exists, is active, belongs to the org; a Bearer token, if sent, is live.
        app = await self._directory.find_ingest_app(request.org_id, request.app_id)
        if app is None or not app.active:
            raise InvalidToken()
        if headers.authorization is not None:
            scheme, _, token = headers.authorization.partition(" ")
            if scheme.lower() != "bearer" or not app.accepts_token(token.strip(), now):
                raise InvalidToken()

        # 2. body <= 5 MiB, as sent and decoded (the source stops reading past it).
        received = await request.body.read(MAX_BODY_BYTES)

        # 3-5. the signature headers, the timestamp window, the signature itself.
        self._verify_signature(app, headers, received.sent, now)

        # 6. the nonce, recorded atomically only once the signature has verified.
        assert headers.nonce is not None
        if not await self._nonces.claim(app.app_id, headers.nonce.lower(), NONCE_TTL_SECONDS):
            raise ReplayAttack()

        if headers.dnt:
            # Answered before the rate limit (PROTOCOL.md's order), so not counted by it; the
            # answer still carries the X-RateLimit-* headers of every answer past check 6.
            await self._events.count_dnt(app, now.date())
            state = None
            if app.requests_per_minute is not None:
                state = await self._rate_limiter.peek(
                    f"org:{app.org_id}", app.requests_per_minute, RATE_WINDOW_SECONDS, now
                )
            return IngestResult(accepted=0, duplicates=0, dnt=True, rate_limit=state)

        # 7. the plan's request rate.
        rate_limit = await self._check_rate(app, now)
        try:
            return await self._admit_and_store(app, headers, received, now, rate_limit)
        except DomainError as exc:
            exc.rate_limit = rate_limit
            raise

    def _verify_signature(
        self, app: IngestApp, headers: IngestHeaders, sent: bytes, now: datetime
    ) -> None:
        signature, timestamp, nonce = headers.signature, headers.timestamp, headers.nonce
        if (
            signature is None
            or timestamp is None
            or nonce is None
            or _SIGNATURE.match(signature) is None
            or _TIMESTAMP.match(timestamp) is None
            or _NONCE.match(nonce) is None
        ):
            raise InvalidSignature("Missing or malformed x-signature, x-timestamp or x-nonce")
        if abs(now.timestamp() - int(timestamp)) > TIMESTAMP_WINDOW_SECONDS:
            raise ExpiredTimestamp()
        message = f"{timestamp}:{nonce}:".encode() + sent
        provided = signature.lower()
        verified = False
        for secret in app.live_secrets(now):
            expected = hmac.new(secret.secret.encode(), message, hashlib.sha256).hexdigest()
            verified |= hmac.compare_digest(expected, provided)
        if not verified:
            raise InvalidSignature()

    async def _check_rate(self, app: IngestApp, now: datetime) -> RateLimitState | None:
        limit = app.requests_per_minute
        if limit is None:
            return None
        decision = await self._rate_limiter.hit(
            f"org:{app.org_id}", limit, RATE_WINDOW_SECONDS, now
        )
        if not decision.allowed:
            error = RateLimited(retry_after=decision.state.reset_seconds)
            error.rate_limit = decision.state
            raise error
        return decision.state

    async def _admit_and_store(
        self,
        app: IngestApp,
        headers: IngestHeaders,
        body: ReceivedBody,
        now: datetime,
        rate_limit: RateLimitState | None,
    ) -> IngestResult:
        # 9 is decided before 8 so the quota can reserve the batch's size, but reported after it.
        entries, envelope_error = _decode(body, headers.batch_size)
        reserved = len(entries)
        month = month_key(now)

        # 8. the monthly quota: a batch is admitted whole while the count before it is under it.
        limit = app.events_per_month
        decision: QuotaDecision | None = None
        if limit is not None:
            scope = app.quota_scope
            decision = await self._quota.reserve(
                scope,
                month,
                reserved,
                limit,
                load_seed=lambda: self._events.events_this_month(scope, month),
                ttl_seconds=int((start_of_next_month(now) - now).total_seconds()) + 86_400,
            )
            if not decision.admitted:
                raise QuotaExceeded(retry_after=seconds_until_next_month(now))

        stored = 0
        # If the store fails we cannot know whether its commit landed (a connection lost after
        # COMMIT was sent): keep the reservation then. Over-counting a batch is the safe side;
        # giving it back could let an org past its quota for free.
        outcome_known = True
        try:
            if envelope_error is not None:
                raise InvalidRequest(envelope_error)
            # 10. each event on its own; duplicates inside the batch: the first one wins.
            oldest = (
                None if app.retention_days is None else now - timedelta(days=app.retention_days)
            )
            valid: list[EventSchema] = []
            rejections: list[EventRejection] = []
            seen: set[str] = set()
            in_batch_duplicates = 0
            for index, raw in enumerate(entries):
                parsed = parse_event(raw, index, now=now, oldest=oldest)
                if isinstance(parsed, EventRejection):
                    rejections.append(parsed)
                elif parsed.event_id in seen:
                    in_batch_duplicates += 1
                else:
                    seen.add(parsed.event_id)
                    valid.append(parsed)
            if not valid and in_batch_duplicates == 0:
                raise AllEventsRejected(
                    details={"errors": [_rejection_body(r) for r in rejections]}
                )
            if valid:
                outcome_known = False
                stored = await self._events.store(app, valid, now)
                outcome_known = True
            if decision is not None and stored and app.quota_scope.kind == "org":
                await self._alert(app, month, decision.used_before, stored, limit)
            duplicates = len(valid) - stored + in_batch_duplicates
            return IngestResult(
                accepted=stored + duplicates,
                duplicates=duplicates,
                rejections=rejections,
                rate_limit=rate_limit,
            )
        finally:
            if limit is not None and reserved > stored and outcome_known:
                await self._give_back(app, month, reserved - stored)

    async def _alert(
        self, app: IngestApp, month: str, used_before: int, stored: int, limit: int | None
    ) -> None:
        if self._alerts is None or limit is None:
            return
        crossed = self._alerts.crossed(used_before, used_before + stored, limit)
        if crossed:
            await self._alerts.notify(app.org_id, month, crossed, limit)

    async def _give_back(self, app: IngestApp, month: str, amount: int) -> None:
        # If the cache is gone the counter over-counts until it is re-seeded from the event
        # store; failing the client's request for it would be worse.
        with contextlib.suppress(ServiceUnavailable):
            await self._quota.release(app.quota_scope, month, amount)


def _decode(body: ReceivedBody, batch_size: str | None) -> tuple[list[bytes], str | None]:
    if body.problem is not None:
        return [], body.problem
    try:
        entries = decode_envelope(body.decoded)
    except EnvelopeError as exc:
        return [], str(exc)
    if batch_size is not None and batch_size.strip() != str(len(entries)):
        return [], f"x-batch-size is {batch_size.strip()!r} but the body has {len(entries)} events"
    return [bytes(e) for e in entries], None


def _rejection_body(rejection: EventRejection) -> dict[str, object]:
    return {
        "event_id": rejection.event_id,
        "index": rejection.index,
        "error": rejection.error,
        "message": rejection.message,
    }
