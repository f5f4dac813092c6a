"""`IngestBatch`, the ingestion use case, wired with fakes: PROTOCOL.md's checks in their order,
the quota reservation and what each failure leaves behind (no I/O, no HTTP)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.fakes.storage import FakeDatabase, FakeEventStore, FakeIngestDirectory
from tests.fakes.system import FakeClock
from tests.support.sdk import batch_body, sdk_event, sign
from tkcloud_adapters.memory.limits import (
    InProcessNonceStore,
    InProcessQuotaCounter,
    InProcessRateLimiter,
)
from tkcloud_application.ingestion.ingest_batch import (
    IngestBatch,
    IngestHeaders,
    IngestRequest,
    IngestResult,
    ReceivedBody,
)
from tkcloud_domain.errors import (
    AllEventsRejected,
    ExpiredTimestamp,
    InvalidRequest,
    InvalidSignature,
    InvalidToken,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ReplayAttack,
    ServiceUnavailable,
)
from tkcloud_domain.events import MAX_BODY_BYTES, NIL_UUID
from tkcloud_domain.limits import QuotaDecision, QuotaScope, RateDecision, RateLimitState
from tkcloud_domain.plans import Plan, limits_for
from tkcloud_domain.tenancy import Environment, IngestApp, LiveSecret, hash_token

NOW = datetime(2026, 12, 4, 15, 21, tzinfo=UTC)
MONTH = "2026-12"
SECONDS_TO_JANUARY = 2_363_940  # 2026-12-04T15:21:00Z -> 2027-01-01T00:00:00Z
ORG = "550e8400-e29b-41d4-a716-446655440000"
APP = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
OTHER_ORG = "11111111-2222-4333-8444-555555555555"
OTHER_APP = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
SECRET = "harness-secret-0001"
TOKEN = "tk_live-token-0001"
BAD_SIGNATURE = "0" * 64
ORG_SCOPE = QuotaScope("org", ORG)
APP_SCOPE = QuotaScope("app", APP)
UNLIMITED = 2**62


def make_app(
    *,
    org_id: str = ORG,
    app_id: str = APP,
    plan: Plan = Plan.PRO,
    environment: Environment = Environment.PRODUCTION,
    active: bool = True,
    secrets: tuple[LiveSecret, ...] | None = None,
    custom_events_per_month: int | None = None,
    custom_retention_days: int | None = None,
) -> IngestApp:
    return IngestApp(
        org_id=org_id,
        app_id=app_id,
        environment=environment,
        active=active,
        plan=plan,
        org_limits=limits_for(
            plan,
            custom_events_per_month=custom_events_per_month,
            custom_retention_days=custom_retention_days,
        ),
        secrets=secrets
        if secrets is not None
        else (LiveSecret(token_hash=hash_token(TOKEN), secret=SECRET, expires_at=None),),
    )


class StaticBody:
    """A BodySource that hands over given bytes: (as sent, after content decoding)."""

    def __init__(self, sent: bytes, decoded: bytes | None = None) -> None:
        self._sent = sent
        self._decoded = sent if decoded is None else decoded
        self.reads = 0

    async def read(self, limit: int) -> ReceivedBody:
        self.reads += 1
        assert limit == MAX_BODY_BYTES
        return ReceivedBody(self._sent, self._decoded)


class TooLargeBody:
    """A BodySource whose client sent more than the limit."""

    def __init__(self) -> None:
        self.reads = 0

    async def read(self, limit: int) -> ReceivedBody:
        self.reads += 1
        raise PayloadTooLarge()


class SpyRateLimiter:
    """The in-process limiter, recording every call."""

    def __init__(self) -> None:
        self.inner = InProcessRateLimiter()
        self.calls: list[tuple[str, int, int, datetime]] = []

    async def hit(self, key: str, limit: int, window_seconds: int, now: datetime) -> RateDecision:
        self.calls.append((key, limit, window_seconds, now))
        return await self.inner.hit(key, limit, window_seconds, now)

    async def peek(
        self, key: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitState:
        return await self.inner.peek(key, limit, window_seconds, now)


class SpyQuotaCounter:
    """The in-process quota counter, recording every call; `release` can be made to fail as an
    unreachable cache does."""

    def __init__(self, *, release_fails: bool = False) -> None:
        self.inner = InProcessQuotaCounter()
        self.release_fails = release_fails
        self.reserves: list[tuple[QuotaScope, str, int, int]] = []
        self.releases: list[tuple[QuotaScope, str, int]] = []
        self.ttls: list[int] = []

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
        self.reserves.append((scope, month, amount, limit))
        self.ttls.append(ttl_seconds)
        return await self.inner.reserve(
            scope, month, amount, limit, load_seed=load_seed, ttl_seconds=ttl_seconds
        )

    async def release(self, scope: QuotaScope, month: str, amount: int) -> None:
        self.releases.append((scope, month, amount))
        if self.release_fails:
            raise ServiceUnavailable("cache")
        await self.inner.release(scope, month, amount)


async def _no_seed() -> int:
    return 0


class Harness:
    """IngestBatch over fakes; `send()` signs like the SDK unless told otherwise."""

    def __init__(self, *apps: IngestApp, release_fails: bool = False) -> None:
        self.clock = FakeClock(NOW)
        self.db = FakeDatabase()
        self.events = FakeEventStore(self.db)
        self.directory = FakeIngestDirectory()
        for app in apps or (make_app(),):
            self.directory.add(app)
        self.nonces = InProcessNonceStore(self.clock)
        self.rate_limiter = SpyRateLimiter()
        self.quota = SpyQuotaCounter(release_fails=release_fails)
        self.ingest = IngestBatch(
            directory=self.directory,
            nonces=self.nonces,
            rate_limiter=self.rate_limiter,
            quota=self.quota,
            events=self.events,
            clock=self.clock,
        )

    def request(
        self,
        body: bytes,
        *,
        org_id: str = ORG,
        app_id: str = APP,
        secret: str = SECRET,
        nonce: str | None = None,
        timestamp: str | None = None,
        signature: str | None = None,
        batch_size: str | None = None,
        authorization: str | None = None,
        dnt: bool = False,
        source: Any = None,
    ) -> IngestRequest:
        stamp = timestamp if timestamp is not None else str(int(self.clock.now().timestamp()))
        nonce = nonce or str(uuid.uuid4())
        headers = IngestHeaders(
            signature=signature if signature is not None else sign(secret, stamp, nonce, body),
            timestamp=stamp,
            nonce=nonce,
            batch_size=batch_size,
            authorization=authorization,
            dnt=dnt,
        )
        return IngestRequest(org_id, app_id, headers, source or StaticBody(body))

    async def send(self, body: bytes, **kwargs: Any) -> IngestResult:
        return await self.ingest(self.request(body, **kwargs))

    async def used(self, scope: QuotaScope) -> int:
        """The quota counter's value, read through its public API (a reservation of 0)."""
        decision = await self.quota.inner.reserve(
            scope, MONTH, 0, UNLIMITED, load_seed=_no_seed, ttl_seconds=1
        )
        return decision.used_before

    async def fill_quota(self, scope: QuotaScope, amount: int) -> None:
        await self.quota.inner.reserve(
            scope, MONTH, amount, UNLIMITED, load_seed=_no_seed, ttl_seconds=1
        )

    def stored_ids(self, app_id: str = APP) -> list[str]:
        return [e.event_id for e in self.events.stored(app_id)]


