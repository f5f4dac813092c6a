"""Ports for people and programs: repositories (inside the unit of work), mail, OAuth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tkcloud_domain.identity import (
    ApiKey,
    GitHubIdentity,
    Invite,
    MagicLink,
    Membership,
    OAuthState,
    Role,
    Session,
    User,
)


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises Conflict if the id, email or GitHub id is taken."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def by_email(self, email: str) -> User | None: ...

    async def by_github_id(self, github_id: int) -> User | None: ...

    async def link_github(self, user_id: str, github_id: int, login: str) -> None:
        """Raises Conflict if that GitHub account is linked to another user."""
        ...


class MembershipRepository(Protocol):
    async def add(self, membership: Membership) -> None:
        """Raises Conflict if the user is already a member."""
        ...

    async def get(self, org_id: str, user_id: str) -> Membership | None: ...

    async def list_for_org(self, org_id: str) -> list[Membership]:
        """Oldest first."""
        ...

    async def list_for_user(self, user_id: str) -> list[Membership]:
        """Oldest first."""
        ...

    async def set_role(self, org_id: str, user_id: str, role: Role) -> None: ...

    async def remove(self, org_id: str, user_id: str) -> None: ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...

    async def by_token_hash(self, token_hash: str) -> Session | None: ...

    async def revoke(self, session_id: str, at: datetime) -> None: ...

    async def revoke_all_for_user(self, user_id: str, at: datetime) -> int:
        """Revoke every live session of the user; returns how many."""
        ...


class MagicLinkRepository(Protocol):
    async def add(self, link: MagicLink) -> None: ...

    async def consume(self, token_hash: str, at: datetime) -> MagicLink | None:
        """Mark the link used, atomically, if it exists, is unused and has not expired at `at`;
        return it then, else None. Two concurrent calls never both get it."""
        ...


class InviteRepository(Protocol):
    async def add(self, invite: Invite) -> None: ...

    async def get(self, invite_id: str) -> Invite | None: ...

    async def by_token_hash(self, token_hash: str) -> Invite | None: ...

    async def list_for_org(self, org_id: str) -> list[Invite]:
        """Newest first."""
        ...

    async def close(self, invite_id: str, outcome: str, at: datetime) -> bool:
        """Set `accepted_at`, `declined_at` or `revoked_at` (outcome = accepted | declined |
        revoked) if the invite is still open (none of the three set); False if it was not."""
        ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None: ...

    async def get(self, key_id: str) -> ApiKey | None: ...

    async def by_token_hash(self, token_hash: str) -> ApiKey | None: ...

    async def list_for_org(self, org_id: str) -> list[ApiKey]:
        """Newest first, revoked ones included."""
        ...

    async def revoke(self, key_id: str, at: datetime) -> None: ...

    async def touch(self, key_id: str, at: datetime) -> None:
        """Record a use (`last_used_at`)."""
        ...


class OAuthStateRepository(Protocol):
    async def add(self, state: OAuthState) -> None: ...

    async def consume(self, state: str, at: datetime) -> OAuthState | None:
        """Delete and return the state if it exists and has not expired; single use."""
        ...


@dataclass(frozen=True, slots=True)
class MailMessage:
    to: str
    subject: str
    text: str
    kind: str  # magic_link | invite | quota_80 | quota_100 | payment_failed


@dataclass(frozen=True, slots=True)
class SentMail:
    id: str
    message: MailMessage
    created_at: datetime


class Mailer(Protocol):
    async def send(self, message: MailMessage) -> None:
        """Deliver (or queue durably); raises ServiceUnavailable("mail") if it cannot."""
        ...


class Outbox(Protocol):
    """The development mailer's store, which operators read with `tkcloud mail outbox`."""

    async def recent(self, limit: int = 20, to: str | None = None) -> list[SentMail]:
        """Newest first."""
        ...


class OAuthProvider(Protocol):
    """GitHub sign-in: the authorization URL (with state and PKCE), and the account behind a
    returned code."""

    def authorization_url(self, *, state: str, code_verifier: str, redirect_uri: str) -> str: ...

    async def identity(self, *, code: str, code_verifier: str, redirect_uri: str) -> GitHubIdentity:
        """Exchange the code and read the account and its emails. Raises SignInFailed when the
        provider refuses the code, ServiceUnavailable("github") when it cannot be reached."""
        ...
