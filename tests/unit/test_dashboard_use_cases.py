"""The dashboard use cases over the fakes: `Organisations` (orgs, members, roles), `Invitations`,
`ApiKeys` and `AppManagement` (promote, delete, usage), each checking access first (no I/O)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.mail import FakeMailer, first_link
from tests.fakes.storage import (
    FakeDatabase,
    FakeEventStore,
    FakeIngestDirectory,
    FakeSecretBox,
    FakeTenancyUnitOfWork,
)
from tests.fakes.system import FakeClock
from tests.support.sdk import sdk_event
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.dashboard.api_keys import ApiKeys
from tkcloud_application.dashboard.apps import Allowance, AppManagement
from tkcloud_application.dashboard.invitations import Invitations
from tkcloud_application.dashboard.organisations import Organisations
from tkcloud_application.identity.access import Access
from tkcloud_application.ports.tenancy import AppUsage
from tkcloud_application.tenancy.operations import TenancyOperations
from tkcloud_domain.errors import Conflict, Forbidden, InvalidLink, NotFound, ValidationFailed
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.identity import (
    ApiKey,
    ApiKeyScope,
    Invite,
    InviteStatus,
    KeyPrincipal,
    Membership,
    OperatorPrincipal,
    Role,
    User,
    UserPrincipal,
)
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Environment, Org

DASHBOARD_URL = "https://dash.tk.example"
MONTH = "2026-12"  # FakeClock's default time is in December 2026
MISSING_APP = "00000000-0000-4000-8000-000000000001"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class World:
    db: FakeDatabase = field(default_factory=FakeDatabase)
    clock: FakeClock = field(default_factory=FakeClock)
    mailer: FakeMailer = field(default_factory=FakeMailer)

    def __post_init__(self) -> None:
        ids = RandomIdGenerator()
        self.box = FakeSecretBox()
        self.events = FakeEventStore(self.db)
        self.tenancy = TenancyOperations(
            uow=self.uow,
            usage=self.events,
            ids=ids,
            secret_box=self.box,
            clock=self.clock,
            region="eu-1",
        )
        access = Access(self.uow)
        self.orgs = Organisations(
            uow=self.uow, access=access, tenancy=self.tenancy, clock=self.clock, ids=ids
        )
        self.invitations = Invitations(
            uow=self.uow,
            access=access,
            ids=ids,
            clock=self.clock,
            mailer=self.mailer,
            dashboard_url=DASHBOARD_URL,
        )
        self.keys = ApiKeys(uow=self.uow, access=access, ids=ids, clock=self.clock)
        self.apps = AppManagement(
            access=access, tenancy=self.tenancy, events=self.events, clock=self.clock
        )

    def uow(self) -> FakeTenancyUnitOfWork:
        return FakeTenancyUnitOfWork(self.db)

    def user(self, email: str, name: str | None = None) -> UserPrincipal:
        user = User(
            f"usr_{len(self.db.users):020d}",
            email,
            name or email.partition("@")[0].title(),
            self.clock.now(),
        )
        self.db.users[user.id] = user
        return UserPrincipal(user=user, session=None)

    def join(self, org: Org, who: UserPrincipal, role: Role) -> None:
        membership = Membership(org.id, who.user.id, role, self.clock.now())
        self.db.memberships[(org.id, who.user.id)] = membership

    def role(self, org: Org, who: UserPrincipal) -> Role | None:
        membership = self.db.memberships.get((org.id, who.user.id))
        return None if membership is None else membership.role

    def key(self, org: Org, *scopes: ApiKeyScope) -> KeyPrincipal:
        key = ApiKey(
            id=f"key_{len(self.db.api_keys):020d}",
            org_id=org.id,
            name="CI",
            scopes=scopes or (ApiKeyScope.MANAGE, ApiKeyScope.ANALYTICS_READ),
            token_hash=f"{len(self.db.api_keys):064x}",
            hint="tkk_abcd",
            created_by=None,
            created_at=self.clock.now(),
        )
        self.db.api_keys[key.id] = key
        return KeyPrincipal(key=key)

    async def org_of(self, owner: UserPrincipal, name: str = "Acme") -> Org:
        return (await self.orgs.create(owner, name)).org

    async def team(self) -> Team:
        """An org with one member of each role."""
        owner = self.user("owner@example.com")
        org = await self.org_of(owner)
        team = Team(
            org,
            owner,
            self.user("admin@example.com"),
            self.user("member@example.com"),
            self.user("observer@example.com"),
        )
        self.join(org, team.admin, Role.ADMIN)
        self.join(org, team.member, Role.MEMBER)
        self.join(org, team.observer, Role.OBSERVER)
        return team

    def invite_token(self) -> str:
        url = first_link(self.mailer.sent[-1].text)
        return parse_qs(urlsplit(url).query)["token"][0]

    async def ingest(self, app: App, count: int) -> None:
        """Store `count` accepted events of the app now, as ingestion does."""
        directory = FakeIngestDirectory(self.db, secret_box=self.box, clock=self.clock)
        target = await directory.find_ingest_app(app.org_id, app.id)
        assert target is not None
        now = self.clock.now()
        events = []
        for i in range(count):
            parsed = parse_event(json.dumps(sdk_event(now)).encode(), i, now=now, oldest=None)
            assert isinstance(parsed, EventSchema)
            events.append(parsed)
        assert await self.events.store(target, events, now) == count

    def stored_events(self, app: App) -> int:
        return len(self.events.stored(app.id))


@dataclass
class Team:
    org: Org
    owner: UserPrincipal
    admin: UserPrincipal
    member: UserPrincipal
    observer: UserPrincipal


# === Organisations ===============================================================================


async def test_creating_an_org_makes_the_caller_its_owner_on_the_free_plan() -> None:
    w = World()
    alice = w.user("alice@example.com")
    view = await w.orgs.create(alice, "  Acme   Corp ")
    assert view.role is Role.OWNER
    assert (view.org.name, view.org.plan) == ("Acme Corp", Plan.FREE)
    assert w.db.orgs == {view.org.id: view.org}
    assert w.role(view.org, alice) is Role.OWNER


@pytest.mark.parametrize("caller", ["key", "operator"])
async def test_only_a_signed_in_user_creates_an_org(caller: str) -> None:
    w = World()
    org = await w.org_of(w.user("alice@example.com"))
    principal = w.key(org) if caller == "key" else OperatorPrincipal()
    with pytest.raises(Forbidden):
        await w.orgs.create(principal, "Another")
    assert list(w.db.orgs) == [org.id]


async def test_mine_lists_the_users_orgs_with_their_roles_and_nothing_else() -> None:
    w = World()
    alice, bob = w.user("alice@example.com"), w.user("bob@example.com")
    acme = await w.org_of(alice, "Acme")
    w.clock.advance(1)
    globex = await w.org_of(bob, "Globex")
    w.clock.advance(1)
    await w.org_of(bob, "Initech")
    w.join(globex, alice, Role.OBSERVER)

    views = await w.orgs.mine(alice)
    assert [(v.org.id, v.role) for v in views] == [
        (acme.id, Role.OWNER),
        (globex.id, Role.OBSERVER),
    ]


async def test_mine_for_a_key_is_its_own_org_without_a_role() -> None:
    w = World()
    alice = w.user("alice@example.com")
    acme = await w.org_of(alice, "Acme")
    await w.org_of(alice, "Globex")
    views = await w.orgs.mine(w.key(acme, ApiKeyScope.ANALYTICS_READ))
    assert [(v.org.id, v.role) for v in views] == [(acme.id, None)]


async def test_mine_for_an_operator_is_every_org_without_a_role() -> None:
    w = World()
    acme = await w.org_of(w.user("alice@example.com"), "Acme")
    w.clock.advance(1)
    globex = await w.org_of(w.user("bob@example.com"), "Globex")
    views = await w.orgs.mine(OperatorPrincipal())
    assert [(v.org.id, v.role) for v in views] == [(acme.id, None), (globex.id, None)]


async def test_get_of_another_users_org_is_not_found() -> None:
    w = World()
    acme = await w.org_of(w.user("alice@example.com"))
    with pytest.raises(NotFound):
        await w.orgs.get(w.user("mallory@example.com"), acme.id)


async def test_an_admin_renames_the_org() -> None:
    w = World()
    t = await w.team()
    view = await w.orgs.rename(t.admin, t.org.id, "  Acme   Inc ")
    assert (view.org.name, view.role) == ("Acme Inc", Role.ADMIN)
    assert w.db.orgs[t.org.id].name == "Acme Inc"


@pytest.mark.parametrize("who", ["member", "observer"])
async def test_renaming_needs_org_write(who: str) -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.orgs.rename(getattr(t, who), t.org.id, "Hijacked")
    assert w.db.orgs[t.org.id].name == "Acme"


async def test_rename_to_an_empty_name_is_refused() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(ValidationFailed):
        await w.orgs.rename(t.owner, t.org.id, "   ")
    assert w.db.orgs[t.org.id].name == "Acme"


async def test_members_lists_every_member_with_their_user_and_role() -> None:
    w = World()
    t = await w.team()
    members = await w.orgs.members(t.member, t.org.id)
    assert {(m.user.email, m.membership.role) for m in members} == {
        ("owner@example.com", Role.OWNER),
        ("admin@example.com", Role.ADMIN),
        ("member@example.com", Role.MEMBER),
        ("observer@example.com", Role.OBSERVER),
    }


async def test_an_observer_cannot_list_members() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.orgs.members(t.observer, t.org.id)


# --- change_role ---------------------------------------------------------------------------------


async def test_an_admin_changes_a_members_role() -> None:
    w = World()
    t = await w.team()
    changed = await w.orgs.change_role(t.admin, t.org.id, t.member.user.id, Role.ADMIN)
    assert changed.membership.role is Role.ADMIN
    assert changed.user == t.member.user
    assert w.role(t.org, t.member) is Role.ADMIN


async def test_an_admin_cannot_make_an_owner() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden, match="Only an owner"):
        await w.orgs.change_role(t.admin, t.org.id, t.member.user.id, Role.OWNER)
    with pytest.raises(Forbidden, match="Only an owner"):
        await w.orgs.change_role(t.admin, t.org.id, t.admin.user.id, Role.OWNER)
    assert (w.role(t.org, t.member), w.role(t.org, t.admin)) == (Role.MEMBER, Role.ADMIN)


async def test_an_admin_cannot_unmake_an_owner() -> None:
    w = World()
    t = await w.team()
    second_owner = w.user("owner2@example.com")
    w.join(t.org, second_owner, Role.OWNER)
    with pytest.raises(Forbidden, match="Only an owner"):
        await w.orgs.change_role(t.admin, t.org.id, t.owner.user.id, Role.MEMBER)
    assert w.role(t.org, t.owner) is Role.OWNER


async def test_an_owner_makes_another_owner_who_may_then_unmake_the_first() -> None:
    w = World()
    t = await w.team()
    await w.orgs.change_role(t.owner, t.org.id, t.admin.user.id, Role.OWNER)
    assert w.role(t.org, t.admin) is Role.OWNER
    await w.orgs.change_role(t.admin, t.org.id, t.owner.user.id, Role.OBSERVER)
    assert w.role(t.org, t.owner) is Role.OBSERVER


async def test_the_last_owner_cannot_step_down() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Conflict, match="at least one owner"):
        await w.orgs.change_role(t.owner, t.org.id, t.owner.user.id, Role.ADMIN)
    assert w.role(t.org, t.owner) is Role.OWNER


async def test_an_operator_may_make_owners_but_keeps_the_last_owner() -> None:
    w = World()
    t = await w.team()
    operator = OperatorPrincipal()
    with pytest.raises(Conflict):
        await w.orgs.change_role(operator, t.org.id, t.owner.user.id, Role.MEMBER)
    await w.orgs.change_role(operator, t.org.id, t.member.user.id, Role.OWNER)
    await w.orgs.change_role(operator, t.org.id, t.owner.user.id, Role.MEMBER)
    assert (w.role(t.org, t.member), w.role(t.org, t.owner)) == (Role.OWNER, Role.MEMBER)


@pytest.mark.parametrize("who", ["member", "observer"])
async def test_changing_roles_needs_members_write(who: str) -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.orgs.change_role(getattr(t, who), t.org.id, t.observer.user.id, Role.ADMIN)
    assert w.role(t.org, t.observer) is Role.OBSERVER


async def test_a_key_cannot_change_roles() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.orgs.change_role(w.key(t.org), t.org.id, t.member.user.id, Role.ADMIN)


async def test_changing_the_role_of_a_non_member_is_not_found() -> None:
    w = World()
    t = await w.team()
    outsider = w.user("outsider@example.com")
    with pytest.raises(NotFound):
        await w.orgs.change_role(t.owner, t.org.id, outsider.user.id, Role.ADMIN)
    assert w.role(t.org, outsider) is None


# --- remove_member -------------------------------------------------------------------------------


async def test_an_admin_removes_a_member() -> None:
    w = World()
    t = await w.team()
    await w.orgs.remove_member(t.admin, t.org.id, t.member.user.id)
    assert w.role(t.org, t.member) is None
    assert t.member.user.id in w.db.users  # the user stays, only the membership goes


async def test_an_admin_cannot_remove_an_owner() -> None:
    w = World()
    t = await w.team()
    w.join(t.org, w.user("owner2@example.com"), Role.OWNER)
    with pytest.raises(Forbidden, match="Only an owner"):
        await w.orgs.remove_member(t.admin, t.org.id, t.owner.user.id)
    assert w.role(t.org, t.owner) is Role.OWNER


@pytest.mark.parametrize("who", ["admin", "member", "observer"])
async def test_anyone_may_leave(who: str) -> None:
    w = World()
    t = await w.team()
    leaver = getattr(t, who)
    await w.orgs.remove_member(leaver, t.org.id, leaver.user.id)
    assert w.role(t.org, leaver) is None


@pytest.mark.parametrize("who", ["member", "observer"])
async def test_removing_someone_else_needs_members_write(who: str) -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.orgs.remove_member(getattr(t, who), t.org.id, t.admin.user.id)
    assert w.role(t.org, t.admin) is Role.ADMIN


async def test_the_last_owner_cannot_leave_but_one_of_two_owners_can() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Conflict, match="at least one owner"):
        await w.orgs.remove_member(t.owner, t.org.id, t.owner.user.id)
    assert w.role(t.org, t.owner) is Role.OWNER

    w.join(t.org, w.user("owner2@example.com"), Role.OWNER)
    await w.orgs.remove_member(t.owner, t.org.id, t.owner.user.id)
    assert w.role(t.org, t.owner) is None


async def test_a_key_cannot_remove_members() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.orgs.remove_member(w.key(t.org), t.org.id, t.member.user.id)
    assert w.role(t.org, t.member) is Role.MEMBER


async def test_removing_someone_who_is_not_a_member_is_not_found() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(NotFound):
        await w.orgs.remove_member(t.owner, t.org.id, w.user("x@example.com").user.id)


async def test_an_outsider_cannot_remove_anyone_and_learns_nothing() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(NotFound):
        await w.orgs.remove_member(w.user("x@example.com"), t.org.id, t.member.user.id)
    assert w.role(t.org, t.member) is Role.MEMBER


# --- add_member ----------------------------------------------------------------------------------


async def test_an_operator_adds_a_new_person_creating_the_user_with_the_lowercased_email() -> None:
    w = World()
    t = await w.team()
    added = await w.orgs.add_member(OperatorPrincipal(), t.org.id, " Carol@Example.com", Role.ADMIN)
    assert (added.user.email, added.user.display_name) == ("carol@example.com", "carol")
    assert w.db.users[added.user.id] == added.user
    assert w.db.memberships[(t.org.id, added.user.id)].role is Role.ADMIN


async def test_an_operator_adds_an_existing_user_without_making_another() -> None:
    w = World()
    t = await w.team()
    carol = w.user("carol@example.com")
    users = len(w.db.users)
    added = await w.orgs.add_member(OperatorPrincipal(), t.org.id, "CAROL@example.com", Role.MEMBER)
    assert added.user == carol.user
    assert len(w.db.users) == users
    assert w.role(t.org, carol) is Role.MEMBER


async def test_adding_someone_who_is_already_a_member_is_a_conflict() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Conflict):
        await w.orgs.add_member(OperatorPrincipal(), t.org.id, "member@example.com", Role.ADMIN)
    assert w.role(t.org, t.member) is Role.MEMBER


async def test_adding_an_invalid_address_is_a_validation_error() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(ValidationFailed):
        await w.orgs.add_member(OperatorPrincipal(), t.org.id, "carol", Role.MEMBER)


@pytest.mark.parametrize("who", ["owner", "admin"])
async def test_only_an_operator_adds_members_directly(who: str) -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden, match="Invite"):
        await w.orgs.add_member(getattr(t, who), t.org.id, "carol@example.com", Role.MEMBER)
    assert all(u.email != "carol@example.com" for u in w.db.users.values())


# === Invitations =================================================================================


async def test_an_invite_is_stored_hashed_and_mailed_with_a_single_use_link() -> None:
    w = World()
    t = await w.team()
    invite = await w.invitations.invite(t.admin, t.org.id, " Carol@Example.COM ", Role.MEMBER)

    now = w.clock.now()
    assert invite.id.startswith("inv_")
    assert (invite.org_id, invite.email, invite.role) == (
        t.org.id,
        "carol@example.com",
        Role.MEMBER,
    )
    assert (invite.invited_by, invite.created_at) == (t.admin.user.id, now)
    assert invite.expires_at == now + timedelta(days=7)
    assert invite.status(now) is InviteStatus.PENDING
    assert w.db.invites == {invite.id: invite}

    [mail] = w.mailer.sent
    assert (mail.to, mail.kind) == ("carol@example.com", "invite")
    assert "Acme" in mail.subject
    assert "admin@example.com" in mail.text
    assert "as member" in mail.text
    assert first_link(mail.text).startswith(f"{DASHBOARD_URL}/invites/accept?token=")
    token = w.invite_token()
    assert invite.token_hash == sha256(token)
    assert token not in repr(w.db)


async def test_an_operator_invites_in_its_own_name() -> None:
    w = World()
    t = await w.team()
    invite = await w.invitations.invite(
        OperatorPrincipal("the ops team"), t.org.id, "carol@example.com", Role.OBSERVER
    )
    assert invite.invited_by == "operator"
    assert w.mailer.sent[-1].text.startswith("the ops team invited you")


async def test_nobody_is_invited_as_owner() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(ValidationFailed, match="role"):
        await w.invitations.invite(t.owner, t.org.id, "carol@example.com", Role.OWNER)
    assert (w.db.invites, w.mailer.sent) == ({}, [])


async def test_an_invite_to_an_invalid_address_is_a_validation_error() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(ValidationFailed) as raised:
        await w.invitations.invite(t.owner, t.org.id, "carol", Role.MEMBER)
    assert raised.value.details == {"field": "email"}
    assert (w.db.invites, w.mailer.sent) == ({}, [])


@pytest.mark.parametrize("who", ["member", "observer"])
async def test_inviting_needs_members_write(who: str) -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.invitations.invite(getattr(t, who), t.org.id, "carol@example.com", Role.OBSERVER)
    assert (w.db.invites, w.mailer.sent) == ({}, [])


async def test_inviting_into_another_org_is_not_found() -> None:
    w = World()
    t = await w.team()
    stranger = w.user("mallory@example.com")
    await w.org_of(stranger, "Evil")
    with pytest.raises(NotFound):
        await w.invitations.invite(stranger, t.org.id, "carol@example.com", Role.ADMIN)
    assert w.mailer.sent == []


async def test_inviting_a_member_again_is_a_conflict() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Conflict, match="already a member"):
        await w.invitations.invite(t.owner, t.org.id, "MEMBER@example.com", Role.ADMIN)
    assert (w.db.invites, w.mailer.sent) == ({}, [])


async def test_inviting_again_revokes_the_pending_invite_and_its_link() -> None:
    w = World()
    t = await w.team()
    first = await w.invitations.invite(t.owner, t.org.id, "carol@example.com", Role.OBSERVER)
    first_token = w.invite_token()
    other = await w.invitations.invite(t.owner, t.org.id, "dave@example.com", Role.OBSERVER)
    w.clock.advance(60)
    second = await w.invitations.invite(t.owner, t.org.id, "Carol@example.com", Role.MEMBER)
    second_token = w.invite_token()

    now = w.clock.now()
    assert w.db.invites[first.id].revoked_at == now
    assert w.db.invites[other.id].status(now) is InviteStatus.PENDING
    assert w.db.invites[second.id].status(now) is InviteStatus.PENDING

    carol = w.user("carol@example.com")
    with pytest.raises(InvalidLink):
        await w.invitations.accept(carol, first_token)
    membership = await w.invitations.accept(carol, second_token)
    assert membership.role is Role.MEMBER


async def test_accepting_an_invite_makes_the_user_a_member_with_the_invited_role() -> None:
    w = World()
    t = await w.team()
    invite = await w.invitations.invite(t.admin, t.org.id, "carol@example.com", Role.OBSERVER)
    token = w.invite_token()
    carol = w.user("carol@example.com")
    w.clock.advance(3600)

    membership = await w.invitations.accept(carol, token)

    assert membership == Membership(t.org.id, carol.user.id, Role.OBSERVER, w.clock.now())
    assert w.db.memberships[(t.org.id, carol.user.id)] == membership
    assert w.db.invites[invite.id].accepted_at == w.clock.now()
    assert [v.org.id for v in await w.orgs.mine(carol)] == [t.org.id]


async def test_an_invite_for_another_address_is_forbidden_and_stays_open() -> None:
    w = World()
    t = await w.team()
    invite = await w.invitations.invite(t.admin, t.org.id, "carol@example.com", Role.ADMIN)
    token = w.invite_token()
    mallory = w.user("mallory@example.com")

    with pytest.raises(Forbidden, match=r"carol@example\.com"):
        await w.invitations.accept(mallory, token)
    with pytest.raises(Forbidden):
        await w.invitations.decline(mallory, token)

    assert w.role(t.org, mallory) is None
    assert w.db.invites[invite.id].status(w.clock.now()) is InviteStatus.PENDING
    await w.invitations.accept(w.user("carol@example.com"), token)


async def test_an_invite_is_accepted_only_once() -> None:
    w = World()
    t = await w.team()
    await w.invitations.invite(t.admin, t.org.id, "carol@example.com", Role.MEMBER)
    token = w.invite_token()
    carol = w.user("carol@example.com")
    await w.invitations.accept(carol, token)
    await w.orgs.remove_member(carol, t.org.id, carol.user.id)
    with pytest.raises(InvalidLink):
        await w.invitations.accept(carol, token)
    assert w.role(t.org, carol) is None


@pytest.mark.parametrize(("seconds", "works"), [(7 * 86400 - 1, True), (7 * 86400, False)])
async def test_an_invite_expires_after_7_days(seconds: int, works: bool) -> None:
    w = World()
    t = await w.team()
    await w.invitations.invite(t.admin, t.org.id, "carol@example.com", Role.MEMBER)
    token = w.invite_token()
    carol = w.user("carol@example.com")
    w.clock.advance(seconds)
    if works:
        await w.invitations.accept(carol, token)
        assert w.role(t.org, carol) is Role.MEMBER
    else:
        with pytest.raises(InvalidLink):
            await w.invitations.accept(carol, token)
        assert w.role(t.org, carol) is None


async def test_an_unknown_invite_token_is_an_invalid_link() -> None:
    w = World()
    with pytest.raises(InvalidLink):
        await w.invitations.accept(w.user("carol@example.com"), "no-such-token")


async def test_declining_closes_the_invite_without_a_membership() -> None:
    w = World()
    t = await w.team()
    invite = await w.invitations.invite(t.admin, t.org.id, "carol@example.com", Role.MEMBER)
    token = w.invite_token()
    carol = w.user("carol@example.com")

    await w.invitations.decline(carol, token)

    assert w.db.invites[invite.id].declined_at == w.clock.now()
    assert w.role(t.org, carol) is None
    with pytest.raises(InvalidLink):
        await w.invitations.accept(carol, token)
    with pytest.raises(InvalidLink):
        await w.invitations.decline(carol, token)


async def test_a_key_cannot_accept_an_invite() -> None:
    w = World()
    t = await w.team()
    await w.invitations.invite(t.admin, t.org.id, "carol@example.com", Role.MEMBER)
    with pytest.raises(Forbidden):
        await w.invitations.accept(w.key(t.org), w.invite_token())


async def test_a_revoked_invite_link_no_longer_works() -> None:
    w = World()
    t = await w.team()
    invite = await w.invitations.invite(t.admin, t.org.id, "carol@example.com", Role.MEMBER)
    token = w.invite_token()

    await w.invitations.revoke(t.admin, t.org.id, invite.id)

    assert w.db.invites[invite.id].revoked_at == w.clock.now()
    with pytest.raises(InvalidLink):
        await w.invitations.accept(w.user("carol@example.com"), token)
    with pytest.raises(Conflict):
        await w.invitations.revoke(t.admin, t.org.id, invite.id)


async def test_revoking_another_orgs_invite_is_not_found_and_leaves_it_open() -> None:
    w = World()
    t = await w.team()
    theirs = await w.invitations.invite(t.owner, t.org.id, "carol@example.com", Role.MEMBER)
    mallory = w.user("mallory@example.com")
    evil = await w.org_of(mallory, "Evil")

    with pytest.raises(NotFound):
        await w.invitations.revoke(mallory, evil.id, theirs.id)
    with pytest.raises(NotFound):
        await w.invitations.revoke(mallory, t.org.id, theirs.id)
    assert w.db.invites[theirs.id].status(w.clock.now()) is InviteStatus.PENDING


async def test_invites_of_an_org_are_listed_to_its_members_only() -> None:
    w = World()
    t = await w.team()
    invite = await w.invitations.invite(t.owner, t.org.id, "carol@example.com", Role.MEMBER)
    listed: list[Invite] = await w.invitations.for_org(t.member, t.org.id)
    assert [i.id for i in listed] == [invite.id]
    with pytest.raises(NotFound):
        await w.invitations.for_org(w.user("mallory@example.com"), t.org.id)


# === ApiKeys =====================================================================================


async def test_a_new_key_is_shown_once_with_its_tkk_prefix_and_stored_as_a_hash() -> None:
    w = World()
    t = await w.team()
    issued = await w.keys.create(
        t.admin,
        t.org.id,
        "  CI   pipeline ",
        [ApiKeyScope.ANALYTICS_READ, ApiKeyScope.MANAGE, ApiKeyScope.ANALYTICS_READ],
    )

    secret, key = issued.secret, issued.key
    assert secret.startswith("tkk_")
    assert len(secret) > 40
    assert key.id.startswith("key_")
    assert key.hint == secret[:8]
    assert key.token_hash == sha256(secret)
    assert key.scopes == (ApiKeyScope.ANALYTICS_READ, ApiKeyScope.MANAGE)  # deduplicated, in order
    assert (key.org_id, key.name, key.created_by) == (t.org.id, "CI pipeline", t.admin.user.id)
    assert (key.created_at, key.last_used_at, key.revoked_at) == (w.clock.now(), None, None)
    assert w.db.api_keys == {key.id: key}
    assert secret not in repr(w.db)


async def test_every_key_gets_its_own_secret() -> None:
    w = World()
    t = await w.team()
    first = await w.keys.create(t.owner, t.org.id, "one", [ApiKeyScope.MANAGE])
    second = await w.keys.create(t.owner, t.org.id, "two", [ApiKeyScope.MANAGE])
    assert first.secret != second.secret
    assert first.key.id != second.key.id


async def test_an_operators_key_has_no_creator() -> None:
    w = World()
    t = await w.team()
    issued = await w.keys.create(OperatorPrincipal(), t.org.id, "ops", [ApiKeyScope.MANAGE])
    assert issued.key.created_by is None


async def test_a_key_needs_at_least_one_scope() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(ValidationFailed) as raised:
        await w.keys.create(t.owner, t.org.id, "CI", [])
    assert raised.value.details == {"field": "scopes"}
    assert w.db.api_keys == {}


@pytest.mark.parametrize("who", ["member", "observer"])
async def test_managing_keys_needs_an_admin(who: str) -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.keys.create(getattr(t, who), t.org.id, "CI", [ApiKeyScope.ANALYTICS_READ])
    with pytest.raises(Forbidden):
        await w.keys.for_org(getattr(t, who), t.org.id)
    assert w.db.api_keys == {}


async def test_a_key_cannot_make_keys() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.keys.create(w.key(t.org), t.org.id, "escalate", [ApiKeyScope.MANAGE])


async def test_keys_are_listed_newest_first_with_revoked_ones() -> None:
    w = World()
    t = await w.team()
    old = await w.keys.create(t.owner, t.org.id, "old", [ApiKeyScope.MANAGE])
    w.clock.advance(1)
    new = await w.keys.create(t.owner, t.org.id, "new", [ApiKeyScope.MANAGE])
    await w.keys.revoke(t.owner, t.org.id, old.key.id)
    listed = await w.keys.for_org(t.admin, t.org.id)
    assert [k.id for k in listed] == [new.key.id, old.key.id]
    assert listed[1].revoked_at == w.clock.now()


async def test_revoking_another_orgs_key_is_not_found_and_leaves_it_alone() -> None:
    w = World()
    t = await w.team()
    theirs = await w.keys.create(t.owner, t.org.id, "CI", [ApiKeyScope.MANAGE])
    mallory = w.user("mallory@example.com")
    evil = await w.org_of(mallory, "Evil")

    with pytest.raises(NotFound):
        await w.keys.revoke(mallory, evil.id, theirs.key.id)
    with pytest.raises(NotFound):
        await w.keys.revoke(t.owner, t.org.id, "key_unknown")
    assert w.db.api_keys[theirs.key.id].revoked_at is None


# === AppManagement ===============================================================================


async def test_a_member_creates_an_app_that_starts_in_staging() -> None:
    w = World()
    t = await w.team()
    created = await w.apps.create(t.member, t.org.id, "My CLI")
    assert (created.app.org_id, created.app.environment) == (t.org.id, Environment.STAGING)
    assert created.issued.token.startswith("tk_")
    assert [a.id for a in await w.apps.for_org(t.observer, t.org.id)] == [created.app.id]


async def test_an_observer_cannot_create_apps() -> None:
    w = World()
    t = await w.team()
    with pytest.raises(Forbidden):
        await w.apps.create(t.observer, t.org.id, "CLI")
    assert w.db.apps == {}


async def test_promote_needs_the_apps_name_as_confirmation_and_keeps_staging_otherwise() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "My CLI")).app
    await w.ingest(app, 3)

    for wrong in ["", "my cli", "My CLI ", "other"]:
        with pytest.raises(ValidationFailed) as raised:
            await w.apps.promote(t.member, app.id, wrong)
        assert raised.value.details == {"field": "confirm"}
    assert w.db.apps[app.id].environment is Environment.STAGING
    assert w.stored_events(app) == 3


async def test_promote_moves_to_production_and_deletes_only_this_apps_staging_events() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "My CLI")).app
    sibling = (await w.apps.create(t.member, t.org.id, "Other")).app
    await w.ingest(app, 3)
    await w.ingest(sibling, 2)

    promoted, deleted = await w.apps.promote(t.member, app.id, "My CLI")

    assert deleted == 3
    assert promoted.environment is Environment.PRODUCTION
    assert w.db.apps[app.id].environment is Environment.PRODUCTION
    assert w.stored_events(app) == 0
    assert w.stored_events(sibling) == 2


async def test_promoting_a_production_app_is_a_conflict() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    await w.apps.promote(t.member, app.id, "CLI")
    await w.ingest(app, 2)
    with pytest.raises(Conflict):
        await w.apps.promote(t.member, app.id, "CLI")
    assert w.stored_events(app) == 2


async def test_delete_needs_the_apps_name_as_confirmation() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    await w.ingest(app, 2)
    with pytest.raises(ValidationFailed):
        await w.apps.delete(t.member, app.id, "cli")
    assert app.id in w.db.apps
    assert w.stored_events(app) == 2


async def test_delete_removes_the_app_its_credentials_and_events() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    await w.ingest(app, 2)
    await w.apps.delete(t.admin, app.id, "CLI")
    assert app.id not in w.db.apps
    assert w.stored_events(app) == 0
    assert not any(c.credential.app_id == app.id for c in w.db.credentials.values())
    with pytest.raises(NotFound):
        await w.apps.get(t.admin, app.id)


async def test_another_orgs_app_cannot_be_promoted_or_deleted() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    mallory = w.user("mallory@example.com")
    await w.org_of(mallory, "Evil")
    with pytest.raises(NotFound):
        await w.apps.promote(mallory, app.id, "CLI")
    with pytest.raises(NotFound):
        await w.apps.delete(mallory, app.id, "CLI")
    with pytest.raises(NotFound):
        await w.apps.delete(mallory, MISSING_APP, "CLI")
    assert w.db.apps[app.id].environment is Environment.STAGING


async def test_a_staging_apps_usage_is_counted_against_1000_a_month() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    await w.ingest(app, 7)
    expected = Allowance(MONTH, 7, 1_000)
    assert await w.apps.app_usage(t.observer, app.id) == expected
    assert await w.apps.staging_usage(t.observer, app.id) == expected
    assert expected.events_remaining == 993


async def test_a_production_apps_usage_is_counted_against_the_orgs_plan() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    await w.ingest(app, 4)  # staging events, deleted by the promotion
    await w.apps.promote(t.member, app.id, "CLI")
    await w.ingest(app, 5)
    allowance = await w.apps.app_usage(t.observer, app.id)
    assert allowance == Allowance(MONTH, 5, 10_000, counted=5)
    assert allowance.events_remaining == 9_995


async def test_an_unlimited_plan_has_no_remaining_count() -> None:
    w = World()
    t = await w.team()
    await w.tenancy.set_plan(t.org.id, Plan.ENTERPRISE)
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    await w.apps.promote(t.member, app.id, "CLI")
    await w.ingest(app, 5)
    allowance = await w.apps.app_usage(t.member, app.id)
    assert (allowance.events_limit, allowance.events_remaining) == (None, None)


async def test_org_usage_counts_production_apps_against_the_plan_and_lists_every_app() -> None:
    w = World()
    t = await w.team()
    await w.tenancy.set_plan(t.org.id, Plan.PRO)
    prod = (await w.apps.create(t.member, t.org.id, "Prod")).app
    staging = (await w.apps.create(t.member, t.org.id, "Staging")).app
    await w.apps.promote(t.member, prod.id, "Prod")
    await w.ingest(prod, 6)
    await w.ingest(staging, 4)

    usage = await w.apps.org_usage(t.observer, t.org.id)

    assert usage.allowance == Allowance(MONTH, 6, 100_000)
    assert sorted(usage.apps, key=lambda u: u.app_id) == sorted(
        [
            AppUsage(t.org.id, prod.id, Environment.PRODUCTION, MONTH, 6),
            AppUsage(t.org.id, staging.id, Environment.STAGING, MONTH, 4),
        ],
        key=lambda u: u.app_id,
    )


def test_the_remaining_allowance_never_goes_below_zero() -> None:
    assert Allowance(MONTH, 1_200, 1_000).events_remaining == 0


async def test_usage_of_another_org_or_its_app_is_not_found() -> None:
    w = World()
    t = await w.team()
    app = (await w.apps.create(t.member, t.org.id, "CLI")).app
    mallory = w.user("mallory@example.com")
    with pytest.raises(NotFound):
        await w.apps.org_usage(mallory, t.org.id)
    with pytest.raises(NotFound):
        await w.apps.app_usage(mallory, app.id)
    with pytest.raises(NotFound):
        await w.apps.staging_usage(mallory, app.id)


async def test_a_production_apps_remaining_allowance_counts_its_sibling_production_apps() -> None:
    w = World()
    t = await w.team()
    await w.tenancy.set_plan(t.org.id, Plan.ENTERPRISE, custom_events_per_month=100)
    one = (await w.apps.create(t.member, t.org.id, "One")).app
    two = (await w.apps.create(t.member, t.org.id, "Two")).app
    for app, name in ((one, "One"), (two, "Two")):
        await w.apps.promote(t.member, app.id, name)
    await w.ingest(one, 90)
    await w.ingest(two, 5)

    org_left = (await w.apps.org_usage(t.owner, t.org.id)).allowance.events_remaining
    assert org_left == 5
    assert (await w.apps.app_usage(t.owner, two.id)).events_remaining == org_left