def events(count: int, **overrides: Any) -> list[dict[str, Any]]:
    return [sdk_event(NOW, **overrides) for _ in range(count)]


def body_of(*items: Any) -> bytes:
    return batch_body(list(items))


def with_headers(request: IngestRequest, **headers: Any) -> IngestRequest:
    return dataclasses.replace(request, headers=dataclasses.replace(request.headers, **headers))


# --- 1: the app exists, is active, belongs to the org; a Bearer token, if sent, is live ----------


async def test_unknown_app_is_invalid_token_before_the_body_or_signature_is_looked_at() -> None:
    h = Harness()
    source = TooLargeBody()
    with pytest.raises(InvalidToken):
        await h.send(b"", app_id=OTHER_APP, signature=BAD_SIGNATURE, source=source)
    assert source.reads == 0


async def test_app_of_another_org_is_invalid_token() -> None:
    h = Harness(make_app(), make_app(org_id=OTHER_ORG, app_id=OTHER_APP))
    with pytest.raises(InvalidToken):
        await h.send(body_of(*events(1)), org_id=OTHER_ORG, app_id=APP)
    assert h.stored_ids() == []


async def test_inactive_app_is_invalid_token_even_when_correctly_signed() -> None:
    h = Harness(make_app(active=False))
    with pytest.raises(InvalidToken):
        await h.send(body_of(*events(1)))
    assert h.stored_ids() == []


@pytest.mark.parametrize(
    "authorization", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer  {TOKEN} "]
)
async def test_a_live_bearer_token_of_the_app_is_accepted_whatever_the_scheme_case(
    authorization: str,
) -> None:
    h = Harness()
    result = await h.send(body_of(*events(1)), authorization=authorization)
    assert result.accepted == 1


@pytest.mark.parametrize(
    "authorization",
    [
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        "Bearer tk_some-other-token",
        "Bearer ",
        "Bearer",
        "",
        TOKEN,
    ],
)
async def test_a_wrong_scheme_or_wrong_token_is_invalid_token(authorization: str) -> None:
    h = Harness()
    source = StaticBody(body_of(*events(1)))
    with pytest.raises(InvalidToken):
        await h.send(body_of(*events(1)), authorization=authorization, source=source)
    assert source.reads == 0  # check 1 comes before the body is read
    assert h.stored_ids() == []


