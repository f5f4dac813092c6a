"""Apps, their credentials and usage, as the dashboard API serves them."""

from __future__ import annotations

from dataclasses import dataclass

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.ingestion import EventStore
from tkcloud_application.ports.system import Clock
from tkcloud_application.ports.tenancy import AppUsage
from tkcloud_application.tenancy.operations import CreatedApp, TenancyOperations
from tkcloud_domain.errors import Conflict, ValidationFailed
from tkcloud_domain.identity import Action, Principal
from tkcloud_domain.limits import QuotaScope
from tkcloud_domain.months import month_key
from tkcloud_domain.plans import STAGING_EVENTS_PER_MONTH
from tkcloud_domain.tenancy import App, Credential, Environment, IssuedCredential


@dataclass(frozen=True, slots=True)
class Allowance:
    month: str
    events_this_month: int
    events_limit: int | None  # None: unlimited
    # What the limit is counted on: for a production app, every production app of its org.
    counted: int | None = None

    @property
    def events_remaining(self) -> int | None:
        if self.events_limit is None:
            return None
        used = self.events_this_month if self.counted is None else self.counted
        return max(0, self.events_limit - used)


@dataclass(frozen=True, slots=True)
class OrgUsage:
    allowance: Allowance  # production apps against the org's plan
    apps: list[AppUsage]


class AppManagement:
    def __init__(
        self, *, access: Access, tenancy: TenancyOperations, events: EventStore, clock: Clock
    ) -> None:
        self._access = access
        self._tenancy = tenancy
        self._events = events
        self._clock = clock

    async def for_org(self, principal: Principal, org_id: str) -> list[App]:
        await self._access.require(principal, org_id, Action.APPS_READ)
        return await self._tenancy.list_apps(org_id)

    async def create(self, principal: Principal, org_id: str, name: str) -> CreatedApp:
        await self._access.require(principal, org_id, Action.APPS_WRITE)
        return await self._tenancy.create_app(org_id, name, Environment.STAGING)

    async def get(self, principal: Principal, app_id: str) -> App:
        return await self._access.require_app(principal, app_id, Action.APPS_READ)

    async def rename(self, principal: Principal, app_id: str, name: str) -> App:
        await self._access.require_app(principal, app_id, Action.APPS_WRITE)
        return await self._tenancy.rename_app(app_id, name)

    async def promote(self, principal: Principal, app_id: str, confirm: str) -> tuple[App, int]:
        """Irreversible: the caller confirms by repeating the app's name."""
        app = await self._access.require_app(principal, app_id, Action.APPS_WRITE)
        if app.environment is Environment.PRODUCTION:
            raise Conflict("This app is already in production")
        if confirm != app.name:
            raise ValidationFailed(
                "confirm: repeat the app's name to delete its staging events and promote it",
                details={"field": "confirm"},
            )
        return await self._tenancy.promote_app(app_id)

    async def delete(self, principal: Principal, app_id: str, confirm: str) -> None:
        app = await self._access.require_app(principal, app_id, Action.APPS_WRITE)
        if confirm != app.name:
            raise ValidationFailed(
                "confirm: repeat the app's name to delete it and all its events",
                details={"field": "confirm"},
            )
        await self._tenancy.delete_app(app_id)

    async def credentials(self, principal: Principal, app_id: str) -> list[Credential]:
        await self._access.require_app(principal, app_id, Action.APPS_WRITE)
        return await self._tenancy.list_credentials(app_id)

    async def rotate(self, principal: Principal, app_id: str) -> IssuedCredential:
        await self._access.require_app(principal, app_id, Action.APPS_WRITE)
        return await self._tenancy.rotate_credentials(app_id)

    async def revoke(self, principal: Principal, app_id: str) -> int:
        await self._access.require_app(principal, app_id, Action.APPS_WRITE)
        return await self._tenancy.revoke_credentials(app_id)

    # --- usage ----------------------------------------------------------------------------------

    async def org_usage(self, principal: Principal, org_id: str) -> OrgUsage:
        await self._access.require(principal, org_id, Action.USAGE_READ)
        org = await self._tenancy.get_org(org_id)
        month = month_key(self._clock.now())
        used = await self._events.events_this_month(QuotaScope("org", org_id), month)
        apps = await self._tenancy.usage(org_id, month)
        return OrgUsage(Allowance(month, used, org.limits.events_per_month), apps)

    async def app_usage(self, principal: Principal, app_id: str) -> Allowance:
        """This month's events of one app against what limits it: the org's plan for a
        production app (shared with its other production apps), 1,000 for a staging app."""
        app = await self._access.require_app(principal, app_id, Action.USAGE_READ)
        if app.environment is Environment.STAGING:
            return await self.staging_usage(principal, app_id)
        month = month_key(self._clock.now())
        rows = await self._tenancy.usage(app.org_id, month)
        production = [r for r in rows if r.environment is Environment.PRODUCTION]
        used = sum(r.events for r in production if r.app_id == app_id)
        org = await self._tenancy.get_org(app.org_id)
        org_used = sum(r.events for r in production)
        return Allowance(month, used, org.limits.events_per_month, counted=org_used)

    async def staging_usage(self, principal: Principal, app_id: str) -> Allowance:
        app = await self._access.require_app(principal, app_id, Action.USAGE_READ)
        if app.environment is not Environment.STAGING:
            raise Conflict("This app is in production: its events count against the org's quota")
        month = month_key(self._clock.now())
        used = await self._events.events_this_month(QuotaScope("app", app_id), month)
        return Allowance(month, used, STAGING_EVENTS_PER_MONTH)
