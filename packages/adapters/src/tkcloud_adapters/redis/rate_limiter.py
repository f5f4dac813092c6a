"""An exact sliding-window rate limit shared by all processes: one Lua script per request.

Each key is a sorted set of the admitted requests' timestamps (microseconds since the epoch). The
caller's `now` is used rather than Redis TIME, so the window follows the service's clock port.
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from tkcloud_adapters.redis.errors import cache_unavailable_on_error
from tkcloud_domain.limits import RateDecision, RateLimitState

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# KEYS[1] the window; ARGV: now (µs), cutoff (µs: entries at or before it have left the window),
# window (ms, the key's expiry), limit, a unique member for this request, and whether to record
# it ('1') or only look ('0'). Timestamps arrive as
# strings computed in Python so no large number goes through Lua arithmetic.
# Returns {allowed, count, blocker}: count is the requests in the window, this one included if
# allowed; blocker is the timestamp of the entry whose leaving lets the next request in (false
# when one is allowed now, or when none ever will be: limit 0).
_HIT = """
local limit = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  allowed = 1
  if ARGV[6] == '1' then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    count = count + 1
  end
end
local blocker = false
if count >= limit then
  local entry = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  if entry[2] then blocker = tonumber(entry[2]) end
end
return {allowed, count, blocker}
"""


class RedisRateLimiter:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._prefix = prefix
        self._hit = client.register_script(_HIT)

    async def hit(self, key: str, limit: int, window_seconds: int, now: datetime) -> RateDecision:
        return await self._decide(key, limit, window_seconds, now, record=True)

    async def peek(
        self, key: str, limit: int, window_seconds: int, now: datetime
    ) -> RateLimitState:
        return (await self._decide(key, limit, window_seconds, now, record=False)).state

    async def _decide(
        self, key: str, limit: int, window_seconds: int, now: datetime, *, record: bool
    ) -> RateDecision:
        now_us = (now - _EPOCH) // _MICROSECOND
        window_us = window_seconds * 1_000_000
        # Unique even when two processes record a request in the same microsecond.
        member = f"{now_us}:{secrets.token_hex(6)}"
        with cache_unavailable_on_error():
            allowed, count, blocker = await self._hit(
                keys=[f"{self._prefix}rate:{key}"],
                args=[
                    now_us,
                    now_us - window_us,
                    window_seconds * 1000,
                    limit,
                    member,
                    "1" if record else "0",
                ],
            )
        if blocker is None:
            reset = 0 if count < limit else window_seconds
        else:
            reset = max(1, math.ceil((blocker + window_us - now_us) / 1_000_000))
        return RateDecision(
            allowed=bool(allowed),
            state=RateLimitState(limit=limit, remaining=max(0, limit - count), reset_seconds=reset),
        )