async def test_the_token_of_another_app_of_the_same_org_is_invalid_token() -> None:
    other_token = "tk_other-app-token"
    other = make_app(
        app_id=OTHER_APP, secrets=(LiveSecret(hash_token(other_token), "other-secret", None),)
    )
    h = Harness(make_app(), other)
    with pytest.raises(InvalidToken):
        await h.send(body_of(*events(1)), authorization=f"Bearer {other_token}")


async def test_a_rotated_credentials_token_works_during_the_grace_period_and_not_after() -> None:
    old_token, new_token = "tk_old", "tk_new"
    grace_end = NOW + timedelta(hours=24)
    app = make_app(
        secrets=(
            LiveSecret(hash_token(new_token), "new-secret", None),
            LiveSecret(hash_token(old_token), "old-secret", grace_end),
        )
    )
    h = Harness(app)
    result = await h.send(
        body_of(*events(1)), secret="old-secret", authorization=f"Bearer {old_token}"
    )
    assert result.accepted == 1

    h.clock.set(grace_end)
    with pytest.raises(InvalidToken):
        await h.send(
            body_of(sdk_event(NOW)), secret="new-secret", authorization=f"Bearer {old_token}"
        )
    result = await h.send(
        body_of(sdk_event(NOW)), secret="new-secret", authorization=f"Bearer {new_token}"
    )
    assert result.accepted == 1


# --- 2: body size --------------------------------------------------------------------------------


async def test_payload_too_large_comes_before_the_signature_headers_are_checked() -> None:
    h = Harness()
    request = with_headers(h.request(b"", source=TooLargeBody()), signature=None, nonce=None)
    with pytest.raises(PayloadTooLarge):
        await h.ingest(request)


# --- 3, 4, 5: signature headers, timestamp window, signature -------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"signature": None},
        {"timestamp": None},
        {"nonce": None},
        {"signature": "ab" * 31},  # 62 hex chars
        {"signature": "zz" * 32},
        {"signature": "ab" * 32 + "\n"},
        {"timestamp": "1733325660.5"},
        {"timestamp": "soon"},
        {"timestamp": ""},
        {"nonce": "not-a-uuid"},
        {"nonce": "212ae2eb17ce48e1a54495173521796d"},  # not hyphenated
    ],
)
async def test_missing_or_malformed_signature_headers_are_invalid_signature(
    headers: dict[str, Any],
) -> None:
    h = Harness()
    with pytest.raises(InvalidSignature, match="Missing or malformed"):
        await h.ingest(with_headers(h.request(body_of(*events(1))), **headers))
    assert h.stored_ids() == []


async def test_a_malformed_nonce_is_reported_before_an_expired_timestamp() -> None:
    h = Harness()
    old = str(int(NOW.timestamp()) - 3600)
    with pytest.raises(InvalidSignature):
        await h.send(body_of(*events(1)), timestamp=old, nonce="nope")


@pytest.mark.parametrize(
    ("skew", "accepted"), [(-600, True), (600, True), (-601, False), (601, False)]
)
async def test_the_timestamp_window_is_600_seconds_either_way(skew: int, accepted: bool) -> None:
    h = Harness()
    stamp = str(int(NOW.timestamp()) + skew)
    if accepted:
        assert (await h.send(body_of(*events(1)), timestamp=stamp)).accepted == 1
    else:
        with pytest.raises(ExpiredTimestamp):
            await h.send(body_of(*events(1)), timestamp=stamp)


async def test_an_expired_timestamp_is_reported_before_a_bad_signature() -> None:
    h = Harness()
    old = str(int(NOW.timestamp()) - 601)
    with pytest.raises(ExpiredTimestamp):
        await h.send(body_of(*events(1)), timestamp=old, signature=BAD_SIGNATURE)


async def test_a_signature_made_with_another_secret_is_invalid_signature() -> None:
    h = Harness()
    with pytest.raises(InvalidSignature) as raised:
        await h.send(body_of(*events(1)), secret="not-the-secret")
    assert raised.value.message == "Invalid signature"
    assert h.stored_ids() == []


async def test_a_body_changed_after_signing_is_invalid_signature() -> None:
    h = Harness()
    signed = body_of(*events(1))
    tampered = signed.replace(b"harness-app", b"hacked-app!")
    request = h.request(signed)
    with pytest.raises(InvalidSignature):
        await h.ingest(dataclasses.replace(request, body=StaticBody(tampered)))


async def test_an_uppercase_hex_signature_verifies() -> None:
    h = Harness()
    body = body_of(*events(1))
    stamp, nonce = str(int(NOW.timestamp())), str(uuid.uuid4())
    signature = sign(SECRET, stamp, nonce, body).upper()
    result = await h.send(body, timestamp=stamp, nonce=nonce, signature=signature)
    assert result.accepted == 1


async def test_during_a_rotation_either_live_secret_verifies_and_an_expired_one_does_not() -> None:
    grace_end = NOW + timedelta(hours=1)
    app = make_app(
        secrets=(
            LiveSecret(hash_token("tk_new"), "new-secret", None),
            LiveSecret(hash_token("tk_old"), "old-secret", grace_end),
        )
    )
    h = Harness(app)
    assert (await h.send(body_of(*events(1)), secret="new-secret")).accepted == 1
    assert (await h.send(body_of(*events(1)), secret="old-secret")).accepted == 1

    h.clock.set(grace_end)
    with pytest.raises(InvalidSignature):
        await h.send(body_of(sdk_event(NOW)), secret="old-secret")


