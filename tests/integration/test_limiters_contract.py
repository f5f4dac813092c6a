"""Contract tests of the cache ports (nonces, rate limit, quota).

Each test runs against the Redis adapters on the real Redis and against the in-process adapters,
so both honour the same contract. Concurrency is tested with many tasks racing on one key and,
for Redis, with separate clients standing in for separate server processes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from tkcloud_adapters.memory.limits import (
    InProcessNonceStore,
    InProcessQuotaCounter,
    InProcessRateLimiter,
)
from tkcloud_adapters.redis.client import create_redis
from tkcloud_adapters.redis.nonces import RedisNonceStore
from tkcloud_adapters.redis.quota import RedisQuotaCounter
from tkcloud_adapters.redis.rate_limiter import RedisRateLimiter
from tkcloud_application.ports.ingestion import NonceStore, QuotaCounter, RateLimiter
from tkcloud_domain.errors import ServiceUnavailable
from tkcloud_domain.limits import QuotaScope, RateLimitState

T0 = datetime(2026, 12, 4, 15, 20, 15, 890821, tzinfo=UTC)
MONTH = "2026-12"
ORG = QuotaScope("org", "org_contract")
TTL = 40 * 86_400


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def seed(value: int) -> Callable[[], Awaitable[int]]:
    async def load() -> int:
        return value

    return load


def no_seed_expected() -> Callable[[], Awaitable[int]]:
    async def load() -> int:
        raise AssertionError("the counter exists: the seed must not be loaded")

    return load


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def new_redis(redis_url: str) -> AsyncIterator[Callable[[], Redis]]:
    """Opens Redis clients on demand, one per simulated server process; closes them after."""
    clients: list[Redis] = []

    def open_client() -> Redis:
        client = create_redis(redis_url)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.aclose()


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory"])
def redis_prefix_or_memory(request: pytest.FixtureRequest) -> str | None:
    """The Redis key prefix when the Redis adapters are under test, None for in-process ones."""
    if request.param == "redis":
        prefix: str = request.getfixturevalue("redis_prefix")
        return prefix
    return None


@pytest.fixture
def nonces(
    redis_prefix_or_memory: str | None, new_redis: Callable[[], Redis], clock: FakeClock
) -> NonceStore:
    if redis_prefix_or_memory is None:
        return InProcessNonceStore(clock)
    return RedisNonceStore(new_redis(), redis_prefix_or_memory)


@pytest.fixture
def limiter(redis_prefix_or_memory: str | None, new_redis: Callable[[], Redis]) -> RateLimiter:
    if redis_prefix_or_memory is None:
        return InProcessRateLimiter()
    return RedisRateLimiter(new_redis(), redis_prefix_or_memory)


@pytest.fixture
def quota(redis_prefix_or_memory: str | None, new_redis: Callable[[], Redis]) -> QuotaCounter:
    if redis_prefix_or_memory is None:
        return InProcessQuotaCounter()
    return RedisQuotaCounter(new_redis(), redis_prefix_or_memory)


# --- NonceStore -------------------------------------------------------------------------------


async def test_a_nonce_is_new_once_then_a_replay(nonces: NonceStore) -> None:
    assert await nonces.claim("app_a", "n-1", 1200) is True
    assert await nonces.claim("app_a", "n-1", 1200) is False
    assert await nonces.claim("app_a", "n-2", 1200) is True


async def test_nonces_are_per_app(nonces: NonceStore) -> None:
    assert await nonces.claim("app_a", "n-1", 1200) is True
    assert await nonces.claim("app_b", "n-1", 1200) is True
    assert await nonces.claim("app_b", "n-1", 1200) is False


async def test_concurrent_claims_of_one_nonce_admit_exactly_one(nonces: NonceStore) -> None:
    results = await asyncio.gather(*(nonces.claim("app_a", "n-race", 1200) for _ in range(50)))
    assert results.count(True) == 1


async def test_in_process_nonce_is_forgotten_after_its_ttl(clock: FakeClock) -> None:
    nonces = InProcessNonceStore(clock)
    assert await nonces.claim("app_a", "n-1", 1200) is True
    clock.advance(1199.999)
    assert await nonces.claim("app_a", "n-1", 1200) is False
    clock.advance(0.001)
    assert await nonces.claim("app_a", "n-1", 1200) is True
    assert await nonces.claim("app_a", "n-1", 1200) is False


@pytest.mark.integration
async def test_redis_nonce_key_and_ttl(new_redis: Callable[[], Redis], redis_prefix: str) -> None:
    client = new_redis()
    assert await RedisNonceStore(client, redis_prefix).claim("app_a", "n-1", 1200) is True
    ttl = await client.ttl(f"{redis_prefix}nonce:app_a:n-1")
    assert 1190 <= ttl <= 1200


@pytest.mark.integration
async def test_redis_nonces_are_shared_by_processes(
    new_redis: Callable[[], Redis], redis_prefix: str
) -> None:
    first, second = (RedisNonceStore(new_redis(), redis_prefix) for _ in range(2))
    claims = [store.claim("app_a", "n-race", 1200) for _ in range(25) for store in (first, second)]
    results = await asyncio.gather(*claims)
    assert results.count(True) == 1


# --- RateLimiter ------------------------------------------------------------------------------


async def test_allows_up_to_the_limit_and_reports_the_headers(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("org:a", 3, 60, at(0)) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.state for d in decisions] == [
        RateLimitState(limit=3, remaining=2, reset_seconds=0),
        RateLimitState(limit=3, remaining=1, reset_seconds=0),
        # Full: the next request is allowed when the oldest leaves the window, 60 s later.
        RateLimitState(limit=3, remaining=0, reset_seconds=60),
    ]
    refused = await limiter.hit("org:a", 3, 60, at(10.5))
    assert refused.allowed is False
    assert refused.state == RateLimitState(limit=3, remaining=0, reset_seconds=50)


async def test_the_window_slides(limiter: RateLimiter) -> None:
    assert (await limiter.hit("org:a", 2, 60, at(0))).allowed
    assert (await limiter.hit("org:a", 2, 60, at(30))).allowed
    almost = await limiter.hit("org:a", 2, 60, at(59.9))
    assert almost.allowed is False
    assert almost.state.reset_seconds == 1  # 0.1 s, rounded up
    # The request at 0 leaves the window at exactly 60 s.
    slid = await limiter.hit("org:a", 2, 60, at(60))
    assert slid.allowed is True
    assert slid.state == RateLimitState(limit=2, remaining=0, reset_seconds=30)
    refused = await limiter.hit("org:a", 2, 60, at(61))
    assert refused.allowed is False
    assert refused.state.reset_seconds == 29  # until the request at 30 leaves
    later = await limiter.hit("org:a", 2, 60, at(200))
    assert later.state == RateLimitState(limit=2, remaining=1, reset_seconds=0)


async def test_refused_requests_are_not_counted(limiter: RateLimiter) -> None:
    assert (await limiter.hit("org:a", 2, 60, at(0))).allowed
    assert (await limiter.hit("org:a", 2, 60, at(1))).allowed
    for second in range(2, 60):
        assert not (await limiter.hit("org:a", 2, 60, at(second))).allowed
    # Only the two admitted requests hold the window: one slot frees at 60, the next at 61.
    assert (await limiter.hit("org:a", 2, 60, at(60))).allowed
    assert not (await limiter.hit("org:a", 2, 60, at(60.5))).allowed
    assert (await limiter.hit("org:a", 2, 60, at(61))).allowed


async def test_peek_reports_the_state_without_counting(limiter: RateLimiter) -> None:
    assert await limiter.peek("org:a", 2, 60, at(0)) == RateLimitState(2, 2, 0)
    await limiter.hit("org:a", 2, 60, at(0))
    for _ in range(5):
        assert await limiter.peek("org:a", 2, 60, at(1)) == RateLimitState(2, 1, 0)
    await limiter.hit("org:a", 2, 60, at(10))
    assert await limiter.peek("org:a", 2, 60, at(20)) == RateLimitState(2, 0, 40)
    assert (await limiter.hit("org:a", 2, 60, at(60))).allowed  # peeks took no slot


async def test_keys_are_independent(limiter: RateLimiter) -> None:
    assert (await limiter.hit("org:a", 1, 60, at(0))).allowed
    assert not (await limiter.hit("org:a", 1, 60, at(1))).allowed
    assert (await limiter.hit("org:b", 1, 60, at(1))).allowed


async def test_concurrent_hits_at_the_boundary_admit_exactly_the_limit(
    limiter: RateLimiter,
) -> None:
    decisions = await asyncio.gather(*(limiter.hit("org:a", 10, 60, at(0)) for _ in range(40)))
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 10
    assert sorted(d.state.remaining for d in allowed) == list(range(10))
    assert all(d.state == RateLimitState(10, 0, 60) for d in decisions if not d.allowed)


async def test_a_lowered_limit_waits_for_enough_requests_to_leave(limiter: RateLimiter) -> None:
    for second in range(5):
        assert (await limiter.hit("org:a", 5, 60, at(second))).allowed
    # Now the plan allows 2: five are in the window, so the one at 3 s must leave first.
    lowered = await limiter.hit("org:a", 2, 60, at(10))
    assert lowered.allowed is False
    assert lowered.state == RateLimitState(limit=2, remaining=0, reset_seconds=53)
    assert (await limiter.hit("org:a", 2, 60, at(62.9))).allowed is False  # still 3 and 4 s
    assert (await limiter.hit("org:a", 2, 60, at(63))).allowed is True


@pytest.mark.integration
async def test_redis_rate_limit_is_shared_by_processes(
    new_redis: Callable[[], Redis], redis_prefix: str
) -> None:
    first, second = (RedisRateLimiter(new_redis(), redis_prefix) for _ in range(2))
    hits = [limiter.hit("org:a", 10, 60, at(0)) for _ in range(20) for limiter in (first, second)]
    decisions = await asyncio.gather(*hits)
    assert sum(d.allowed for d in decisions) == 10


# --- QuotaCounter -----------------------------------------------------------------------------


async def test_a_missing_counter_is_seeded_then_counts(quota: QuotaCounter) -> None:
    loads = 0

    async def load() -> int:
        nonlocal loads
        loads += 1
        return 40

    first = await quota.reserve(ORG, MONTH, 10, 100, load_seed=load, ttl_seconds=TTL)
    second = await quota.reserve(ORG, MONTH, 10, 100, load_seed=load, ttl_seconds=TTL)
    assert (first.admitted, first.used_before) == (True, 40)
    assert (second.admitted, second.used_before) == (True, 50)
    assert loads == 1


async def test_a_batch_is_admitted_while_the_count_before_it_is_under_the_limit(
    quota: QuotaCounter,
) -> None:
    over = await quota.reserve(ORG, MONTH, 10, 100, load_seed=seed(95), ttl_seconds=TTL)
    assert (over.admitted, over.used_before) == (True, 95)  # the overshoot: at most one batch
    refused = await quota.reserve(ORG, MONTH, 1, 100, load_seed=no_seed_expected(), ttl_seconds=TTL)
    assert (refused.admitted, refused.used_before) == (False, 105)
    again = await quota.reserve(ORG, MONTH, 1, 100, load_seed=no_seed_expected(), ttl_seconds=TTL)
    assert again.used_before == 105  # a refused batch added nothing


async def test_concurrent_reservations_at_the_boundary(quota: QuotaCounter) -> None:
    decisions = await asyncio.gather(
        *(quota.reserve(ORG, MONTH, 10, 100, load_seed=seed(0), ttl_seconds=TTL) for _ in range(30))
    )
    admitted = [d.used_before for d in decisions if d.admitted]
    assert sorted(admitted) == list(range(0, 100, 10))
    assert all(d.used_before == 100 for d in decisions if not d.admitted)
    check = await quota.reserve(ORG, MONTH, 0, 100, load_seed=no_seed_expected(), ttl_seconds=TTL)
    assert (check.admitted, check.used_before) == (False, 100)


async def test_concurrent_reservations_on_a_missing_counter_apply_the_seed_once(
    quota: QuotaCounter,
) -> None:
    decisions = await asyncio.gather(
        *(quota.reserve(ORG, MONTH, 1, 1000, load_seed=seed(7), ttl_seconds=TTL) for _ in range(20))
    )
    assert sorted(d.used_before for d in decisions) == list(range(7, 27))


async def test_release_gives_back_and_never_goes_below_zero(quota: QuotaCounter) -> None:
    await quota.reserve(ORG, MONTH, 10, 100, load_seed=seed(0), ttl_seconds=TTL)
    await quota.release(ORG, MONTH, 4)
    check = await quota.reserve(ORG, MONTH, 0, 100, load_seed=no_seed_expected(), ttl_seconds=TTL)
    assert check.used_before == 6
    await quota.release(ORG, MONTH, 100)
    check = await quota.reserve(ORG, MONTH, 0, 100, load_seed=no_seed_expected(), ttl_seconds=TTL)
    assert check.used_before == 0


async def test_release_of_a_missing_counter_does_not_create_it(quota: QuotaCounter) -> None:
    await quota.release(ORG, MONTH, 5)
    decision = await quota.reserve(ORG, MONTH, 1, 100, load_seed=seed(30), ttl_seconds=TTL)
    assert decision.used_before == 30  # seeded, so the release left no counter behind


async def test_a_zero_amount_only_checks(quota: QuotaCounter) -> None:
    for _ in range(2):
        check = await quota.reserve(ORG, MONTH, 0, 100, load_seed=seed(50), ttl_seconds=TTL)
        assert (check.admitted, check.used_before) == (True, 50)


async def test_scopes_and_months_are_counted_apart(quota: QuotaCounter) -> None:
    staging = QuotaScope("app", "app_staging")
    await quota.reserve(ORG, MONTH, 10, 100, load_seed=seed(0), ttl_seconds=TTL)
    other_scope = await quota.reserve(staging, MONTH, 1, 1000, load_seed=seed(3), ttl_seconds=TTL)
    next_month = await quota.reserve(ORG, "2027-01", 1, 100, load_seed=seed(0), ttl_seconds=TTL)
    assert other_scope.used_before == 3
    assert next_month.used_before == 0


async def test_a_failing_seed_is_reported_as_is(quota: QuotaCounter) -> None:
    async def database_down() -> int:
        raise ServiceUnavailable("database")

    with pytest.raises(ServiceUnavailable) as raised:
        await quota.reserve(ORG, MONTH, 1, 100, load_seed=database_down, ttl_seconds=TTL)
    assert raised.value.dependency == "database"
    # Nothing was counted: the next request seeds the counter.
    decision = await quota.reserve(ORG, MONTH, 1, 100, load_seed=seed(2), ttl_seconds=TTL)
    assert decision.used_before == 2


@pytest.mark.integration
async def test_redis_quota_key_and_ttl(new_redis: Callable[[], Redis], redis_prefix: str) -> None:
    client = new_redis()
    counter = RedisQuotaCounter(client, redis_prefix)
    await counter.reserve(ORG, MONTH, 10, 100, load_seed=seed(5), ttl_seconds=TTL)
    key = f"{redis_prefix}quota:org:org_contract:{MONTH}"
    assert await client.get(key) == b"15"
    assert TTL - 10 <= await client.ttl(key) <= TTL


@pytest.mark.integration
async def test_redis_quota_is_shared_by_processes(
    new_redis: Callable[[], Redis], redis_prefix: str
) -> None:
    first, second = (RedisQuotaCounter(new_redis(), redis_prefix) for _ in range(2))
    reservations = [
        counter.reserve(ORG, MONTH, 10, 100, load_seed=seed(0), ttl_seconds=TTL)
        for _ in range(15)
        for counter in (first, second)
    ]
    decisions = await asyncio.gather(*reservations)
    assert sorted(d.used_before for d in decisions if d.admitted) == list(range(0, 100, 10))


# --- Redis unavailable ------------------------------------------------------------------------

AdapterCall = Callable[[Redis], Awaitable[object]]

ADAPTER_CALLS: dict[str, AdapterCall] = {
    "claim": lambda client: RedisNonceStore(client, "tkt:down:").claim("app_a", "n-1", 1200),
    "hit": lambda client: RedisRateLimiter(client, "tkt:down:").hit("org:a", 10, 60, T0),
    "reserve": lambda client: RedisQuotaCounter(client, "tkt:down:").reserve(
        ORG, MONTH, 1, 100, load_seed=seed(0), ttl_seconds=TTL
    ),
    "release": lambda client: RedisQuotaCounter(client, "tkt:down:").release(ORG, MONTH, 1),
}


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


@pytest.mark.parametrize("call", ADAPTER_CALLS.values(), ids=ADAPTER_CALLS.keys())
async def test_a_closed_port_answers_service_unavailable_at_once(call: AdapterCall) -> None:
    client = create_redis("redis://127.0.0.1:1")
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable) as raised:
            await call(client)
    finally:
        await client.aclose()
    assert raised.value.dependency == "cache"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("call", ADAPTER_CALLS.values(), ids=ADAPTER_CALLS.keys())
async def test_a_hung_server_answers_service_unavailable_within_the_timeout(
    call: AdapterCall, silent_server: str
) -> None:
    client = create_redis(silent_server)
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailable) as raised:
            await call(client)
    finally:
        await client.aclose()
    assert raised.value.dependency == "cache"
    assert time.monotonic() - started < 2.5
