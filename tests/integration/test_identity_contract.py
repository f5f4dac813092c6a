"""Contract tests of people and programs (users, memberships, sessions, sign-in links, invites,
API keys, OAuth states), of the app and org changes of the tenancy unit of work, and of the
development mail outbox: the in-memory fakes, SQLite and Postgres pass the same tests.

Postgres is shared by the whole run, so every test works with ids and addresses of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.identity import FakeOutbox
from tests.fakes.storage import FakeDatabase, FakeEventStore, FakeSecretBox, FakeTenancyUnitOfWork
from tests.fakes.system import FakeClock
from tests.integration.test_sql_contract import (
    CLOSED_PORT_URL,
    MONTH,
    NOW,
    batch,
    ingest_app,
    new_app,
    new_credential,
    new_org,
    uid,
)
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.migrate import upgrade
from tkcloud_adapters.sql.outbox import SqlOutbox
from tkcloud_adapters.sql.schema import app_credentials, dnt_daily, events, usage_monthly
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.ports.identity import MailMessage, SentMail
from tkcloud_application.ports.tenancy import AppUsage, TenancyUnitOfWork
from tkcloud_domain.errors import Conflict, ServiceUnavailable
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
from tkcloud_domain.limits import QuotaScope
from tkcloud_domain.tenancy import App, Environment, Org, hash_token

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
# Other tests (and the HTTP stacks) share the Postgres outbox; mails sent at this time are the
# newest in it.
FAR_FUTURE = datetime(2100, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


# --- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    new_uow: Callable[[], TenancyUnitOfWork]
    store: FakeEventStore | SqlEventStore
    outbox: FakeOutbox | SqlOutbox  # Mailer and Outbox
    clock: FakeClock
    engine: AsyncEngine | None = None
    db: FakeDatabase | None = None

    async def rows_of_app(self, app_id: str) -> dict[str, int]:
        """How many credential, event, usage and DNT rows the app has."""
        if self.db is not None:
            return {
                "app_credentials": sum(
                    s.credential.app_id == app_id for s in self.db.credentials.values()
                ),
                "events": sum(key[0] == app_id for key in self.db.events),
                "usage_monthly": sum(key[0] == app_id for key in self.db.usage),
                "dnt_daily": sum(key[0] == app_id for key in self.db.dnt),
            }
        assert self.engine is not None
        tables: tuple[Table, ...] = (app_credentials, events, usage_monthly, dnt_daily)
        async with self.engine.connect() as conn:
            return {
                table.name: int(
                    (
                        await conn.execute(
                            select(func.count()).select_from(table).where(table.c.app_id == app_id)
                        )
                    ).scalar_one()
                )
                for table in tables
            }


def sql_backend(name: str, engine: AsyncEngine, clock: FakeClock) -> Backend:
    return Backend(
        name=name,
        new_uow=lambda: SqlTenancyUnitOfWork(engine),
        store=SqlEventStore(engine),
        outbox=SqlOutbox(engine, RandomIdGenerator(), clock),
        clock=clock,
        engine=engine,
    )


def fake_backend(db: FakeDatabase, clock: FakeClock) -> Backend:
    return Backend(
        name="fake",
        new_uow=lambda: FakeTenancyUnitOfWork(db),
        store=FakeEventStore(db),
        outbox=FakeOutbox(clock),
        clock=clock,
        db=db,
    )


@pytest.fixture(scope="session")
def identity_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'identity.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    # Resolved here, in a plain fixture: the database fixtures run asyncio.run() themselves.
    if request.param == "fake":
        return None
    if request.param == "sqlite":
        return str(request.getfixturevalue("identity_sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def backend(backend_url: str | None) -> AsyncIterator[Backend]:
    clock = FakeClock(NOW)
    if backend_url is None:
        yield fake_backend(FakeDatabase(), clock)
        return
    engine = create_engine(backend_url)
    try:
        yield sql_backend(engine.dialect.name, engine, clock)
    finally:
        await engine.dispose()


# --- data ------------------------------------------------------------------------------------


def new_user(**changes: Any) -> User:
    key = uid()
    values: dict[str, Any] = {
        "id": f"usr_{key}",
        "email": f"ada-{key}@example.com",
        "display_name": "Ada",
        "created_at": NOW - timedelta(days=10),
        **changes,
    }
    return User(**values)


def uid_int() -> int:
    """A GitHub id no other test uses."""
    return int(uid(), 16)


def new_session(user: User, **changes: Any) -> Session:
    values: dict[str, Any] = {
        "id": f"ses_{uid()}",
        "user_id": user.id,
        "token_hash": hash_token(uid()),
        "csrf_hash": hash_token(uid()),
        "created_at": NOW - HOUR,
        "expires_at": NOW + HOUR,
        **changes,
    }
    return Session(**values)


def new_link(**changes: Any) -> MagicLink:
    values: dict[str, Any] = {
        "id": f"mlk_{uid()}",
        "email": f"ada-{uid()}@example.com",
        "token_hash": hash_token(uid()),
        "created_at": NOW - timedelta(minutes=5),
        "expires_at": NOW + timedelta(minutes=10),
        **changes,
    }
    return MagicLink(**values)


def new_invite(org: Org, inviter: User, **changes: Any) -> Invite:
    values: dict[str, Any] = {
        "id": f"inv_{uid()}",
        "org_id": org.id,
        "email": f"grace-{uid()}@example.com",
        "role": Role.OBSERVER,
        "token_hash": hash_token(uid()),
        "invited_by": inviter.id,
        "created_at": NOW - HOUR,
        "expires_at": NOW + timedelta(days=7),
        **changes,
    }
    return Invite(**values)


def new_key(org: Org, **changes: Any) -> ApiKey:
    values: dict[str, Any] = {
        "id": f"key_{uid()}",
        "org_id": org.id,
        "name": "ci",
        "scopes": (ApiKeyScope.ANALYTICS_READ,),
        "token_hash": hash_token(uid()),
        "hint": "tkk_abcd",
        "created_by": None,
        "created_at": NOW - HOUR,
        **changes,
    }
    return ApiKey(**values)


def new_state(**changes: Any) -> OAuthState:
    values: dict[str, Any] = {
        "state": uid(),
        "code_verifier": uid() * 8,
        "redirect_to": "/orgs",
        "created_at": NOW - timedelta(minutes=1),
        "expires_at": NOW + timedelta(minutes=9),
        **changes,
    }
    return OAuthState(**values)


async def setup(
    backend: Backend,
    *,
    orgs: tuple[Org, ...] = (),
    apps: tuple[App, ...] = (),
    users: tuple[User, ...] = (),
    memberships: tuple[Membership, ...] = (),
) -> None:
    async with backend.new_uow() as uow:
        for org in orgs:
            await uow.orgs.add(org)
        for app in apps:
            await uow.apps.add(app)
        for user in users:
            await uow.users.add(user)
        for membership in memberships:
            await uow.memberships.add(membership)
        await uow.commit()


# --- users -----------------------------------------------------------------------------------


async def test_users_are_found_by_id_email_and_github_id(backend: Backend) -> None:
    github_user = new_user(github_id=2**40 + uid_int(), github_login="ada")
    plain = new_user()
    await setup(backend, users=(github_user, plain))

    async with backend.new_uow() as uow:
        assert await uow.users.get(github_user.id) == github_user
        assert await uow.users.by_email(plain.email) == plain
        assert github_user.github_id is not None
        assert await uow.users.by_github_id(github_user.github_id) == github_user
        assert await uow.users.get("usr_unknown") is None
        assert await uow.users.by_email("nobody@example.com") is None
        assert await uow.users.by_github_id(1) is None
    stored = await _user(backend, plain.id)
    assert stored.created_at.utcoffset() == timedelta(0)


async def _user(backend: Backend, user_id: str) -> User:
    async with backend.new_uow() as uow:
        user = await uow.users.get(user_id)
    assert user is not None
    return user


async def test_link_github_sets_the_account(backend: Backend) -> None:
    user = new_user()
    await setup(backend, users=(user,))
    github_id = uid_int()

    async with backend.new_uow() as uow:
        await uow.users.link_github(user.id, github_id, "ada-l")
        await uow.commit()

    linked = replace(user, github_id=github_id, github_login="ada-l")
    async with backend.new_uow() as uow:
        assert await uow.users.by_github_id(github_id) == linked
        # Linking the same account again changes nothing and is no conflict.
        await uow.users.link_github(user.id, github_id, "ada-l")
        assert await uow.users.get(user.id) == linked


async def test_duplicate_users_are_conflicts_and_the_work_goes_on(backend: Backend) -> None:
    taken = new_user(github_id=uid_int(), github_login="taken")
    other = new_user()
    await setup(backend, users=(taken, other))
    fine = new_user()

    async with backend.new_uow() as uow:
        with pytest.raises(Conflict):
            await uow.users.add(new_user(email=taken.email))
        with pytest.raises(Conflict):
            await uow.users.add(new_user(github_id=taken.github_id, github_login="again"))
        with pytest.raises(Conflict):
            await uow.users.add(new_user(id=taken.id))
        assert taken.github_id is not None
        with pytest.raises(Conflict):
            await uow.users.link_github(other.id, taken.github_id, "taken")
        await uow.users.add(fine)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.users.get(fine.id) == fine
        assert await uow.users.get(other.id) == other  # not linked


# --- memberships ---------------------------------------------------------------------------


async def test_memberships_add_get_and_list_oldest_first(backend: Backend) -> None:
    org, other_org = new_org(), new_org()
    first, second, third = new_user(), new_user(), new_user()
    joined = [
        Membership(org.id, second.id, Role.ADMIN, NOW - timedelta(days=2)),
        Membership(org.id, first.id, Role.OWNER, NOW - timedelta(days=3)),
        Membership(org.id, third.id, Role.OBSERVER, NOW - timedelta(days=1)),
        Membership(other_org.id, first.id, Role.MEMBER, NOW - timedelta(days=4)),
    ]
    await setup(
        backend, orgs=(org, other_org), users=(first, second, third), memberships=tuple(joined)
    )

    async with backend.new_uow() as uow:
        assert await uow.memberships.get(org.id, second.id) == joined[0]
        assert await uow.memberships.get(org.id, "usr_unknown") is None
        assert await uow.memberships.list_for_org(org.id) == [joined[1], joined[0], joined[2]]
        assert await uow.memberships.list_for_user(first.id) == [joined[3], joined[1]]
        assert await uow.memberships.list_for_user(new_user().id) == []


async def test_memberships_set_role_and_remove(backend: Backend) -> None:
    org = new_org()
    stays, leaves = new_user(), new_user()
    membership = Membership(org.id, stays.id, Role.MEMBER, NOW)
    await setup(
        backend,
        orgs=(org,),
        users=(stays, leaves),
        memberships=(membership, Membership(org.id, leaves.id, Role.ADMIN, NOW)),
    )

    async with backend.new_uow() as uow:
        await uow.memberships.set_role(org.id, stays.id, Role.ADMIN)
        await uow.memberships.remove(org.id, leaves.id)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.memberships.list_for_org(org.id) == [replace(membership, role=Role.ADMIN)]
        assert await uow.memberships.get(org.id, leaves.id) is None


async def test_a_second_membership_is_a_conflict(backend: Backend) -> None:
    org, user = new_org(), new_user()
    await setup(
        backend,
        orgs=(org,),
        users=(user,),
        memberships=(Membership(org.id, user.id, Role.OWNER, NOW),),
    )

    async with backend.new_uow() as uow:
        with pytest.raises(Conflict):
            await uow.memberships.add(Membership(org.id, user.id, Role.OBSERVER, NOW))
        assert (await uow.memberships.list_for_org(org.id))[0].role is Role.OWNER


async def test_a_membership_of_a_missing_user_is_a_bug(backend: Backend) -> None:
    org = new_org()
    await setup(backend, orgs=(org,))

    async with backend.new_uow() as uow:
        with pytest.raises((ValueError, sa_exc.IntegrityError)):
            await uow.memberships.add(Membership(org.id, new_user().id, Role.MEMBER, NOW))


# --- sessions --------------------------------------------------------------------------------


async def test_sessions_are_found_by_token_hash(backend: Backend) -> None:
    user = new_user()
    session = new_session(user)
    await setup(backend, users=(user,))

    async with backend.new_uow() as uow:
        await uow.sessions.add(session)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.sessions.by_token_hash(session.token_hash) == session
        assert await uow.sessions.by_token_hash(hash_token("unknown")) is None


async def test_revoking_a_session_keeps_the_first_time(backend: Backend) -> None:
    user = new_user()
    session = new_session(user)
    await setup(backend, users=(user,))
    async with backend.new_uow() as uow:
        await uow.sessions.add(session)
        await uow.sessions.revoke(session.id, NOW)
        await uow.sessions.revoke(session.id, NOW + HOUR)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.sessions.by_token_hash(session.token_hash) == replace(
            session, revoked_at=NOW
        )


async def test_revoke_all_for_user_counts_only_live_sessions(backend: Backend) -> None:
    user, other = new_user(), new_user()
    live = [new_session(user), new_session(user, expires_at=NOW + timedelta(days=30))]
    expired = new_session(user, expires_at=NOW)  # expired at exactly NOW
    revoked = new_session(user, revoked_at=NOW - HOUR)
    others = new_session(other)
    await setup(backend, users=(user, other))
    async with backend.new_uow() as uow:
        for session in (*live, expired, revoked, others):
            await uow.sessions.add(session)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.sessions.revoke_all_for_user(user.id, NOW) == 2
        await uow.commit()

    async with backend.new_uow() as uow:
        for session in live:
            assert await uow.sessions.by_token_hash(session.token_hash) == replace(
                session, revoked_at=NOW
            )
        assert await uow.sessions.by_token_hash(expired.token_hash) == expired
        assert await uow.sessions.by_token_hash(revoked.token_hash) == revoked
        assert await uow.sessions.by_token_hash(others.token_hash) == others
        assert await uow.sessions.revoke_all_for_user(user.id, NOW) == 0


# --- magic links -----------------------------------------------------------------------------


async def add_link(backend: Backend, link: MagicLink) -> None:
    async with backend.new_uow() as uow:
        await uow.magic_links.add(link)
        await uow.commit()


async def consume_link(backend: Backend, token_hash: str, at: datetime = NOW) -> MagicLink | None:
    async with backend.new_uow() as uow:
        link = await uow.magic_links.consume(token_hash, at)
        await uow.commit()
    return link


async def test_a_magic_link_is_consumed_once(backend: Backend) -> None:
    link = new_link()
    await add_link(backend, link)

    assert await consume_link(backend, link.token_hash) == replace(link, used_at=NOW)
    assert await consume_link(backend, link.token_hash) is None
    assert await consume_link(backend, hash_token("unknown")) is None


async def test_an_expired_magic_link_is_not_consumed(backend: Backend) -> None:
    link = new_link(expires_at=NOW)
    await add_link(backend, link)

    assert await consume_link(backend, link.token_hash, NOW) is None  # expired at exactly NOW
    assert await consume_link(backend, link.token_hash, NOW - timedelta(microseconds=1)) is not None


async def test_a_consume_that_is_rolled_back_leaves_the_link_usable(backend: Backend) -> None:
    link = new_link()
    await add_link(backend, link)

    async with backend.new_uow() as uow:
        assert await uow.magic_links.consume(link.token_hash, NOW) is not None

    assert await consume_link(backend, link.token_hash) is not None


@pytest.mark.parametrize("first_commits", [True, False])
async def test_a_consume_waits_for_the_unit_of_work_that_consumed_first(
    backend: Backend, first_commits: bool
) -> None:
    link = new_link()
    await add_link(backend, link)

    first = backend.new_uow()
    async with first:
        assert await first.magic_links.consume(link.token_hash, NOW) is not None
        second = asyncio.create_task(consume_link(backend, link.token_hash))
        # Time for the second consume to reach the lock; the outcome does not depend on it.
        await asyncio.sleep(0.05)
        assert not second.done()
        if first_commits:
            await first.commit()

    # The second sees what the first left: used if it committed, usable if it rolled back.
    assert (await second is None) is first_commits


async def test_concurrent_consumes_of_one_link_have_exactly_one_winner(backend: Backend) -> None:
    link = new_link()
    await add_link(backend, link)

    results = await asyncio.gather(*(consume_link(backend, link.token_hash) for _ in range(20)))

    assert [r for r in results if r is not None] == [replace(link, used_at=NOW)]


# --- invites ---------------------------------------------------------------------------------


async def test_invites_are_found_and_listed_newest_first(backend: Backend) -> None:
    org, other_org, inviter = new_org(), new_org(), new_user()
    older = new_invite(org, inviter, created_at=NOW - timedelta(days=2))
    newer = new_invite(org, inviter, created_at=NOW - timedelta(days=1), role=Role.ADMIN)
    elsewhere = new_invite(other_org, inviter)
    await setup(backend, orgs=(org, other_org), users=(inviter,))
    async with backend.new_uow() as uow:
        for invite in (older, newer, elsewhere):
            await uow.invites.add(invite)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.invites.get(older.id) == older
        assert await uow.invites.by_token_hash(newer.token_hash) == newer
        assert await uow.invites.get("inv_unknown") is None
        assert await uow.invites.by_token_hash(hash_token("unknown")) is None
        assert await uow.invites.list_for_org(org.id) == [newer, older]


@pytest.mark.parametrize("outcome", ["accepted", "declined", "revoked"])
async def test_an_invite_closes_once(backend: Backend, outcome: str) -> None:
    org, inviter = new_org(), new_user()
    invite = new_invite(org, inviter)
    await setup(backend, orgs=(org,), users=(inviter,))
    async with backend.new_uow() as uow:
        await uow.invites.add(invite)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.invites.close(invite.id, outcome, NOW) is True
        await uow.commit()
    async with backend.new_uow() as uow:
        for again in ("accepted", "declined", "revoked"):
            assert await uow.invites.close(invite.id, again, NOW + HOUR) is False
        assert await uow.invites.close("inv_unknown", outcome, NOW) is False
        closed = await uow.invites.get(invite.id)

    closed_at: dict[str, Any] = {f"{outcome}_at": NOW}
    assert closed == replace(invite, **closed_at)


async def test_an_unknown_invite_outcome_is_a_bug(backend: Backend) -> None:
    async with backend.new_uow() as uow:
        with pytest.raises(ValueError, match="outcome"):
            await uow.invites.close("inv_any", "expired", NOW)


async def test_concurrent_closes_of_one_invite_have_exactly_one_winner(backend: Backend) -> None:
    org, inviter = new_org(), new_user()
    invite = new_invite(org, inviter)
    await setup(backend, orgs=(org,), users=(inviter,))
    async with backend.new_uow() as uow:
        await uow.invites.add(invite)
        await uow.commit()

    async def close(outcome: str) -> bool:
        async with backend.new_uow() as uow:
            closed = await uow.invites.close(invite.id, outcome, NOW)
            await uow.commit()
        return closed

    results = await asyncio.gather(*(close(o) for o in ["accepted", "declined", "revoked"] * 4))

    assert sum(results) == 1


# --- API keys --------------------------------------------------------------------------------


async def test_api_keys_round_trip_and_list_newest_first(backend: Backend) -> None:
    org, other_org, creator = new_org(), new_org(), new_user()
    older = new_key(org, created_at=NOW - timedelta(days=2), created_by=creator.id)
    newer = new_key(
        org,
        created_at=NOW - timedelta(days=1),
        scopes=(ApiKeyScope.MANAGE, ApiKeyScope.ANALYTICS_READ),
        revoked_at=NOW - HOUR,
    )
    unscoped = new_key(other_org, scopes=())
    await setup(backend, orgs=(org, other_org), users=(creator,))
    async with backend.new_uow() as uow:
        for key in (older, newer, unscoped):
            await uow.api_keys.add(key)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.api_keys.get(older.id) == older
        assert await uow.api_keys.by_token_hash(newer.token_hash) == newer
        assert await uow.api_keys.get(unscoped.id) == unscoped
        assert await uow.api_keys.get("key_unknown") is None
        assert await uow.api_keys.by_token_hash(hash_token("unknown")) is None
        assert await uow.api_keys.list_for_org(org.id) == [newer, older]  # revoked included


async def test_api_keys_revoke_and_touch(backend: Backend) -> None:
    org = new_org()
    key = new_key(org)
    await setup(backend, orgs=(org,))
    async with backend.new_uow() as uow:
        await uow.api_keys.add(key)
        await uow.api_keys.touch(key.id, NOW)
        await uow.api_keys.touch(key.id, NOW + HOUR)
        await uow.api_keys.revoke(key.id, NOW + 2 * HOUR)
        await uow.api_keys.revoke(key.id, NOW + 3 * HOUR)  # keeps the first time
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.api_keys.get(key.id) == replace(
            key, last_used_at=NOW + HOUR, revoked_at=NOW + 2 * HOUR
        )


# --- OAuth states --------------------------------------------------------------------------


async def add_state(backend: Backend, state: OAuthState) -> None:
    async with backend.new_uow() as uow:
        await uow.oauth_states.add(state)
        await uow.commit()


async def consume_state(backend: Backend, state: str, at: datetime = NOW) -> OAuthState | None:
    async with backend.new_uow() as uow:
        found = await uow.oauth_states.consume(state, at)
        await uow.commit()
    return found


async def test_an_oauth_state_is_consumed_once(backend: Backend) -> None:
    state = new_state()
    await add_state(backend, state)

    assert await consume_state(backend, state.state) == state
    assert await consume_state(backend, state.state) is None
    assert await consume_state(backend, "unknown") is None


async def test_an_expired_oauth_state_is_not_returned_and_is_gone(backend: Backend) -> None:
    state = new_state(expires_at=NOW)
    await add_state(backend, state)

    assert await consume_state(backend, state.state, NOW) is None
    assert await consume_state(backend, state.state, NOW - HOUR) is None  # deleted


async def test_concurrent_consumes_of_one_oauth_state_have_one_winner(backend: Backend) -> None:
    state = new_state()
    await add_state(backend, state)

    results = await asyncio.gather(*(consume_state(backend, state.state) for _ in range(10)))

    assert [r for r in results if r is not None] == [state]


# --- the identity repositories share the unit of work ----------------------------------------


async def test_sign_up_work_without_commit_rolls_back(backend: Backend) -> None:
    org, user = new_org(), new_user()
    session, link, state = new_session(user), new_link(), new_state()
    await setup(backend, orgs=(org,))
    await add_link(backend, link)

    async with backend.new_uow() as uow:
        await uow.users.add(user)
        await uow.memberships.add(Membership(org.id, user.id, Role.OWNER, NOW))
        await uow.sessions.add(session)
        await uow.magic_links.consume(link.token_hash, NOW)
        await uow.oauth_states.add(state)
        await uow.invites.add(new_invite(org, user))
        await uow.api_keys.add(new_key(org))

    async with backend.new_uow() as uow:
        assert await uow.users.get(user.id) is None
        assert await uow.memberships.list_for_org(org.id) == []
        assert await uow.sessions.by_token_hash(session.token_hash) is None
        assert await uow.invites.list_for_org(org.id) == []
        assert await uow.api_keys.list_for_org(org.id) == []
        assert await uow.oauth_states.consume(state.state, NOW) is None
    assert await consume_link(backend, link.token_hash) is not None


# --- orgs and apps -----------------------------------------------------------------------------


async def test_rename_org_and_app(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    await setup(backend, orgs=(org,), apps=(app,))

    async with backend.new_uow() as uow:
        await uow.orgs.rename(org.id, "Acme Renamed")
        await uow.apps.rename(app.id, "cli-2")
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.orgs.get(org.id) == replace(org, name="Acme Renamed")
        assert await uow.apps.get(app.id) == replace(app, name="cli-2")


async def _with_data(backend: Backend, org: Org, app: App) -> None:
    """Credentials, events, usage and a DNT count for the app."""
    async with backend.new_uow() as uow:
        for credential, secret in (new_credential(app, NOW), new_credential(app, NOW - HOUR)):
            await uow.credentials.add(credential, FakeSecretBox().encrypt(secret))
        await uow.commit()
    await backend.store.store(ingest_app(org, app), batch(3), NOW)
    await backend.store.store(ingest_app(org, app), batch(2), NOW - timedelta(days=40))
    await backend.store.count_dnt(ingest_app(org, app), NOW.date())


async def test_deleting_an_app_deletes_everything_of_it_and_nothing_else(
    backend: Backend,
) -> None:
    org = new_org()
    doomed, kept = new_app(org), new_app(org)
    await setup(backend, orgs=(org,), apps=(doomed, kept))
    await _with_data(backend, org, doomed)
    await _with_data(backend, org, kept)
    before = await backend.rows_of_app(kept.id)

    async with backend.new_uow() as uow:
        await uow.apps.delete(doomed.id)
        await uow.commit()

    # Usage stays: the quota counts accepted events, a deleted app does not give them back.
    assert await backend.rows_of_app(doomed.id) == dict.fromkeys(before, 0) | {"usage_monthly": 2}
    assert (
        await backend.rows_of_app(kept.id)
        == before
        == {
            "app_credentials": 2,
            "events": 5,
            "usage_monthly": 2,
            "dnt_daily": 1,
        }
    )
    async with backend.new_uow() as uow:
        assert await uow.apps.get(doomed.id) is None
        assert await uow.apps.list_for_org(org.id) == [kept]
    assert await backend.store.monthly_usage(MONTH, org.id) == [
        AppUsage(org.id, kept.id, Environment.PRODUCTION, MONTH, 3)
    ]
    org_scope = QuotaScope("org", org.id)
    assert await backend.store.events_this_month(org_scope, MONTH) == 6


async def test_deleting_an_app_without_commit_changes_nothing(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    await setup(backend, orgs=(org,), apps=(app,))
    await _with_data(backend, org, app)
    before = await backend.rows_of_app(app.id)

    async with backend.new_uow() as uow:
        await uow.apps.delete(app.id)

    assert await backend.rows_of_app(app.id) == before
    async with backend.new_uow() as uow:
        assert await uow.apps.get(app.id) == app


async def test_delete_events_counts_and_keeps_the_rest(backend: Backend) -> None:
    org = new_org()
    app, other = new_app(org, Environment.STAGING), new_app(org)
    await setup(backend, orgs=(org,), apps=(app, other))
    await _with_data(backend, org, app)
    await _with_data(backend, org, other)

    async with backend.new_uow() as uow:
        assert await uow.apps.delete_events(app.id) == 5
        assert await uow.apps.delete_events(app.id) == 0
        await uow.commit()

    # Usage stays: it is what the app consumed, whatever became of the events.
    assert await backend.rows_of_app(app.id) == {
        "app_credentials": 2,
        "events": 0,
        "usage_monthly": 2,
        "dnt_daily": 1,
    }
    assert (await backend.rows_of_app(other.id))["events"] == 5


# --- the development mail outbox ---------------------------------------------------------------


def mail(to: str, subject: str, kind: str = "magic_link") -> MailMessage:
    return MailMessage(to=to, subject=subject, text=f"Hello {to},\n\nline two\n", kind=kind)


async def test_the_outbox_lists_mails_newest_first(backend: Backend) -> None:
    ada, grace = f"ada-{uid()}@example.com", f"grace-{uid()}@example.com"
    sent = [mail(ada, "first"), mail(grace, "second", "invite"), mail(ada, "third", "quota_80")]
    backend.clock.set(FAR_FUTURE)
    for message in sent:
        await backend.outbox.send(message)
        backend.clock.advance(1)

    newest = await backend.outbox.recent(limit=3)
    assert [m.message for m in newest] == sent[::-1]
    assert [m.created_at for m in newest] == [FAR_FUTURE + timedelta(seconds=s) for s in (2, 1, 0)]
    assert all(m.id.startswith("mail_") for m in newest)
    assert len({m.id for m in newest}) == 3
    assert [m.message for m in await backend.outbox.recent(limit=1)] == [sent[2]]
    assert [m.message for m in await backend.outbox.recent(to=ada)] == [sent[2], sent[0]]
    assert await backend.outbox.recent(to=f"nobody-{uid()}@example.com") == []


async def test_the_outbox_keeps_mails_sent_inside_a_rolled_back_unit_of_work(
    backend: Backend,
) -> None:
    # The link was mailed; the mail is not taken back because the caller then failed.
    to = f"ada-{uid()}@example.com"
    async with backend.new_uow():
        await backend.outbox.send(mail(to, "kept"))

    assert [_subject(m) for m in await backend.outbox.recent(to=to)] == ["kept"]


def _subject(sent: SentMail) -> str:
    return sent.message.subject


@pytest.fixture(params=["fake", "sqlite", "postgres"])
async def unreachable_outbox(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[FakeOutbox | SqlOutbox]:
    clock = FakeClock(NOW)
    if request.param == "fake":
        outbox = FakeOutbox(clock)
        outbox.unavailable = True
        yield outbox
        return
    # SQLite cannot open a directory as its database file; nothing listens on port 1.
    url = f"sqlite+aiosqlite:///{tmp_path}" if request.param == "sqlite" else CLOSED_PORT_URL
    engine = create_engine(url)
    try:
        yield SqlOutbox(engine, RandomIdGenerator(), clock)
    finally:
        await engine.dispose()


async def test_an_unreachable_outbox_cannot_send_mail(
    unreachable_outbox: FakeOutbox | SqlOutbox,
) -> None:
    with pytest.raises(ServiceUnavailable) as raised:
        await unreachable_outbox.send(mail("ada@example.com", "lost"))
    assert raised.value.dependency == "mail"
