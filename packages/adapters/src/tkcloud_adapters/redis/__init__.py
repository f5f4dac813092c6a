"""Redis implementations of the hot-path cache ports, shared by every server process."""

from tkcloud_adapters.redis.client import create_redis
from tkcloud_adapters.redis.nonces import RedisNonceStore
from tkcloud_adapters.redis.quota import RedisQuotaCounter
from tkcloud_adapters.redis.rate_limiter import RedisRateLimiter

__all__ = ["RedisNonceStore", "RedisQuotaCounter", "RedisRateLimiter", "create_redis"]