async def test_an_app_without_live_secrets_is_invalid_signature() -> None:
    h = Harness(make_app(secrets=()))
    with pytest.raises(InvalidSignature):
        await h.send(body_of(*events(1)))


async def test_the_signature_covers_the_bytes_as_sent_and_events_come_from_the_decoded_body() -> (
    None
):
    h = Harness()
    decoded = body_of(*events(2))
    sent = gzip.compress(decoded)
    request = h.request(sent, source=StaticBody(sent, decoded))
    result = await h.ingest(request)
    assert (result.accepted, result.rejected) == (2, 0)
    assert len(h.stored_ids()) == 2


async def test_the_secret_is_used_as_a_utf8_string_never_base64_decoded() -> None:
    secret = "c2VjcmV0LcO8"  # valid base64: the key is these 12 characters, not what they decode to
    h = Harness(make_app(secrets=(LiveSecret(hash_token(TOKEN), secret, None),)))
    assert (await h.send(body_of(*events(1)), secret=secret)).accepted == 1


# --- 6: the nonce --------------------------------------------------------------------------------


async def test_a_replayed_nonce_with_a_valid_signature_is_a_replay_attack() -> None:
    h = Harness()
    body = body_of(*events(1))
    nonce = str(uuid.uuid4())
    await h.send(body, nonce=nonce)
    with pytest.raises(ReplayAttack):
        await h.send(body, nonce=nonce)


async def test_a_nonce_in_another_case_is_still_a_replay() -> None:
    h = Harness()
    nonce = str(uuid.uuid4())
    await h.send(body_of(*events(1)), nonce=nonce)
    with pytest.raises(ReplayAttack):
        await h.send(body_of(*events(1)), nonce=nonce.upper())


async def test_a_bad_signature_with_an_already_used_nonce_is_invalid_signature_not_replay() -> None:
    h = Harness()
    nonce = str(uuid.uuid4())
    await h.send(body_of(*events(1)), nonce=nonce)
    with pytest.raises(InvalidSignature):
        await h.send(body_of(*events(1)), nonce=nonce, signature=BAD_SIGNATURE)


async def test_a_request_failing_the_signature_does_not_consume_its_nonce() -> None:
    h = Harness()
    nonce = str(uuid.uuid4())
    with pytest.raises(InvalidSignature):
        await h.send(body_of(*events(1)), nonce=nonce, signature=BAD_SIGNATURE)
    with pytest.raises(ExpiredTimestamp):
        await h.send(body_of(*events(1)), nonce=nonce, timestamp=str(int(NOW.timestamp()) - 900))
    assert (await h.send(body_of(*events(1)), nonce=nonce)).accepted == 1


async def test_the_same_nonce_for_another_app_is_not_a_replay() -> None:
    other = make_app(app_id=OTHER_APP)
    h = Harness(make_app(), other)
    nonce = str(uuid.uuid4())
    await h.send(body_of(*events(1)), nonce=nonce)
    assert (await h.send(body_of(*events(1)), nonce=nonce, app_id=OTHER_APP)).accepted == 1


async def test_a_nonce_outlives_the_window_of_a_request_dated_600_s_ahead() -> None:
    h = Harness()
    body = body_of(*events(1))
    ahead = str(int(NOW.timestamp()) + 600)
    nonce = str(uuid.uuid4())
    await h.send(body, nonce=nonce, timestamp=ahead)
    h.clock.advance(1199)  # the request is still inside its window until now + 1200 s
    with pytest.raises(ReplayAttack):
        await h.send(body, nonce=nonce, timestamp=ahead)


# --- DNT -----------------------------------------------------------------------------------------


async def test_dnt_stores_nothing_counts_the_request_and_skips_rate_and_quota() -> None:
    h = Harness()
    await h.send(body_of(*events(1)))  # one request in the rate window
    result = await h.send(body_of(*events(3)), dnt=True)
    assert result.dnt
    assert (result.accepted, result.duplicates) == (0, 0)
    assert len(h.db.events) == 1
    assert h.db.dnt == {(APP, NOW.date()): 1}
    # Not counted by the rate limit, but the answer reports it (X-RateLimit-* headers).
    assert len(h.rate_limiter.calls) == 1
    assert result.rate_limit is not None
    assert result.rate_limit.remaining == result.rate_limit.limit - 1
    assert len(h.quota.reserves) == 1


async def test_dnt_does_not_even_decode_the_body() -> None:
    h = Harness()
    result = await h.send(b"not json at all", dnt=True)
    assert result.dnt
    assert h.db.dnt == {(APP, NOW.date()): 1}


