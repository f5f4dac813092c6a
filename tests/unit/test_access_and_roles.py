"""`Access`: what each role and API-key scope may do, and that another tenant's org or app
answers exactly as a missing one (NotFound, never Forbidden), over the fake unit of work."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from tests.fakes.storage import FakeDatabase, FakeEventStore, FakeSecretBox, FakeTenancyUnitOfWork
from tests.fakes.system import FakeClock
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.identity.access import Access
from tkcloud_application.tenancy.operations import TenancyOperations
from tkcloud_domain.errors import Forbidden, NotFound
from tkcloud_domain.identity import (
    ROLE_ACTIONS,
    SCOPE_ACTIONS,
    Action,
    ApiKey,
    ApiKeyScope,
    KeyPrincipal,
    Membership,
    OperatorPrincipal,
    Role,
    SharePrincipal,
    User,
    UserPrincipal,
)
from tkcloud_domain.tenancy import App, Org

MISSING_ORG = "00000000-0000-4000-8000-000000000000"
MISSING_APP = "00000000-0000-4000-8000-000000000001"

A = Action
READ = {A.ORG_READ, A.APPS_READ, A.USAGE_READ, A.ANALYTICS_READ, A.EVENTS_READ}
MEMBER = READ | {A.APPS_WRITE, A.MEMBERS_READ}
ADMIN = MEMBER | {A.ORG_WRITE, A.MEMBERS_WRITE, A.KEYS_MANAGE}
OWNER = ADMIN | {A.ORG_DELETE, A.BILLING_MANAGE}
# PRODUCT.md, Tenancy: owner (billing, delete), admin (apps, keys, members), member (apps, read),
# observer (read-only analytics). A "manage" key manages apps, never people, keys or billing.
EXPECTED_ROLE_ACTIONS = {
    Role.OWNER: OWNER,
    Role.ADMIN: ADMIN,
    Role.MEMBER: MEMBER,
    Role.OBSERVER: READ,
}
EXPECTED_SCOPE_ACTIONS = {ApiKeyScope.ANALYTICS_READ: READ, ApiKeyScope.MANAGE: MEMBER}


@dataclass
class World:
    db: FakeDatabase = field(default_factory=FakeDatabase)
    clock: FakeClock = field(default_factory=FakeClock)

    def __post_init__(self) -> None:
        self.ops = TenancyOperations(
            uow=self.uow,
            usage=FakeEventStore(self.db),
            ids=RandomIdGenerator(),
            secret_box=FakeSecretBox(),
            clock=self.clock,
            region="eu-1",
        )
        self.access = Access(self.uow)

    def uow(self) -> FakeTenancyUnitOfWork:
        return FakeTenancyUnitOfWork(self.db)

    def user(self, email: str) -> UserPrincipal:
        user = User(f"usr_{len(self.db.users):020d}", email, email, self.clock.now())
        self.db.users[user.id] = user
        return UserPrincipal(user=user, session=None)

    def join(self, org: Org, principal: UserPrincipal, role: Role) -> None:
        membership = Membership(org.id, principal.user.id, role, self.clock.now())
        self.db.memberships[(org.id, principal.user.id)] = membership

    def key(self, org: Org, *scopes: ApiKeyScope) -> KeyPrincipal:
        key = ApiKey(
            id=f"key_{len(self.db.api_keys):020d}",
            org_id=org.id,
            name="CI",
            scopes=scopes,
            token_hash=f"{len(self.db.api_keys):064x}",
            hint="tkk_abcd",
            created_by=None,
            created_at=self.clock.now(),
        )
        self.db.api_keys[key.id] = key
        return KeyPrincipal(key=key)

    async def org(self, name: str = "Acme") -> Org:
        return await self.ops.create_org(name)

    async def app(self, org: Org, name: str = "CLI") -> App:
        return (await self.ops.create_app(org.id, name)).app


# --- the tables ----------------------------------------------------------------------------------


def test_the_role_table_is_the_products() -> None:
    assert ROLE_ACTIONS == EXPECTED_ROLE_ACTIONS


def test_the_scope_table_is_the_products() -> None:
    assert SCOPE_ACTIONS == EXPECTED_SCOPE_ACTIONS


def test_roles_are_nested_from_observer_up_to_owner() -> None:
    chain = [Role.OBSERVER, Role.MEMBER, Role.ADMIN, Role.OWNER]
    for lower, higher in itertools.pairwise(chain):
        assert ROLE_ACTIONS[lower] < ROLE_ACTIONS[higher]
    assert ROLE_ACTIONS[Role.OWNER] == set(Action)


def test_no_key_scope_reaches_people_keys_billing_or_deletion() -> None:
    never = {A.MEMBERS_WRITE, A.KEYS_MANAGE, A.BILLING_MANAGE, A.ORG_DELETE, A.ORG_WRITE}
    for scope in ApiKeyScope:
        assert not SCOPE_ACTIONS[scope] & never


# --- members -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "action"), list(itertools.product(Role, Action)))
async def test_a_member_may_do_exactly_what_the_role_allows(role: Role, action: Action) -> None:
    w = World()
    org = await w.org()
    someone = w.user("someone@example.com")
    w.join(org, someone, role)

    if action in EXPECTED_ROLE_ACTIONS[role]:
        await w.access.require(someone, org.id, action)
    else:
        with pytest.raises(Forbidden, match=f"Your role \\({role.value}\\)"):
            await w.access.require(someone, org.id, action)


@pytest.mark.parametrize("action", list(Action))
async def test_a_non_member_gets_not_found_for_every_action(action: Action) -> None:
    w = World()
    org = await w.org()
    other = await w.org("Other")
    stranger = w.user("stranger@example.com")
    w.join(other, stranger, Role.OWNER)  # an owner elsewhere is a stranger here

    with pytest.raises(NotFound) as here:
        await w.access.require(stranger, org.id, action)
    with pytest.raises(NotFound) as missing:
        await w.access.require(stranger, MISSING_ORG, action)
    assert here.value.message == f"No org {org.id}"
    assert missing.value.message == f"No org {MISSING_ORG}"


async def test_a_removed_member_gets_not_found() -> None:
    w = World()
    org = await w.org()
    someone = w.user("someone@example.com")
    w.join(org, someone, Role.ADMIN)
    await w.access.require(someone, org.id, A.ORG_READ)
    del w.db.memberships[(org.id, someone.user.id)]
    with pytest.raises(NotFound):
        await w.access.require(someone, org.id, A.ORG_READ)


# --- API keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scope", "action"), list(itertools.product(ApiKeyScope, Action)))
async def test_a_key_may_do_exactly_what_its_scope_allows(
    scope: ApiKeyScope, action: Action
) -> None:
    w = World()
    org = await w.org()
    key = w.key(org, scope)

    if action in EXPECTED_SCOPE_ACTIONS[scope]:
        await w.access.require(key, org.id, action)
    else:
        with pytest.raises(Forbidden, match="scopes do not allow"):
            await w.access.require(key, org.id, action)


@pytest.mark.parametrize("action", list(Action))
async def test_a_key_with_both_scopes_may_do_what_either_allows(action: Action) -> None:
    w = World()
    org = await w.org()
    key = w.key(org, ApiKeyScope.ANALYTICS_READ, ApiKeyScope.MANAGE)
    if action in MEMBER:
        await w.access.require(key, org.id, action)
    else:
        with pytest.raises(Forbidden):
            await w.access.require(key, org.id, action)


@pytest.mark.parametrize("action", list(Action))
async def test_a_key_of_another_org_gets_not_found_even_for_actions_outside_its_scope(
    action: Action,
) -> None:
    w = World()
    org = await w.org()
    other = await w.org("Other")
    key = w.key(other, ApiKeyScope.ANALYTICS_READ, ApiKeyScope.MANAGE)
    with pytest.raises(NotFound) as raised:
        await w.access.require(key, org.id, action)
    assert raised.value.message == f"No org {org.id}"


# --- operators -----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", list(Action))
async def test_an_operator_may_do_everything_in_any_org(action: Action) -> None:
    w = World()
    org = await w.org()
    await w.access.require(OperatorPrincipal(), org.id, action)


@pytest.mark.parametrize("action", [A.ORG_READ, A.ORG_DELETE])
async def test_an_operator_gets_not_found_for_a_missing_org(action: Action) -> None:
    w = World()
    await w.org()
    with pytest.raises(NotFound):
        await w.access.require(OperatorPrincipal(), MISSING_ORG, action)


# --- is_owner ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "expected"),
    [(Role.OWNER, True), (Role.ADMIN, False), (Role.MEMBER, False), (Role.OBSERVER, False)],
)
async def test_only_an_owner_membership_counts_as_owner(role: Role, expected: bool) -> None:
    w = World()
    org = await w.org()
    someone = w.user("someone@example.com")
    w.join(org, someone, role)
    assert await w.access.is_owner(someone, org.id) is expected


async def test_an_owner_of_another_org_is_not_owner_here() -> None:
    w = World()
    org, other = await w.org(), await w.org("Other")
    someone = w.user("someone@example.com")
    w.join(other, someone, Role.OWNER)
    assert await w.access.is_owner(someone, org.id) is False


async def test_operators_count_as_owners_and_keys_never_do() -> None:
    w = World()
    org = await w.org()
    assert await w.access.is_owner(OperatorPrincipal(), org.id) is True
    key = w.key(org, ApiKeyScope.MANAGE, ApiKeyScope.ANALYTICS_READ)
    assert await w.access.is_owner(key, org.id) is False


# --- require_app ---------------------------------------------------------------------------------


async def test_require_app_returns_the_app_to_a_member_allowed_the_action() -> None:
    w = World()
    org = await w.org()
    app = await w.app(org)
    someone = w.user("someone@example.com")
    w.join(org, someone, Role.MEMBER)
    assert await w.access.require_app(someone, app.id, A.APPS_WRITE) == app


async def test_require_app_of_another_orgs_app_answers_as_for_a_missing_app() -> None:
    w = World()
    org, other = await w.org(), await w.org("Other")
    theirs = await w.app(other)
    someone = w.user("someone@example.com")
    w.join(org, someone, Role.OWNER)

    with pytest.raises(NotFound) as foreign:
        await w.access.require_app(someone, theirs.id, A.APPS_READ)
    with pytest.raises(NotFound) as missing:
        await w.access.require_app(someone, MISSING_APP, A.APPS_READ)
    assert foreign.value.message == f"No app {theirs.id}"
    assert missing.value.message == f"No app {MISSING_APP}"
    assert type(foreign.value) is type(missing.value)


async def test_require_app_with_a_key_of_another_org_is_not_found() -> None:
    w = World()
    org, other = await w.org(), await w.org("Other")
    app = await w.app(org)
    key = w.key(other, ApiKeyScope.MANAGE)
    with pytest.raises(NotFound, match=f"No app {app.id}"):
        await w.access.require_app(key, app.id, A.APPS_READ)


async def test_require_app_without_the_right_is_forbidden_for_a_member() -> None:
    w = World()
    org = await w.org()
    app = await w.app(org)
    observer = w.user("observer@example.com")
    w.join(org, observer, Role.OBSERVER)
    assert await w.access.require_app(observer, app.id, A.ANALYTICS_READ) == app
    with pytest.raises(Forbidden):
        await w.access.require_app(observer, app.id, A.APPS_WRITE)


async def test_require_app_with_a_key_follows_its_scope() -> None:
    w = World()
    org = await w.org()
    app = await w.app(org)
    reader = w.key(org, ApiKeyScope.ANALYTICS_READ)
    assert await w.access.require_app(reader, app.id, A.ANALYTICS_READ) == app
    with pytest.raises(Forbidden):
        await w.access.require_app(reader, app.id, A.APPS_WRITE)


async def test_require_app_lets_an_operator_reach_any_app_but_not_a_missing_one() -> None:
    w = World()
    org = await w.org()
    app = await w.app(org)
    assert await w.access.require_app(OperatorPrincipal(), app.id, A.APPS_WRITE) == app
    with pytest.raises(NotFound):
        await w.access.require_app(OperatorPrincipal(), MISSING_APP, A.APPS_READ)


async def test_a_share_link_reads_only_its_apps_analytics() -> None:
    w = World()
    org = await w.org()
    app, other = await w.app(org), await w.app(org)
    link = SharePrincipal(app_id=app.id, include_events=False)
    assert await w.access.require_app(link, app.id, A.ANALYTICS_READ) == app
    with pytest.raises(NotFound):
        await w.access.require_app(link, other.id, A.ANALYTICS_READ)
    with pytest.raises(NotFound):
        await w.access.require(link, org.id, A.ORG_READ)
    for action in (A.EVENTS_READ, A.APPS_READ, A.USAGE_READ, A.APPS_WRITE):
        with pytest.raises(Forbidden):
            await w.access.require_app(link, app.id, action)
    with_events = SharePrincipal(app_id=app.id, include_events=True)
    assert await w.access.require_app(with_events, app.id, A.EVENTS_READ) == app
