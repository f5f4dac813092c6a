"""People and programs on SQL: users, memberships, sessions, sign-in links, invites, API keys and
OAuth states. The repositories work inside a `SqlTenancyUnitOfWork` (its connection and its
transaction).

The single-use operations (consume a magic link or an OAuth state, close an invite) are one
conditional statement each: the lock the first writer takes (a row lock on Postgres, the
database write lock on SQLite) makes a concurrent second one wait until the first transaction
ends, then re-check the condition against what it committed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Executable, Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.schema import (
    api_keys,
    invites,
    magic_links,
    memberships,
    oauth_states,
    sessions,
    users,
)
from tkcloud_domain.identity import (
    ApiKey,
    ApiKeyScope,
    Invite,
    MagicLink,
    Membership,
    OAuthState,
    Role,
    Session,
    User,
)

_SCOPE_SEPARATOR = ","
_INVITE_OUTCOME_COLUMNS = {
    "accepted": "accepted_at",
    "declined": "declined_at",
    "revoked": "revoked_at",
}


class SqlRepository:
    """Base of the repositories of a unit of work: statements on its connection, in its
    transaction, with driver errors translated."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _execute(self, statement: Executable, conflict: str | None = None) -> int:
        """Run a statement; returns how many rows it changed."""
        if conflict is None:
            with database_errors():
                return (await self._conn.execute(statement)).rowcount
        # A savepoint keeps the transaction usable after the Conflict (Postgres would otherwise
        # refuse every further statement in it).
        with database_errors(conflict):
            async with self._conn.begin_nested():
                return (await self._conn.execute(statement)).rowcount

    async def _rows(self, statement: Executable) -> list[Row[Any]]:
        with database_errors():
            return list((await self._conn.execute(statement)).all())


class SqlUserRepository(SqlRepository):
    """Implements `UserRepository`."""

    async def add(self, user: User) -> None:
        statement = insert(users).values(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            github_id=user.github_id,
            github_login=user.github_login,
            created_at=user.created_at,
        )
        await self._execute(
            statement, conflict=f"user id {user.id!r}, its email or its GitHub account is taken"
        )

    async def get(self, user_id: str) -> User | None:
        return await self._one(users.c.id == user_id)

    async def by_email(self, email: str) -> User | None:
        return await self._one(users.c.email == email)

    async def by_github_id(self, github_id: int) -> User | None:
        return await self._one(users.c.github_id == github_id)

    async def link_github(self, user_id: str, github_id: int, login: str) -> None:
        statement = (
            update(users)
            .where(users.c.id == user_id)
            .values(github_id=github_id, github_login=login)
        )
        await self._execute(
            statement, conflict=f"GitHub account {github_id} is linked to another user"
        )

    async def _one(self, condition: Any) -> User | None:
        rows = await self._rows(select(users).where(condition))
        return _user(rows[0]) if rows else None


class SqlMembershipRepository(SqlRepository):
    """Implements `MembershipRepository`."""

    async def add(self, membership: Membership) -> None:
        statement = insert(memberships).values(
            org_id=membership.org_id,
            user_id=membership.user_id,
            role=membership.role.value,
            created_at=membership.created_at,
        )
        await self._execute(
            statement,
            conflict=f"user {membership.user_id!r} is already a member of {membership.org_id!r}",
        )

    async def get(self, org_id: str, user_id: str) -> Membership | None:
        m = memberships.c
        rows = await self._rows(select(memberships).where(m.org_id == org_id, m.user_id == user_id))
        return _membership(rows[0]) if rows else None

    async def list_for_org(self, org_id: str) -> list[Membership]:
        m = memberships.c
        query = select(memberships).where(m.org_id == org_id).order_by(m.created_at, m.user_id)
        return [_membership(row) for row in await self._rows(query)]

    async def list_for_user(self, user_id: str) -> list[Membership]:
        m = memberships.c
        query = select(memberships).where(m.user_id == user_id).order_by(m.created_at, m.org_id)
        return [_membership(row) for row in await self._rows(query)]

    async def set_role(self, org_id: str, user_id: str, role: Role) -> None:
        m = memberships.c
        statement = (
            update(memberships)
            .where(m.org_id == org_id, m.user_id == user_id)
            .values(role=role.value)
        )
        await self._execute(statement)

    async def remove(self, org_id: str, user_id: str) -> None:
        m = memberships.c
        await self._execute(delete(memberships).where(m.org_id == org_id, m.user_id == user_id))


