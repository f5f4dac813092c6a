"""Ports for orgs, apps and credentials: repositories inside one unit of work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from types import TracebackType
from typing import Protocol, Self

from tkcloud_application.ports.billing import BillingRepository
from tkcloud_application.ports.identity import (
    ApiKeyRepository,
    InviteRepository,
    MagicLinkRepository,
    MembershipRepository,
    OAuthStateRepository,
    SessionRepository,
    UserRepository,
)
from tkcloud_application.ports.sharing import BadgeSettings, ShareLinkRepository
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Credential, Environment, Org


class OrgRepository(Protocol):
    async def add(self, org: Org) -> None:
        """Raises Conflict if the id or slug is taken."""
        ...

    async def get(self, org_id: str) -> Org | None: ...

    async def list_all(self) -> list[Org]: ...

    async def rename(self, org_id: str, name: str) -> None: ...

    async def set_plan(
        self,
        org_id: str,
        plan: Plan,
        custom_events_per_month: int | None,
        custom_retention_days: int | None,
    ) -> None: ...


class AppRepository(Protocol):
    async def add(self, app: App) -> None:
        """Raises Conflict if the id is taken."""
        ...

    async def get(self, app_id: str) -> App | None: ...

    async def list_for_org(self, org_id: str) -> list[App]: ...

    async def set_environment(self, app_id: str, environment: Environment) -> None: ...

    async def rename(self, app_id: str, name: str) -> None: ...

    async def delete(self, app_id: str) -> None:
        """Delete the app with its credentials, events and usage."""
        ...

    async def delete_events(self, app_id: str) -> int:
        """Delete every stored event of the app (a promotion drops staging data); returns how
        many."""
        ...


class CredentialRepository(Protocol):
    async def add(self, credential: Credential, secret_ciphertext: str) -> None: ...

    async def list_for_app(self, app_id: str) -> list[Credential]:
        """Every credential of the app, newest first, live or not."""
        ...

    async def expire(self, credential_id: str, at: datetime) -> None:
        """Retire a credential at `at` (a rotation's grace period end)."""
        ...

    async def revoke(self, credential_id: str, at: datetime) -> None: ...


class TenancyUnitOfWork(Protocol):
    """One transaction: `async with uow: ...; await uow.commit()`; leaving without commit rolls
    back."""

    orgs: OrgRepository
    apps: AppRepository
    credentials: CredentialRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    # People and programs share the transaction: signing in creates a user, a membership and a
    # session at once.
    users: UserRepository
    memberships: MembershipRepository
    sessions: SessionRepository
    magic_links: MagicLinkRepository
    invites: InviteRepository
    api_keys: ApiKeyRepository
    oauth_states: OAuthStateRepository
    billing: BillingRepository
    # Public sharing: share links and each app's badge switch.
    share_links: ShareLinkRepository
    badges: BadgeSettings


@dataclass(frozen=True, slots=True)
class AppUsage:
    org_id: str
    app_id: str
    environment: Environment
    month: str  # YYYY-MM
    events: int


class UsageReport(Protocol):
    async def monthly_usage(self, month: str, org_id: str | None = None) -> list[AppUsage]:
        """Accepted events in that month, one entry per app and environment with events (an
        app promoted mid-month has two); an app with none has one entry, in its current
        environment, with 0. Every app of the org, or of every org."""
        ...

    async def dnt_requests(self, app_id: str, since: date | None = None) -> int:
        """How many `DNT: 1` requests the app received (since that day, UTC, if given)."""
        ...
