"""Health probes: one cheap round trip to each dependency, bounded in time."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_domain.errors import ServiceUnavailable

PROBE_TIMEOUT_SECONDS = 2.0


class SqlHealthProbe:
    name = "database"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def check(self) -> None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS), self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure to answer means unhealthy, whatever the driver
            raise ServiceUnavailable(self.name) from exc


class RedisHealthProbe:
    name = "cache"

    def __init__(self, client: redis_asyncio.Redis) -> None:
        self._client = client

    async def check(self) -> None:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                await self._client.ping()
        except Exception as exc:
            raise ServiceUnavailable(self.name) from exc


class InProcessHealthProbe:
    """The in-process cache lives in this process: if we can answer, it is there."""

    name = "cache"

    async def check(self) -> None:
        return None
