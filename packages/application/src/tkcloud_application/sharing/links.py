"""Share links and badges: what a signed-in member manages, and what anyone with a slug or a
badge URL may see.

The public side answers every failure alike (NotFound): an unknown, revoked or expired slug, an
app of another org, an app without badges. Nothing tells a prober which of them it hit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.sharing import MonthlyUsers
from tkcloud_application.ports.system import Clock, IdGenerator
from tkcloud_application.ports.tenancy import TenancyUnitOfWork, UsageReport
from tkcloud_domain.errors import NotFound, ValidationFailed
from tkcloud_domain.identity import Action, Principal, UserPrincipal
from tkcloud_domain.months import month_key
from tkcloud_domain.sharing import (
    SHARE_LINK_PREFIX,
    BadgeMetric,
    ShareLink,
    badge_color,
    badge_message,
    is_valid_slug,
)
from tkcloud_domain.tenancy import App

_NO_LINK = "No such share link"


class Badge(NamedTuple):
    """What a badge says, as shields.io's endpoint JSON names it."""

    label: str
    message: str
    color: str


class Sharing:
    def __init__(
        self,
        *,
        uow: Callable[[], TenancyUnitOfWork],
        access: Access,
        ids: IdGenerator,
        clock: Clock,
        usage: UsageReport,
        users: MonthlyUsers,
    ) -> None:
        self._uow = uow
        self._access = access
        self._ids = ids
        self._clock = clock
        self._usage = usage
        self._users = users

    # --- share links (signed in) -------------------------------------------------------------
    # Making data public is an owner's or admin's decision (PRODUCT.md), so links and badges
    # need ORG_WRITE: members, observers and API keys cannot publish an app.

    async def create(
        self,
        principal: Principal,
        app_id: str,
        expires_at: datetime | None = None,
        include_events: bool = False,
    ) -> ShareLink:
        app = await self._access.require_app(principal, app_id, Action.ORG_WRITE)
        now = self._clock.now()
        if expires_at is not None and (expires_at.tzinfo is None or expires_at <= now):
            raise ValidationFailed(
                "expires_at: give a time in the future, with its UTC offset",
                details={"field": "expires_at"},
            )
        # The IdGenerator's secrets are 256 random bits, URL-safe: the slug is the link's only
        # protection, so it is checked rather than trusted.
        slug = self._ids.secret("")
        if not is_valid_slug(slug):
            raise RuntimeError("the id generator gave a share slug too short to be unguessable")
        link = ShareLink(
            id=self._ids.new_id(SHARE_LINK_PREFIX),
            org_id=app.org_id,
            app_id=app.id,
            slug=slug,
            created_by=principal.user.id if isinstance(principal, UserPrincipal) else None,
            created_at=now,
            expires_at=expires_at,
            include_events=include_events,
        )
        async with self._uow() as uow:
            await uow.share_links.add(link)
            await uow.commit()
        return link

    async def list(self, principal: Principal, app_id: str) -> list[ShareLink]:
        """Newest first, live or not. Needs the right to create them: the slugs are what grants
        public access, so readers of the app (observers) do not get them."""
        await self._access.require_app(principal, app_id, Action.ORG_WRITE)
        async with self._uow() as uow:
            return await uow.share_links.list_for_app(app_id)

    async def revoke(self, principal: Principal, app_id: str, share_id: str) -> ShareLink:
        await self._access.require_app(principal, app_id, Action.ORG_WRITE)
        async with self._uow() as uow:
            link = await uow.share_links.get(share_id)
            if link is None or link.app_id != app_id:
                raise NotFound(f"No share link {share_id}")
            await uow.share_links.revoke(share_id, self._clock.now())
            revoked = await uow.share_links.get(share_id)
            await uow.commit()
        assert revoked is not None
        return revoked

    # --- share links (public) ----------------------------------------------------------------

    async def resolve(self, slug: str) -> tuple[ShareLink, App]:
        """The live link with that slug and its app; NotFound when unknown, revoked or expired."""
        if not is_valid_slug(slug):
            raise NotFound(_NO_LINK)
        async with self._uow() as uow:
            link = await uow.share_links.by_slug(slug)
            if link is None or not link.is_live(self._clock.now()):
                raise NotFound(_NO_LINK)
            app = await uow.apps.get(link.app_id)
        if app is None or app.org_id != link.org_id:
            raise NotFound(_NO_LINK)
        return link, app

    # --- badges --------------------------------------------------------------------------------

    async def badges_enabled(self, principal: Principal, app_id: str) -> bool:
        await self._access.require_app(principal, app_id, Action.APPS_READ)
        async with self._uow() as uow:
            return await uow.badges.badges_enabled(app_id)

    async def set_badges(self, principal: Principal, app_id: str, enabled: bool) -> None:
        await self._access.require_app(principal, app_id, Action.ORG_WRITE)
        async with self._uow() as uow:
            await uow.badges.set_badges(app_id, enabled)
            await uow.commit()

    async def badge(self, org_id: str, app_id: str, metric: BadgeMetric) -> Badge:
        """This month's count for a public badge; NotFound when the app does not exist, is not
        in that org, or its owner has not enabled badges."""
        async with self._uow() as uow:
            app = await uow.apps.get(app_id)
            enabled = app is not None and await uow.badges.badges_enabled(app_id)
        if app is None or app.org_id != org_id or not enabled:
            raise NotFound(f"No badge for app {app_id}")
        month = month_key(self._clock.now())
        if metric is BadgeMetric.EVENTS_PER_MONTH:
            # Counted in the app's current environment: a promotion starts the count afresh, as
            # it deletes the staging events.
            rows = await self._usage.monthly_usage(month, org_id)
            count = sum(
                r.events for r in rows if r.app_id == app_id and r.environment is app.environment
            )
        else:
            count = await self._users.users_this_month(app_id, month)
        return Badge(metric.label, badge_message(count), badge_color(count))
