"""Orgs, apps and credentials on SQL, and the unit of work (one connection, one transaction)
that holds every tenancy, identity and billing repository."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tkcloud_adapters.sql.billing import SqlBillingRepository
from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.identity import (
    SqlApiKeyRepository,
    SqlInviteRepository,
    SqlMagicLinkRepository,
    SqlMembershipRepository,
    SqlOAuthStateRepository,
    SqlRepository,
    SqlSessionRepository,
    SqlUserRepository,
)
from tkcloud_adapters.sql.rollups import forget_rollups
from tkcloud_adapters.sql.schema import (
    app_credentials,
    apps,
    dnt_daily,
    event_keys,
    events,
    orgs,
    share_links,
)
from tkcloud_adapters.sql.sharing import SqlBadgeSettings, SqlShareLinkRepository
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
from tkcloud_application.ports.tenancy import (
    AppRepository,
    CredentialRepository,
    OrgRepository,
)
from tkcloud_domain.errors import ServiceUnavailable
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Credential, Environment, Org


class SqlTenancyUnitOfWork:
    """Implements `TenancyUnitOfWork`. Each `async with` opens a connection and a transaction;
    leaving without `commit()` rolls back. One unit of work at a time per instance."""

    orgs: OrgRepository
    apps: AppRepository
    credentials: CredentialRepository
    users: UserRepository
    memberships: MembershipRepository
    sessions: SessionRepository
    magic_links: MagicLinkRepository
    invites: InviteRepository
    api_keys: ApiKeyRepository
    oauth_states: OAuthStateRepository
    billing: BillingRepository
    share_links: ShareLinkRepository
    badges: BadgeSettings

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> Self:
        if self._conn is not None:
            raise RuntimeError("this unit of work is already in use")
        with database_errors():
            conn = await self._engine.connect()
            try:
                await conn.begin()
            except BaseException:
                await conn.close()
                raise
        self._conn = conn
        self.orgs = SqlOrgRepository(conn)
        self.apps = SqlAppRepository(conn)
        self.credentials = SqlCredentialRepository(conn)
        self.users = SqlUserRepository(conn)
        self.memberships = SqlMembershipRepository(conn)
        self.sessions = SqlSessionRepository(conn)
        self.magic_links = SqlMagicLinkRepository(conn)
        self.invites = SqlInviteRepository(conn)
        self.api_keys = SqlApiKeyRepository(conn)
        self.oauth_states = SqlOAuthStateRepository(conn)
        self.billing = SqlBillingRepository(conn)
        self.share_links = SqlShareLinkRepository(conn)
        self.badges = SqlBadgeSettings(conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        assert conn is not None
        try:
            with database_errors():
                await conn.close()  # rolls back whatever was not committed
        except ServiceUnavailable:
            if exc is None:
                raise
            # The error already on its way out says more than the failed rollback.

    async def commit(self) -> None:
        if self._conn is None:
            raise RuntimeError("commit() outside `async with`")
        with database_errors():
            await self._conn.commit()


class SqlOrgRepository(SqlRepository):
    """Implements `OrgRepository`."""

    async def add(self, org: Org) -> None:
        statement = insert(orgs).values(
            id=org.id,
            name=org.name,
            slug=org.slug,
            plan=org.plan.value,
            region=org.region,
            custom_events_per_month=org.custom_events_per_month,
            custom_retention_days=org.custom_retention_days,
            created_at=org.created_at,
        )
        await self._execute(statement, conflict=f"org id {org.id!r} or slug {org.slug!r} is taken")

    async def get(self, org_id: str) -> Org | None:
        rows = await self._rows(select(orgs).where(orgs.c.id == org_id))
        return _org(rows[0]) if rows else None

    async def list_all(self) -> list[Org]:
        rows = await self._rows(select(orgs).order_by(orgs.c.created_at, orgs.c.id))
        return [_org(row) for row in rows]

    async def rename(self, org_id: str, name: str) -> None:
        await self._execute(update(orgs).where(orgs.c.id == org_id).values(name=name))

    async def set_plan(
        self,
        org_id: str,
        plan: Plan,
        custom_events_per_month: int | None,
        custom_retention_days: int | None,
    ) -> None:
        statement = (
            update(orgs)
            .where(orgs.c.id == org_id)
            .values(
                plan=plan.value,
                custom_events_per_month=custom_events_per_month,
                custom_retention_days=custom_retention_days,
            )
        )
        await self._execute(statement)


class SqlAppRepository(SqlRepository):
    """Implements `AppRepository`."""

    async def add(self, app: App) -> None:
        statement = insert(apps).values(
            id=app.id,
            org_id=app.org_id,
            name=app.name,
            environment=app.environment.value,
            active=app.active,
            created_at=app.created_at,
        )
        await self._execute(statement, conflict=f"app id {app.id!r} is taken")

    async def get(self, app_id: str) -> App | None:
        rows = await self._rows(select(apps).where(apps.c.id == app_id))
        return _app(rows[0]) if rows else None

    async def list_for_org(self, org_id: str) -> list[App]:
        query = select(apps).where(apps.c.org_id == org_id).order_by(apps.c.created_at, apps.c.id)
        return [_app(row) for row in await self._rows(query)]

    async def set_environment(self, app_id: str, environment: Environment) -> None:
        statement = update(apps).where(apps.c.id == app_id).values(environment=environment.value)
        await self._execute(statement)

    async def rename(self, app_id: str, name: str) -> None:
        await self._execute(update(apps).where(apps.c.id == app_id).values(name=name))

    async def delete(self, app_id: str) -> None:
        # Children first: the credentials' foreign key refuses an app that still has them.
        # usage_monthly stays: the quota counts accepted events, and deleting an app must not
        # give its month's events back to the org.
        await self._rows(select(apps.c.id).where(apps.c.id == app_id).with_for_update())
        with database_errors():
            await forget_rollups(self._conn, app_id)
        for table in (app_credentials, share_links, events, event_keys, dnt_daily):
            await self._execute(delete(table).where(table.c.app_id == app_id))
        await self._execute(delete(apps).where(apps.c.id == app_id))

    async def delete_events(self, app_id: str) -> int:
        # Lock the app first: on Postgres batches being stored hold it FOR SHARE
        # (SqlEventStore.store), so they commit before this delete (and are deleted with the
        # rest) or wait and then see the app as it is after this transaction.
        await self._rows(select(apps.c.id).where(apps.c.id == app_id).with_for_update())
        # The keys go too: a staging event sent again after the promotion is a new production
        # event, not a duplicate of one that no longer exists. So do the rollups and queued
        # batches of those events.
        await self._execute(delete(event_keys).where(event_keys.c.app_id == app_id))
        with database_errors():
            await forget_rollups(self._conn, app_id)
        return await self._execute(delete(events).where(events.c.app_id == app_id))


class SqlCredentialRepository(SqlRepository):
    """Implements `CredentialRepository`."""

    async def add(self, credential: Credential, secret_ciphertext: str) -> None:
        statement = insert(app_credentials).values(
            id=credential.id,
            app_id=credential.app_id,
            token_hash=credential.token_hash,
            secret_ciphertext=secret_ciphertext,
            created_at=credential.created_at,
            expires_at=credential.expires_at,
            revoked_at=credential.revoked_at,
        )
        await self._execute(statement, conflict=f"credential {credential.id!r} or its token exists")

    async def list_for_app(self, app_id: str) -> list[Credential]:
        c = app_credentials.c
        query = (
            select(c.id, c.app_id, c.token_hash, c.created_at, c.expires_at, c.revoked_at)
            .where(c.app_id == app_id)
            .order_by(c.created_at.desc(), c.id.desc())
        )
        return [
            Credential(
                id=row.id,
                app_id=row.app_id,
                token_hash=row.token_hash,
                created_at=row.created_at,
                expires_at=row.expires_at,
                revoked_at=row.revoked_at,
            )
            for row in await self._rows(query)
        ]

    async def expire(self, credential_id: str, at: datetime) -> None:
        c = app_credentials.c
        await self._execute(
            update(app_credentials).where(c.id == credential_id).values(expires_at=at)
        )

    async def revoke(self, credential_id: str, at: datetime) -> None:
        c = app_credentials.c
        await self._execute(
            update(app_credentials).where(c.id == credential_id).values(revoked_at=at)
        )


def _org(row: Row[Any]) -> Org:
    return Org(
        id=row.id,
        name=row.name,
        slug=row.slug,
        plan=Plan(row.plan),
        region=row.region,
        created_at=row.created_at,
        custom_events_per_month=row.custom_events_per_month,
        custom_retention_days=row.custom_retention_days,
    )


def _app(row: Row[Any]) -> App:
    return App(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        environment=Environment(row.environment),
        active=row.active,
        created_at=row.created_at,
    )