async def test_dnt_comes_after_the_nonce_check_a_replayed_dnt_request_is_not_counted() -> None:
    h = Harness()
    body, nonce = body_of(*events(1)), str(uuid.uuid4())
    await h.send(body, nonce=nonce, dnt=True)
    with pytest.raises(ReplayAttack):
        await h.send(body, nonce=nonce, dnt=True)
    assert h.db.dnt == {(APP, NOW.date()): 1}


async def test_dnt_with_a_bad_signature_is_refused_and_not_counted() -> None:
    h = Harness()
    with pytest.raises(InvalidSignature):
        await h.send(body_of(*events(1)), signature=BAD_SIGNATURE, dnt=True)
    assert h.db.dnt == {}


# --- 7: request rate -----------------------------------------------------------------------------


async def test_the_rate_limiter_is_asked_per_org_with_the_plans_limit_over_60_seconds() -> None:
    h = Harness(make_app(plan=Plan.BUSINESS))
    result = await h.send(body_of(*events(1)))
    assert h.rate_limiter.calls == [(f"org:{ORG}", 1_000, 60, NOW)]
    assert result.rate_limit == RateLimitState(limit=1_000, remaining=999, reset_seconds=0)


async def test_the_request_over_the_plan_rate_is_rate_limited_with_its_state_and_retry_after() -> (
    None
):
    h = Harness(make_app(plan=Plan.FREE))
    for sent in range(1, 11):
        result = await h.send(body_of(*events(1)))
        assert result.rate_limit is not None
        assert result.rate_limit.remaining == 10 - sent
    h.clock.advance(15)
    with pytest.raises(RateLimited) as raised:
        await h.send(body_of(*events(1)))
    assert raised.value.retry_after == 45
    assert raised.value.rate_limit == RateLimitState(limit=10, remaining=0, reset_seconds=45)
    assert len(h.stored_ids()) == 10
    assert len(h.quota.reserves) == 10  # the refused request never reached the quota


async def test_the_rate_limit_is_shared_by_every_app_of_the_org() -> None:
    h = Harness(make_app(plan=Plan.FREE), make_app(plan=Plan.FREE, app_id=OTHER_APP))
    for _ in range(5):
        await h.send(body_of(*events(1)))
        await h.send(body_of(*events(1)), app_id=OTHER_APP)
    with pytest.raises(RateLimited):
        await h.send(body_of(*events(1)), app_id=OTHER_APP)


async def test_a_request_refused_for_its_rate_keeps_its_nonce_consumed() -> None:
    h = Harness(make_app(plan=Plan.FREE))
    for _ in range(10):
        await h.send(body_of(*events(1)))
    nonce = str(uuid.uuid4())
    with pytest.raises(RateLimited):
        await h.send(body_of(*events(1)), nonce=nonce)
    h.clock.advance(60)
    with pytest.raises(ReplayAttack):
        await h.send(body_of(*events(1)), nonce=nonce)


# --- 8: monthly quota ----------------------------------------------------------------------------


async def test_a_production_app_reserves_its_batch_against_the_org_scope_and_plan_quota() -> None:
    h = Harness(make_app(plan=Plan.PRO))
    await h.send(body_of(*events(3)))
    assert h.quota.reserves == [(ORG_SCOPE, MONTH, 3, 100_000)]
    assert h.quota.releases == []
    assert await h.used(ORG_SCOPE) == 3
    assert h.quota.ttls == [SECONDS_TO_JANUARY + 86_400]  # the counter outlives its month


async def test_a_staging_app_reserves_against_its_own_scope_with_1000_a_month() -> None:
    h = Harness(make_app(plan=Plan.BUSINESS, environment=Environment.STAGING))
    await h.send(body_of(*events(2)))
    assert h.quota.reserves == [(APP_SCOPE, MONTH, 2, 1_000)]
    assert await h.used(APP_SCOPE) == 2
    assert await h.used(ORG_SCOPE) == 0


async def test_a_full_org_quota_refuses_production_apps_but_not_a_staging_app_of_the_org() -> None:
    staging = make_app(plan=Plan.FREE, app_id=OTHER_APP, environment=Environment.STAGING)
    h = Harness(make_app(plan=Plan.FREE), staging)
    await h.fill_quota(ORG_SCOPE, 10_000)
    with pytest.raises(QuotaExceeded):
        await h.send(body_of(*events(1)))
    assert (await h.send(body_of(*events(1)), app_id=OTHER_APP)).accepted == 1


async def test_a_full_staging_quota_refuses_that_staging_app_only() -> None:
    production = make_app(plan=Plan.FREE, app_id=OTHER_APP)
    h = Harness(make_app(plan=Plan.FREE, environment=Environment.STAGING), production)
    await h.fill_quota(APP_SCOPE, 1_000)
    with pytest.raises(QuotaExceeded):
        await h.send(body_of(*events(1)))
    assert (await h.send(body_of(*events(1)), app_id=OTHER_APP)).accepted == 1


