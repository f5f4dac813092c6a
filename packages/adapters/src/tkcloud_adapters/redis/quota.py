"""Monthly event quotas shared by all processes: one counter per scope and month.

A batch is admitted while the count before it is under the limit, so the overshoot is at most
one batch (PROTOCOL.md, quota paragraph). A missing counter (new month, cache restart, eviction)
is seeded from the durable count in the event store before anything is counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from tkcloud_adapters.redis.errors import cache_unavailable_on_error
from tkcloud_domain.errors import ServiceUnavailable
from tkcloud_domain.limits import QuotaDecision, QuotaScope

# KEYS[1] the counter; ARGV: amount, limit. Returns the count before the batch, or false (nil)
# when the counter is missing and must be seeded first.
_RESERVE = """
local used = redis.call('GET', KEYS[1])
if not used then return false end
used = tonumber(used)
if used < tonumber(ARGV[2]) and tonumber(ARGV[1]) > 0 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
end
return used
"""

# KEYS[1] the counter; ARGV: amount. Never goes below 0, and never creates a missing counter:
# one created here would have no TTL and no seed.
_RELEASE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local give_back = math.min(used, tonumber(ARGV[1]))
if give_back > 0 then redis.call('DECRBY', KEYS[1], give_back) end
return used - give_back
"""


class RedisQuotaCounter:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._reserve = client.register_script(_RESERVE)
        self._release = client.register_script(_RELEASE)
        # Seeds being loaded by this process, per counter: concurrent requests that find the
        # counter missing share one query to the event store instead of each running it.
        self._seeding: dict[str, asyncio.Future[int]] = {}

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
        key = self._key(scope, month)
        used = await self._try_reserve(key, amount, limit)
        if used is None:
            seed = await self._load_seed_once(key, load_seed)
            with cache_unavailable_on_error():
                # NX: another request or process may have seeded (and counted) meanwhile.
                await self._client.set(key, seed, nx=True, ex=ttl_seconds)
            used = await self._try_reserve(key, amount, limit)
            if used is None:  # evicted again at once: the cache cannot keep the counter
                raise ServiceUnavailable("cache")
        return QuotaDecision(admitted=used < limit, used_before=used)

    async def release(self, scope: QuotaScope, month: str, amount: int) -> None:
        with cache_unavailable_on_error():
            await self._release(keys=[self._key(scope, month)], args=[amount])

    def _key(self, scope: QuotaScope, month: str) -> str:
        return f"{self._prefix}quota:{scope.key}:{month}"

    async def _try_reserve(self, key: str, amount: int, limit: int) -> int | None:
        with cache_unavailable_on_error():
            used = await self._reserve(keys=[key], args=[amount, limit])
        return None if used is None else int(used)

    async def _load_seed_once(self, key: str, load_seed: Callable[[], Awaitable[int]]) -> int:
        # Outside the Redis error translation: a failing event store is not a cache outage.
        loading = self._seeding.get(key)
        if loading is None:
            loading = asyncio.ensure_future(load_seed())
            self._seeding[key] = loading
            loading.add_done_callback(lambda _: self._seeding.pop(key, None))
        # Shielded: one waiter being cancelled must not cancel the load the others wait for.
        return await asyncio.shield(loading)