class SqlSessionRepository(SqlRepository):
    """Implements `SessionRepository`."""

    async def add(self, session: Session) -> None:
        statement = insert(sessions).values(
            id=session.id,
            user_id=session.user_id,
            token_hash=session.token_hash,
            csrf_hash=session.csrf_hash,
            created_at=session.created_at,
            expires_at=session.expires_at,
            revoked_at=session.revoked_at,
        )
        await self._execute(statement)

    async def by_token_hash(self, token_hash: str) -> Session | None:
        rows = await self._rows(select(sessions).where(sessions.c.token_hash == token_hash))
        return _session(rows[0]) if rows else None

    async def revoke(self, session_id: str, at: datetime) -> None:
        s = sessions.c
        # A session revoked twice keeps the time it first ended.
        statement = (
            update(sessions).where(s.id == session_id, s.revoked_at.is_(None)).values(revoked_at=at)
        )
        await self._execute(statement)

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        s = sessions.c
        statement = (
            update(sessions)
            .where(s.user_id == user_id, s.revoked_at.is_(None), s.expires_at > at)
            .values(revoked_at=at)
        )
        return await self._execute(statement)


class SqlMagicLinkRepository(SqlRepository):
    """Implements `MagicLinkRepository`."""

    async def add(self, link: MagicLink) -> None:
        statement = insert(magic_links).values(
            id=link.id,
            email=link.email,
            token_hash=link.token_hash,
            created_at=link.created_at,
            expires_at=link.expires_at,
            used_at=link.used_at,
        )
        await self._execute(statement)

    async def consume(self, token_hash: str, at: datetime) -> MagicLink | None:
        c = magic_links.c
        statement = (
            update(magic_links)
            .where(c.token_hash == token_hash, c.used_at.is_(None), c.expires_at > at)
            .values(used_at=at)
            .returning(*magic_links.c)
        )
        rows = await self._rows(statement)
        return _magic_link(rows[0]) if rows else None


class SqlInviteRepository(SqlRepository):
    """Implements `InviteRepository`."""

    async def add(self, invite: Invite) -> None:
        statement = insert(invites).values(
            id=invite.id,
            org_id=invite.org_id,
            email=invite.email,
            role=invite.role.value,
            token_hash=invite.token_hash,
            invited_by=invite.invited_by,
            created_at=invite.created_at,
            expires_at=invite.expires_at,
            accepted_at=invite.accepted_at,
            declined_at=invite.declined_at,
            revoked_at=invite.revoked_at,
        )
        await self._execute(statement)

    async def get(self, invite_id: str) -> Invite | None:
        rows = await self._rows(select(invites).where(invites.c.id == invite_id))
        return _invite(rows[0]) if rows else None

    async def by_token_hash(self, token_hash: str) -> Invite | None:
        rows = await self._rows(select(invites).where(invites.c.token_hash == token_hash))
        return _invite(rows[0]) if rows else None

    async def list_for_org(self, org_id: str) -> list[Invite]:
        i = invites.c
        query = select(invites).where(i.org_id == org_id).order_by(i.created_at.desc(), i.id.desc())
        return [_invite(row) for row in await self._rows(query)]

    async def close(self, invite_id: str, outcome: str, at: datetime) -> bool:
        column = _INVITE_OUTCOME_COLUMNS.get(outcome)
        if column is None:
            raise ValueError(f"unknown invite outcome {outcome!r}")
        i = invites.c
        statement = (
            update(invites)
            .where(
                i.id == invite_id,
                i.accepted_at.is_(None),
                i.declined_at.is_(None),
                i.revoked_at.is_(None),
            )
            .values({column: at})
        )
        return await self._execute(statement) == 1