async def test_quota_exceeded_retries_at_the_next_month_and_carries_the_rate_limit_state() -> None:
    h = Harness(make_app(plan=Plan.FREE))
    await h.fill_quota(ORG_SCOPE, 10_000)
    with pytest.raises(QuotaExceeded) as raised:
        await h.send(body_of(*events(1)))
    assert raised.value.retry_after == SECONDS_TO_JANUARY
    assert (datetime(2027, 1, 1, tzinfo=UTC) - NOW).total_seconds() == SECONDS_TO_JANUARY
    assert raised.value.rate_limit == RateLimitState(limit=10, remaining=9, reset_seconds=0)
    assert await h.used(ORG_SCOPE) == 10_000  # a refused batch adds nothing
    assert h.stored_ids() == []


async def test_a_batch_is_admitted_whole_while_the_count_before_it_is_under_the_quota() -> None:
    h = Harness(make_app(plan=Plan.FREE))
    await h.fill_quota(ORG_SCOPE, 9_999)
    assert (await h.send(body_of(*events(5)))).accepted == 5
    assert await h.used(ORG_SCOPE) == 10_004  # at most one batch over
    with pytest.raises(QuotaExceeded):
        await h.send(body_of(*events(1)))


async def test_the_quota_counter_is_seeded_from_the_durable_count_in_the_event_store() -> None:
    h = Harness(make_app(plan=Plan.FREE))
    # Another production app of the org already has this month's 10,000 events on disk.
    h.db.usage[(OTHER_APP, MONTH, Environment.PRODUCTION)] = (ORG, 10_000)
    h.db.usage[(APP, "2026-11", Environment.PRODUCTION)] = (ORG, 5)  # last month: not counted
    with pytest.raises(QuotaExceeded):
        await h.send(body_of(*events(1)))


async def test_the_quota_month_turns_at_midnight_utc() -> None:
    h = Harness(make_app(plan=Plan.FREE))
    await h.fill_quota(ORG_SCOPE, 10_000)
    h.clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    january = sdk_event(datetime(2027, 1, 1, tzinfo=UTC))
    assert (await h.send(body_of(january))).accepted == 1
    assert h.quota.reserves[-1][1] == "2027-01"


async def test_rejected_and_duplicate_events_are_given_back_to_the_quota() -> None:
    h = Harness()
    already = sdk_event(NOW)
    await h.send(body_of(already))
    assert await h.used(ORG_SCOPE) == 1

    fresh = sdk_event(NOW)
    batch = body_of(fresh, fresh, already, sdk_event(NOW, user_id="nobody"))
    result = await h.send(batch)
    assert (result.accepted, result.duplicates, result.rejected) == (3, 2, 1)
    assert h.quota.reserves[-1] == (ORG_SCOPE, MONTH, 4, 100_000)
    assert h.quota.releases == [(ORG_SCOPE, MONTH, 3)]
    assert await h.used(ORG_SCOPE) == 2  # exactly the events stored


async def test_an_enterprise_org_without_limits_skips_the_rate_limiter_and_the_quota() -> None:
    h = Harness(make_app(plan=Plan.ENTERPRISE))
    old = sdk_event(NOW - timedelta(days=5 * 365))  # no retention limit either
    result = await h.send(body_of(old, sdk_event(NOW), sdk_event(NOW, user_id="nobody")))
    assert (result.accepted, result.rejected) == (2, 1)
    assert result.rate_limit is None
    assert h.rate_limiter.calls == []
    assert h.quota.reserves == []
    assert h.quota.releases == []


async def test_an_enterprise_custom_quota_is_enforced_without_a_rate_limit() -> None:
    h = Harness(make_app(plan=Plan.ENTERPRISE, custom_events_per_month=50))
    await h.send(body_of(*events(2)))
    assert h.quota.reserves == [(ORG_SCOPE, MONTH, 2, 50)]
    assert h.rate_limiter.calls == []
    await h.fill_quota(ORG_SCOPE, 48)
    with pytest.raises(QuotaExceeded) as raised:
        await h.send(body_of(*events(1)))
    assert raised.value.rate_limit is None


async def test_a_staging_app_of_an_enterprise_org_still_has_the_staging_quota() -> None:
    h = Harness(make_app(plan=Plan.ENTERPRISE, environment=Environment.STAGING))
    await h.send(body_of(*events(1)))
    assert h.quota.reserves == [(APP_SCOPE, MONTH, 1, 1_000)]
    assert h.rate_limiter.calls == []


async def test_quota_exceeded_is_reported_before_a_malformed_body() -> None:
    h = Harness(make_app(plan=Plan.FREE))
    await h.fill_quota(ORG_SCOPE, 10_000)
    with pytest.raises(QuotaExceeded):
        await h.send(b"{not json")


# --- 9: the envelope -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"events":[]}', b'{"nope":[]}', b'{"events":{}}', b"[]"],
)
async def test_a_malformed_envelope_is_invalid_request_with_the_rate_limit_state_attached(
    body: bytes,
) -> None:
    h = Harness()
    await h.fill_quota(ORG_SCOPE, 7)
    with pytest.raises(InvalidRequest) as raised:
        await h.send(body)
    assert raised.value.rate_limit == RateLimitState(limit=100, remaining=99, reset_seconds=0)
    assert h.quota.reserves == [(ORG_SCOPE, MONTH, 0, 100_000)]
    assert await h.used(ORG_SCOPE) == 7  # nothing kept
    assert h.db.events == {}


