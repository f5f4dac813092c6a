"""An in-process cache in front of the ingest directory: the hot path must not hit the database
for every request to learn an app's secrets and plan.

Entries live `ttl` seconds, so a change made by another process (a revoked credential, a new
plan) is seen within that time; changes made through this process invalidate at once.
Unknown apps are cached too (briefly), so a flood of requests for a bogus id stays cheap.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from tkcloud_application.ports.ingestion import IngestDirectory
from tkcloud_application.ports.system import Clock
from tkcloud_domain.tenancy import IngestApp

_MAX_ENTRIES = 100_000


class CachedIngestDirectory:
    def __init__(self, inner: IngestDirectory, clock: Clock, ttl_seconds: float) -> None:
        self._inner = inner
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_seconds)
        self._entries: dict[tuple[str, str], tuple[datetime, IngestApp | None]] = {}
        # Bumped by every invalidation: a lookup that started before one must not cache its
        # (possibly stale) answer.
        self._generation = 0

    async def find_ingest_app(self, org_id: str, app_id: str) -> IngestApp | None:
        key = (org_id, app_id)
        now = self._clock.now()
        hit = self._entries.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        app = await self._inner.find_ingest_app(org_id, app_id)
        if generation != self._generation:
            return app
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (now + self._ttl, app)
        return app

    def invalidate(self, org_id: str | None = None, app_id: str | None = None) -> None:
        """Forget one app, every app of an org, or (no arguments) everything."""
        self._generation += 1
        if org_id is None and app_id is None:
            self._entries.clear()
            return
        for key in [
            k for k in self._entries if (org_id in (None, k[0])) and (app_id in (None, k[1]))
        ]:
            del self._entries[key]
