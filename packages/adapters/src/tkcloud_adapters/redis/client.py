"""The Redis client the adapters share: tuned so an outage answers 503 within about a second."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# A request waits at most this long to connect, for a reply, or for a free pooled connection;
# past it the cache counts as down and the request gets a 503 instead of hanging.
TIMEOUT_SECONDS = 1.0
# Idle connections are PINGed before reuse, so one silently dropped by the network fails on
# the PING rather than half-way through a command.
HEALTH_CHECK_INTERVAL_SECONDS = 15
MAX_CONNECTIONS = 64


def create_redis(url: str) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        socket_timeout=TIMEOUT_SECONDS,
        health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
        # No automatic retry: the commands are not idempotent. A SET NX or INCRBY re-sent after
        # its first attempt landed would report a replay or count a batch twice. The pool already
        # replaces connections the server closed before handing them out.
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)