async def test_more_than_1000_events_is_invalid_request() -> None:
    h = Harness()
    with pytest.raises(InvalidRequest, match="1 to 1000 events, got 1001"):
        await h.send(batch_body([{}] * 1001))
    assert await h.used(ORG_SCOPE) == 0


async def test_an_x_batch_size_that_does_not_match_is_invalid_request_and_keeps_nothing() -> None:
    h = Harness()
    with pytest.raises(InvalidRequest, match="x-batch-size is '3' but the body has 2 events"):
        await h.send(body_of(*events(2)), batch_size="3")
    assert await h.used(ORG_SCOPE) == 0
    assert h.db.events == {}


async def test_a_matching_x_batch_size_is_accepted() -> None:
    h = Harness()
    assert (await h.send(body_of(*events(2)), batch_size=" 2 ")).accepted == 2


# --- 10: each event ------------------------------------------------------------------------------


async def test_some_events_rejected_stores_the_others_and_lists_the_reasons() -> None:
    h = Harness()
    good = events(2)
    bad = sdk_event(NOW, schema_version="2.0.0")
    result = await h.send(body_of(good[0], bad, good[1]))
    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, 1)
    [rejection] = result.rejections
    assert (rejection.index, rejection.event_id, rejection.error) == (
        1,
        bad["event_id"],
        "ERR_INVALID_SCHEMA",
    )
    assert rejection.message == "schema_version: expected 1.x.y"
    assert h.stored_ids() == [good[0]["event_id"], good[1]["event_id"]]


async def test_all_events_rejected_raises_with_one_error_entry_per_event() -> None:
    h = Harness()
    await h.fill_quota(ORG_SCOPE, 7)
    no_prefix = sdk_event(NOW, user_id="nobody")
    no_id = sdk_event(NOW)
    del no_id["event_id"]
    with pytest.raises(AllEventsRejected) as raised:
        await h.send(body_of(no_prefix, no_id, 42))
    error = raised.value
    assert error.code == "ERR_INVALID_SCHEMA"
    assert error.details == {
        "errors": [
            {
                "event_id": no_prefix["event_id"],
                "index": 0,
                "error": "ERR_INVALID_SCHEMA",
                "message": "user_id: expected a client_ or anon_ prefix",
            },
            {
                "event_id": NIL_UUID,
                "index": 1,
                "error": "ERR_INVALID_SCHEMA",
                "message": "event_id: required field missing",
            },
            {
                "event_id": NIL_UUID,
                "index": 2,
                "error": "ERR_INVALID_SCHEMA",
                "message": "expected `object`, got `int`",
            },
        ]
    }
    assert error.rate_limit == RateLimitState(limit=100, remaining=99, reset_seconds=0)
    assert h.quota.releases == [(ORG_SCOPE, MONTH, 3)]
    assert await h.used(ORG_SCOPE) == 7
    assert h.db.events == {}


async def test_duplicates_inside_one_batch_are_accepted_counted_and_stored_once() -> None:
    h = Harness()
    event = sdk_event(NOW)
    result = await h.send(body_of(event, event, event))
    assert (result.accepted, result.duplicates, result.rejected) == (3, 2, 0)
    assert h.stored_ids() == [event["event_id"]]
    assert await h.used(ORG_SCOPE) == 1


async def test_the_first_of_an_event_id_repeated_in_one_batch_wins() -> None:
    h = Harness()
    first = sdk_event(NOW)
    second = {**first, "event": {"type": "second_one"}}
    await h.send(body_of(first, second))
    [stored] = h.events.stored(APP)
    assert stored.event_type == "command_execution"


async def test_an_event_id_already_stored_is_a_duplicate_whatever_its_content() -> None:
    h = Harness()
    first = sdk_event(NOW)
    await h.send(body_of(first))
    changed = {**first, "event": {"type": "something_else"}}
    event_id_in_capitals = {**first, "event_id": first["event_id"].upper()}
    result = await h.send(body_of(changed, event_id_in_capitals))
    assert (result.accepted, result.duplicates, result.rejected) == (2, 2, 0)
    [stored] = h.events.stored(APP)
    assert stored.event_type == "command_execution"


async def test_a_batch_sent_again_with_a_fresh_nonce_is_all_duplicates_and_counted_once() -> None:
    h = Harness()
    body = body_of(*events(4))
    await h.send(body)
    result = await h.send(body)
    assert (result.accepted, result.duplicates) == (4, 4)
    assert await h.used(ORG_SCOPE) == 4
    assert h.db.usage == {(APP, MONTH, Environment.PRODUCTION): (ORG, 4)}


