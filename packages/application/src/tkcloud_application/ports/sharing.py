"""Ports for public sharing and badges: share links and the badge switch (repositories inside
the tenancy unit of work), and this month's distinct users of an app (a reader of events)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from tkcloud_domain.sharing import ShareLink


class ShareLinkRepository(Protocol):
    async def add(self, link: ShareLink) -> None:
        """Raises Conflict if the id or the slug is taken."""
        ...

    async def get(self, share_id: str) -> ShareLink | None: ...

    async def by_slug(self, slug: str) -> ShareLink | None:
        """The link with that slug, live or not."""
        ...

    async def list_for_app(self, app_id: str) -> list[ShareLink]:
        """Every link of the app, newest first, live or not."""
        ...

    async def revoke(self, share_id: str, at: datetime) -> None:
        """A link revoked twice keeps the time it first stopped working."""
        ...


class BadgeSettings(Protocol):
    async def badges_enabled(self, app_id: str) -> bool:
        """False for an app that does not exist."""
        ...

    async def set_badges(self, app_id: str, enabled: bool) -> None:
        """Changes nothing for an app that does not exist."""
        ...


class MonthlyUsers(Protocol):
    async def users_this_month(self, app_id: str, month: str) -> int:
        """How many distinct user ids sent the app's stored events whose timestamp falls in the
        month (`YYYY-MM`, UTC)."""
        ...
