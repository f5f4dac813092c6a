"""In-memory fakes of the sharing ports: share links and the badge switch (inside
`FakeTenancyUnitOfWork`, tests/fakes/storage.py) and the monthly distinct users of an app (over
`FakeDatabase.events`). They pass the contract tests of tests/integration/test_sharing_contract.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from tkcloud_domain.errors import Conflict
from tkcloud_domain.sharing import ShareLink, month_bounds
from tkcloud_domain.tenancy import App

if TYPE_CHECKING:  # storage.py imports this module to build its unit of work
    from tests.fakes.storage import FakeDatabase, Staged


class FakeShareLinkRepository:
    def __init__(self, links: Staged[str, ShareLink], apps: Staged[str, App]) -> None:
        self._links = links
        self._apps = apps

    async def add(self, link: ShareLink) -> None:
        if self._links.get(link.id) is not None or any(
            other.slug == link.slug for other in self._links.rows()
        ):
            raise Conflict(f"share link {link.id!r} or its slug exists")
        if self._apps.get(link.app_id) is None:
            # The SQL adapters fail on the foreign key: a use case must not add orphans.
            raise ValueError(f"app {link.app_id!r} does not exist")
        self._links.put(
            link.id,
            dataclasses.replace(
                link,
                created_at=_utc(link.created_at),
                expires_at=_utc_or_none(link.expires_at),
                revoked_at=_utc_or_none(link.revoked_at),
            ),
        )

    async def get(self, share_id: str) -> ShareLink | None:
        return self._links.get(share_id)

    async def by_slug(self, slug: str) -> ShareLink | None:
        return next((link for link in self._links.rows() if link.slug == slug), None)

    async def list_for_app(self, app_id: str) -> list[ShareLink]:
        found = [link for link in self._links.rows() if link.app_id == app_id]
        return sorted(found, key=lambda link: (link.created_at, link.id), reverse=True)

    async def revoke(self, share_id: str, at: datetime) -> None:
        link = self._links.get(share_id)
        if link is not None and link.revoked_at is None:
            self._links.put(share_id, dataclasses.replace(link, revoked_at=_utc(at)))


class FakeBadgeSettings:
    """The switch is a column of the app's row in SQL: no app, no switch."""

    def __init__(self, badges: Staged[str, bool], apps: Staged[str, App]) -> None:
        self._badges = badges
        self._apps = apps

    async def badges_enabled(self, app_id: str) -> bool:
        return self._apps.get(app_id) is not None and bool(self._badges.get(app_id))

    async def set_badges(self, app_id: str, enabled: bool) -> None:
        if self._apps.get(app_id) is not None:
            self._badges.put(app_id, enabled)


class FakeMonthlyUsers:
    """Implements `MonthlyUsers` over the committed events of a FakeDatabase."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db

    async def users_this_month(self, app_id: str, month: str) -> int:
        self.db.check_available()
        start, end = month_bounds(month)
        return len(
            {
                stored.event.user_id
                for (stored_app, _), stored in self.db.events.items()
                if stored_app == app_id and start <= stored.event.timestamp < end
            }
        )


def _utc(value: datetime) -> datetime:
    """As the SQL column gives it back: the same instant in UTC; a naive time is refused."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)
