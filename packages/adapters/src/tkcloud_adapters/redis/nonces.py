"""Replay protection across processes: one SET NX EX per nonce (check 6 of PROTOCOL.md)."""

from __future__ import annotations

from redis.asyncio import Redis

from tkcloud_adapters.redis.errors import cache_unavailable_on_error


class RedisNonceStore:
    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def claim(self, app_id: str, nonce: str, ttl_seconds: int) -> bool:
        key = f"{self._prefix}nonce:{app_id}:{nonce}"
        with cache_unavailable_on_error():
            created = await self._client.set(key, b"1", nx=True, ex=ttl_seconds)
        return bool(created)