class SqlApiKeyRepository(SqlRepository):
    """Implements `ApiKeyRepository`."""

    async def add(self, key: ApiKey) -> None:
        statement = insert(api_keys).values(
            id=key.id,
            org_id=key.org_id,
            name=key.name,
            scopes=_SCOPE_SEPARATOR.join(scope.value for scope in key.scopes),
            token_hash=key.token_hash,
            hint=key.hint,
            created_by=key.created_by,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )
        await self._execute(statement)

    async def get(self, key_id: str) -> ApiKey | None:
        rows = await self._rows(select(api_keys).where(api_keys.c.id == key_id))
        return _api_key(rows[0]) if rows else None

    async def by_token_hash(self, token_hash: str) -> ApiKey | None:
        rows = await self._rows(select(api_keys).where(api_keys.c.token_hash == token_hash))
        return _api_key(rows[0]) if rows else None

    async def list_for_org(self, org_id: str) -> list[ApiKey]:
        k = api_keys.c
        query = (
            select(api_keys).where(k.org_id == org_id).order_by(k.created_at.desc(), k.id.desc())
        )
        return [_api_key(row) for row in await self._rows(query)]

    async def revoke(self, key_id: str, at: datetime) -> None:
        k = api_keys.c
        # A key revoked twice keeps the time it first stopped working.
        statement = (
            update(api_keys).where(k.id == key_id, k.revoked_at.is_(None)).values(revoked_at=at)
        )
        await self._execute(statement)

    async def touch(self, key_id: str, at: datetime) -> None:
        await self._execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))


class SqlOAuthStateRepository(SqlRepository):
    """Implements `OAuthStateRepository`."""

    async def add(self, state: OAuthState) -> None:
        statement = insert(oauth_states).values(
            state=state.state,
            code_verifier=state.code_verifier,
            redirect_to=state.redirect_to,
            created_at=state.created_at,
            expires_at=state.expires_at,
        )
        await self._execute(statement)

    async def consume(self, state: str, at: datetime) -> OAuthState | None:
        # Deleted even when expired: an expired state is of no further use either.
        statement = (
            delete(oauth_states).where(oauth_states.c.state == state).returning(*oauth_states.c)
        )
        rows = await self._rows(statement)
        if not rows or rows[0].expires_at <= at:
            return None
        return _oauth_state(rows[0])


def _user(row: Row[Any]) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        created_at=row.created_at,
        github_id=row.github_id,
        github_login=row.github_login,
    )


def _membership(row: Row[Any]) -> Membership:
    return Membership(
        org_id=row.org_id, user_id=row.user_id, role=Role(row.role), created_at=row.created_at
    )


def _session(row: Row[Any]) -> Session:
    return Session(
        id=row.id,
        user_id=row.user_id,
        token_hash=row.token_hash,
        csrf_hash=row.csrf_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _magic_link(row: Row[Any]) -> MagicLink:
    return MagicLink(
        id=row.id,
        email=row.email,
        token_hash=row.token_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


def _invite(row: Row[Any]) -> Invite:
    return Invite(
        id=row.id,
        org_id=row.org_id,
        email=row.email,
        role=Role(row.role),
        token_hash=row.token_hash,
        invited_by=row.invited_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        accepted_at=row.accepted_at,
        declined_at=row.declined_at,
        revoked_at=row.revoked_at,
    )


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        org_id=row.org_id,
        name=row.name,
        scopes=tuple(ApiKeyScope(s) for s in row.scopes.split(_SCOPE_SEPARATOR) if s),
        token_hash=row.token_hash,
        hint=row.hint,
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def _oauth_state(row: Row[Any]) -> OAuthState:
    return OAuthState(
        state=row.state,
        code_verifier=row.code_verifier,
        redirect_to=row.redirect_to,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )
