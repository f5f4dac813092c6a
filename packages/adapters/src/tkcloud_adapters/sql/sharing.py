"""Public sharing on SQL: share links and the badge switch (inside a `SqlTenancyUnitOfWork`, its
connection and its transaction), and the distinct users of an app in a month (read from the
events, on their own connection)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, distinct, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.identity import SqlRepository
from tkcloud_adapters.sql.schema import apps, events, share_links
from tkcloud_domain.sharing import ShareLink, month_bounds


class SqlShareLinkRepository(SqlRepository):
    """Implements `ShareLinkRepository`."""

    async def add(self, link: ShareLink) -> None:
        statement = insert(share_links).values(
            id=link.id,
            org_id=link.org_id,
            app_id=link.app_id,
            slug=link.slug,
            created_by=link.created_by,
            created_at=link.created_at,
            expires_at=link.expires_at,
            revoked_at=link.revoked_at,
            include_events=link.include_events,
        )
        await self._execute(statement, conflict=f"share link {link.id!r} or its slug exists")

    async def get(self, share_id: str) -> ShareLink | None:
        rows = await self._rows(select(share_links).where(share_links.c.id == share_id))
        return _share_link(rows[0]) if rows else None

    async def by_slug(self, slug: str) -> ShareLink | None:
        rows = await self._rows(select(share_links).where(share_links.c.slug == slug))
        return _share_link(rows[0]) if rows else None

    async def list_for_app(self, app_id: str) -> list[ShareLink]:
        s = share_links.c
        query = (
            select(share_links).where(s.app_id == app_id).order_by(s.created_at.desc(), s.id.desc())
        )
        return [_share_link(row) for row in await self._rows(query)]

    async def revoke(self, share_id: str, at: datetime) -> None:
        s = share_links.c
        # A link revoked twice keeps the time it first stopped working.
        statement = (
            update(share_links)
            .where(s.id == share_id, s.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        await self._execute(statement)


class SqlBadgeSettings(SqlRepository):
    """Implements `BadgeSettings`: a column of `apps`, kept out of the App entity that the
    ingestion path and the dashboard carry around."""

    async def badges_enabled(self, app_id: str) -> bool:
        rows = await self._rows(select(apps.c.badges_enabled).where(apps.c.id == app_id))
        return bool(rows and rows[0].badges_enabled)

    async def set_badges(self, app_id: str, enabled: bool) -> None:
        await self._execute(update(apps).where(apps.c.id == app_id).values(badges_enabled=enabled))


class SqlMonthlyUsers:
    """Implements `MonthlyUsers`: COUNT(DISTINCT user_id) over the app's events of the month,
    a range scan of the (app_id, timestamp) index."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def users_this_month(self, app_id: str, month: str) -> int:
        start, end = month_bounds(month)
        e = events.c
        query = select(func.count(distinct(e.user_id))).where(
            e.app_id == app_id, e.timestamp >= start, e.timestamp < end
        )
        with database_errors():
            async with self._engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())


def _share_link(row: Row[Any]) -> ShareLink:
    return ShareLink(
        id=row.id,
        org_id=row.org_id,
        app_id=row.app_id,
        slug=row.slug,
        created_by=row.created_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        include_events=row.include_events,
    )
