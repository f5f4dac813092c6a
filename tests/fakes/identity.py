"""In-memory fakes of the identity repositories (inside `FakeTenancyUnitOfWork`, tests/fakes/
storage.py) and of the development mail outbox.

Like the SQL adapters they refuse what the database would: a duplicate that the port documents
raises Conflict, any other duplicate or a row pointing at a missing org or user is a bug and
raises ValueError (where SQL raises an IntegrityError). They pass the same contract tests
(tests/integration/test_identity_contract.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tkcloud_application.ports.identity import MailMessage, SentMail
from tkcloud_application.ports.system import Clock
from tkcloud_domain.errors import Conflict, ServiceUnavailable
from tkcloud_domain.identity import (
    ApiKey,
    Invite,
    MagicLink,
    Membership,
    OAuthState,
    Role,
    Session,
    User,
)
from tkcloud_domain.tenancy import Org

if TYPE_CHECKING:  # storage.py imports this module to build its unit of work
    from tests.fakes.storage import LockRow, Staged

_INVITE_OUTCOMES = {"accepted": "accepted_at", "declined": "declined_at", "revoked": "revoked_at"}


def _refuse_duplicate(rows: Iterable[Any], what: str, taken: Callable[[Any], bool]) -> None:
    if any(taken(row) for row in rows):
        raise ValueError(f"{what} exists")


def _require(row: object | None, what: str) -> None:
    if row is None:
        raise ValueError(f"{what} does not exist")


class FakeUserRepository:
    def __init__(self, users: Staged[str, User]) -> None:
        self._users = users

    async def add(self, user: User) -> None:
        if any(
            u.id == user.id
            or u.email == user.email
            or (user.github_id is not None and u.github_id == user.github_id)
            for u in self._users.rows()
        ):
            raise Conflict(f"user id {user.id!r}, its email or its GitHub account is taken")
        self._users.put(user.id, user)

    async def get(self, user_id: str) -> User | None:
        return self._users.get(user_id)

    async def by_email(self, email: str) -> User | None:
        return next((u for u in self._users.rows() if u.email == email), None)

    async def by_github_id(self, github_id: int) -> User | None:
        return next((u for u in self._users.rows() if u.github_id == github_id), None)

    async def link_github(self, user_id: str, github_id: int, login: str) -> None:
        user = self._users.get(user_id)
        if user is None:
            return
        if any(u.github_id == github_id and u.id != user_id for u in self._users.rows()):
            raise Conflict(f"GitHub account {github_id} is linked to another user")
        linked = dataclasses.replace(user, github_id=github_id, github_login=login)
        self._users.put(user_id, linked)


class FakeMembershipRepository:
    def __init__(
        self,
        memberships: Staged[tuple[str, str], Membership],
        orgs: Staged[str, Org],
        users: Staged[str, User],
    ) -> None:
        self._memberships = memberships
        self._orgs = orgs
        self._users = users

    async def add(self, membership: Membership) -> None:
        key = (membership.org_id, membership.user_id)
        if self._memberships.get(key) is not None:
            raise Conflict(
                f"user {membership.user_id!r} is already a member of {membership.org_id!r}"
            )
        _require(self._orgs.get(membership.org_id), f"org {membership.org_id!r}")
        _require(self._users.get(membership.user_id), f"user {membership.user_id!r}")
        self._memberships.put(key, membership)

    async def get(self, org_id: str, user_id: str) -> Membership | None:
        return self._memberships.get((org_id, user_id))

    async def list_for_org(self, org_id: str) -> list[Membership]:
        found = [m for m in self._memberships.rows() if m.org_id == org_id]
        return sorted(found, key=lambda m: (m.created_at, m.user_id))

    async def list_for_user(self, user_id: str) -> list[Membership]:
        found = [m for m in self._memberships.rows() if m.user_id == user_id]
        return sorted(found, key=lambda m: (m.created_at, m.org_id))

    async def set_role(self, org_id: str, user_id: str, role: Role) -> None:
        membership = self._memberships.get((org_id, user_id))
        if membership is not None:
            self._memberships.put((org_id, user_id), dataclasses.replace(membership, role=role))

    async def remove(self, org_id: str, user_id: str) -> None:
        self._memberships.delete((org_id, user_id))


class FakeSessionRepository:
    def __init__(self, sessions: Staged[str, Session], users: Staged[str, User]) -> None:
        self._sessions = sessions
        self._users = users

    async def add(self, session: Session) -> None:
        _refuse_duplicate(
            self._sessions.rows(),
            f"session {session.id!r} or its token",
            lambda s: s.id == session.id or s.token_hash == session.token_hash,
        )
        _require(self._users.get(session.user_id), f"user {session.user_id!r}")
        self._sessions.put(session.id, session)

    async def by_token_hash(self, token_hash: str) -> Session | None:
        return next((s for s in self._sessions.rows() if s.token_hash == token_hash), None)

    async def revoke(self, session_id: str, at: datetime) -> None:
        session = self._sessions.get(session_id)
        if session is not None and session.revoked_at is None:
            self._sessions.put(session_id, dataclasses.replace(session, revoked_at=at))

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        live = [s for s in self._sessions.rows() if s.user_id == user_id and s.is_live(at)]
        for session in live:
            self._sessions.put(session.id, dataclasses.replace(session, revoked_at=at))
        return len(live)


class FakeMagicLinkRepository:
    def __init__(self, links: Staged[str, MagicLink], lock_row: LockRow) -> None:
        self._links = links
        self._lock_row = lock_row

    async def add(self, link: MagicLink) -> None:
        _refuse_duplicate(
            self._links.rows(),
            f"magic link {link.id!r} or its token",
            lambda m: m.id == link.id or m.token_hash == link.token_hash,
        )
        self._links.put(link.id, link)

    async def consume(self, token_hash: str, at: datetime) -> MagicLink | None:
        found = next((m for m in self._links.rows() if m.token_hash == token_hash), None)
        if found is None:
            return None
        await self._lock_row(("magic_links", found.id))
        link = self._links.get(found.id)  # as the unit of work that held the lock left it
        if link is None or link.used_at is not None or link.expires_at <= at:
            return None
        used = dataclasses.replace(link, used_at=at)
        self._links.put(link.id, used)
        return used


class FakeInviteRepository:
    def __init__(
        self, invites: Staged[str, Invite], orgs: Staged[str, Org], lock_row: LockRow
    ) -> None:
        self._invites = invites
        self._orgs = orgs
        self._lock_row = lock_row

    async def add(self, invite: Invite) -> None:
        _refuse_duplicate(
            self._invites.rows(),
            f"invite {invite.id!r} or its token",
            lambda i: i.id == invite.id or i.token_hash == invite.token_hash,
        )
        _require(self._orgs.get(invite.org_id), f"org {invite.org_id!r}")
        self._invites.put(invite.id, invite)

    async def get(self, invite_id: str) -> Invite | None:
        return self._invites.get(invite_id)

    async def by_token_hash(self, token_hash: str) -> Invite | None:
        return next((i for i in self._invites.rows() if i.token_hash == token_hash), None)

    async def list_for_org(self, org_id: str) -> list[Invite]:
        found = [i for i in self._invites.rows() if i.org_id == org_id]
        return sorted(found, key=lambda i: (i.created_at, i.id), reverse=True)

    async def close(self, invite_id: str, outcome: str, at: datetime) -> bool:
        field = _INVITE_OUTCOMES.get(outcome)
        if field is None:
            raise ValueError(f"unknown invite outcome {outcome!r}")
        if self._invites.get(invite_id) is None:
            return False
        await self._lock_row(("invites", invite_id))
        invite = self._invites.get(invite_id)
        if invite is None or (invite.accepted_at or invite.declined_at or invite.revoked_at):
            return False
        closed: dict[str, Any] = {field: at}
        self._invites.put(invite_id, dataclasses.replace(invite, **closed))
        return True


class FakeApiKeyRepository:
    def __init__(self, keys: Staged[str, ApiKey], orgs: Staged[str, Org]) -> None:
        self._keys = keys
        self._orgs = orgs

    async def add(self, key: ApiKey) -> None:
        _refuse_duplicate(
            self._keys.rows(),
            f"API key {key.id!r} or its token",
            lambda k: k.id == key.id or k.token_hash == key.token_hash,
        )
        _require(self._orgs.get(key.org_id), f"org {key.org_id!r}")
        self._keys.put(key.id, key)

    async def get(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def by_token_hash(self, token_hash: str) -> ApiKey | None:
        return next((k for k in self._keys.rows() if k.token_hash == token_hash), None)

    async def list_for_org(self, org_id: str) -> list[ApiKey]:
        found = [k for k in self._keys.rows() if k.org_id == org_id]
        return sorted(found, key=lambda k: (k.created_at, k.id), reverse=True)

    async def revoke(self, key_id: str, at: datetime) -> None:
        key = self._keys.get(key_id)
        if key is not None and key.revoked_at is None:
            self._keys.put(key_id, dataclasses.replace(key, revoked_at=at))

    async def touch(self, key_id: str, at: datetime) -> None:
        key = self._keys.get(key_id)
        if key is not None:
            self._keys.put(key_id, dataclasses.replace(key, last_used_at=at))


class FakeOAuthStateRepository:
    def __init__(self, states: Staged[str, OAuthState], lock_row: LockRow) -> None:
        self._states = states
        self._lock_row = lock_row

    async def add(self, state: OAuthState) -> None:
        if self._states.get(state.state) is not None:
            raise ValueError(f"OAuth state {state.state!r} exists")
        self._states.put(state.state, state)

    async def consume(self, state: str, at: datetime) -> OAuthState | None:
        if self._states.get(state) is None:
            return None
        await self._lock_row(("oauth_states", state))
        pending = self._states.get(state)
        if pending is None:
            return None
        self._states.delete(state)  # even when expired: it is of no further use
        return pending if at < pending.expires_at else None


class FakeOutbox:
    """Implements `Mailer` and `Outbox` in memory, as the SQL outbox does in its table. Set
    `unavailable` to make `send` raise ServiceUnavailable("mail")."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.sent: list[SentMail] = []  # oldest first
        self.unavailable = False

    async def send(self, message: MailMessage) -> None:
        if self.unavailable:
            raise ServiceUnavailable("mail")
        # Zero-padded: the ids sort in sending order, the tie-break of the SQL outbox.
        mail_id = f"mail_{len(self.sent):08d}"
        self.sent.append(SentMail(mail_id, message, self._clock.now()))

    async def recent(self, limit: int = 20, to: str | None = None) -> list[SentMail]:
        found = [m for m in self.sent if to is None or m.message.to == to]
        found.sort(key=lambda m: (m.created_at, m.id), reverse=True)
        return found[:limit]