@pytest.mark.parametrize(("age_days", "accepted"), [(29, True), (31, False)])
async def test_a_staging_app_keeps_30_days_older_events_are_rejected(
    age_days: int, accepted: bool
) -> None:
    h = Harness(make_app(plan=Plan.BUSINESS, environment=Environment.STAGING))
    event = sdk_event(NOW - timedelta(days=age_days))
    batch = body_of(event, sdk_event(NOW))
    result = await h.send(batch)
    assert result.accepted == (2 if accepted else 1)
    if not accepted:
        assert result.rejections[0].message == "timestamp: older than the app's retention"


@pytest.mark.parametrize(("age_days", "accepted"), [(89, True), (91, False)])
async def test_a_production_app_keeps_its_plans_retention(age_days: int, accepted: bool) -> None:
    h = Harness(make_app(plan=Plan.FREE))  # 90 days
    result = await h.send(body_of(sdk_event(NOW - timedelta(days=age_days)), sdk_event(NOW)))
    assert result.rejected == (0 if accepted else 1)


async def test_an_enterprise_custom_retention_applies_to_production_apps() -> None:
    h = Harness(make_app(plan=Plan.ENTERPRISE, custom_retention_days=7))
    result = await h.send(body_of(sdk_event(NOW - timedelta(days=8)), sdk_event(NOW)))
    assert (result.accepted, result.rejected) == (1, 1)


async def test_an_event_more_than_10_minutes_in_the_future_is_rejected() -> None:
    h = Harness()
    later = sdk_event(NOW + timedelta(minutes=11))
    result = await h.send(body_of(later, sdk_event(NOW + timedelta(minutes=9))))
    assert (result.accepted, result.rejected) == (1, 1)
    assert result.rejections[0].message == "timestamp: more than 10 minutes in the future"


async def test_unknown_extra_fields_are_kept_in_the_stored_event() -> None:
    h = Harness()
    await h.send(body_of(sdk_event(NOW, custom_field={"kept": True})))
    [stored] = h.events.stored(APP)
    assert json.loads(stored.raw)["custom_field"] == {"kept": True}


# --- storage or cache unavailable ----------------------------------------------------------------


async def test_storage_failing_acknowledges_nothing_and_keeps_the_reservation() -> None:
    """The commit may have landed before the connection was lost: giving the reservation back
    could let an org past its quota, keeping it over-counts one batch at most."""
    h = Harness()
    await h.send(body_of(*events(2)))  # the quota counter is now seeded: 2
    h.db.unavailable = True
    with pytest.raises(ServiceUnavailable) as raised:
        await h.send(body_of(*events(3)))
    assert raised.value.dependency == "database"
    assert raised.value.retry_after == 5
    assert raised.value.rate_limit is not None
    assert h.quota.releases == []
    h.db.unavailable = False
    assert await h.used(ORG_SCOPE) == 5
    assert len(h.db.events) == 2


async def test_storage_unavailable_while_seeding_the_quota_is_service_unavailable() -> None:
    h = Harness()
    h.db.unavailable = True  # the directory fake does not need the database (apps were added)
    with pytest.raises(ServiceUnavailable):
        await h.send(body_of(*events(1)))
    h.db.unavailable = False
    assert (await h.send(body_of(*events(1)))).accepted == 1  # the failed seed was not kept


async def test_storage_unavailable_for_a_dnt_request_is_service_unavailable() -> None:
    h = Harness()
    h.db.unavailable = True
    with pytest.raises(ServiceUnavailable):
        await h.send(body_of(*events(1)), dnt=True)


async def test_a_failing_quota_release_does_not_turn_a_success_into_an_error() -> None:
    h = Harness(release_fails=True)
    event = sdk_event(NOW)
    result = await h.send(body_of(event, event, sdk_event(NOW, user_id="nobody")))
    assert (result.accepted, result.duplicates, result.rejected) == (2, 1, 1)
    assert h.quota.releases == [(ORG_SCOPE, MONTH, 2)]  # attempted, failed, swallowed
    assert await h.used(ORG_SCOPE) == 3  # over-counted until re-seeded: the documented trade-off


async def test_a_failing_quota_release_does_not_hide_the_storage_error() -> None:
    h = Harness(release_fails=True)
    await h.send(body_of(*events(1)))
    h.db.unavailable = True
    with pytest.raises(ServiceUnavailable) as raised:
        await h.send(body_of(*events(1)))
    assert raised.value.dependency == "database"


async def test_a_failing_quota_release_does_not_change_all_events_rejected() -> None:
    h = Harness(release_fails=True)
    with pytest.raises(AllEventsRejected):
        await h.send(body_of(sdk_event(NOW, user_id="nobody")))


async def test_nothing_is_given_back_when_every_event_was_stored() -> None:
    h = Harness(release_fails=True)
    result = await h.send(body_of(*events(3)))
    assert result == IngestResult(
        accepted=3,
        duplicates=0,
        rejections=[],
        rate_limit=RateLimitState(limit=100, remaining=99, reset_seconds=0),
    )
    assert h.quota.releases == []
