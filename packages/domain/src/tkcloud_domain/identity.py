"""People and programs: users, memberships and roles, sessions, sign-in links, invites, API keys.

What each role and API-key scope may do is decided here, in one table, so every endpoint asks
the same question ("may this principal do ACTION in this org?") and gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

USER_PREFIX = "usr_"
SESSION_PREFIX = "ses_"
MAGIC_LINK_PREFIX = "mlk_"
INVITE_PREFIX = "inv_"
API_KEY_PREFIX = "key_"
API_KEY_SECRET_PREFIX = "tkk_"  # noqa: S105 - what a program sends as `Authorization: Bearer tkk_…`


class Role(StrEnum):
    OWNER = "owner"  # billing, delete
    ADMIN = "admin"  # apps, keys, members
    MEMBER = "member"  # apps, read
    OBSERVER = "observer"  # read-only analytics, invited by email


class Action(StrEnum):
    ORG_READ = "org:read"
    ORG_WRITE = "org:write"
    ORG_DELETE = "org:delete"
    BILLING_MANAGE = "billing:manage"
    APPS_READ = "apps:read"
    APPS_WRITE = "apps:write"  # create, rename, promote, delete, credentials
    MEMBERS_READ = "members:read"
    MEMBERS_WRITE = "members:write"  # roles, removal, invites
    KEYS_MANAGE = "keys:manage"
    USAGE_READ = "usage:read"
    ANALYTICS_READ = "analytics:read"
    EVENTS_READ = "events:read"  # raw events: the explorer and exports


_READ = frozenset(
    {
        Action.ORG_READ,
        Action.APPS_READ,
        Action.USAGE_READ,
        Action.ANALYTICS_READ,
        Action.EVENTS_READ,
    }
)
_MEMBER = _READ | {Action.APPS_WRITE, Action.MEMBERS_READ}
_ADMIN = _MEMBER | {Action.ORG_WRITE, Action.MEMBERS_WRITE, Action.KEYS_MANAGE}
_OWNER = _ADMIN | {Action.ORG_DELETE, Action.BILLING_MANAGE}

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.OWNER: _OWNER,
    Role.ADMIN: _ADMIN,
    Role.MEMBER: _MEMBER,
    Role.OBSERVER: _READ,
}


class ApiKeyScope(StrEnum):
    ANALYTICS_READ = "analytics:read"
    MANAGE = "manage"


SCOPE_ACTIONS: dict[ApiKeyScope, frozenset[Action]] = {
    ApiKeyScope.ANALYTICS_READ: _READ,
    # A program can manage apps and credentials, never people, keys or billing.
    ApiKeyScope.MANAGE: _MEMBER,
}


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str  # verified, lowercase
    display_name: str
    created_at: datetime
    github_id: int | None = None
    github_login: str | None = None


@dataclass(frozen=True, slots=True)
class Membership:
    org_id: str
    user_id: str
    role: Role
    created_at: datetime

    def allows(self, action: Action) -> bool:
        return action in ROLE_ACTIONS[self.role]


@dataclass(frozen=True, slots=True)
class Session:
    """A browser session: the cookie holds a random token, the database only its hash."""

    id: str
    user_id: str
    token_hash: str
    csrf_hash: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True, slots=True)
class MagicLink:
    id: str
    email: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


class InviteStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Invite:
    id: str
    org_id: str
    email: str
    role: Role
    token_hash: str
    invited_by: str  # user id
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None = None
    declined_at: datetime | None = None
    revoked_at: datetime | None = None

    def status(self, now: datetime) -> InviteStatus:
        if self.accepted_at is not None:
            return InviteStatus.ACCEPTED
        if self.declined_at is not None:
            return InviteStatus.DECLINED
        if self.revoked_at is not None:
            return InviteStatus.REVOKED
        if now >= self.expires_at:
            return InviteStatus.EXPIRED
        return InviteStatus.PENDING


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    org_id: str
    name: str
    scopes: tuple[ApiKeyScope, ...]
    token_hash: str
    hint: str  # the first characters of the key, so people can tell keys apart
    created_by: str | None  # user id; None when an operator made it
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, action: Action) -> bool:
        return any(action in SCOPE_ACTIONS[scope] for scope in self.scopes)


@dataclass(frozen=True, slots=True)
class OAuthState:
    """A GitHub sign-in in progress: single use, short-lived, holds the PKCE verifier."""

    state: str
    code_verifier: str
    redirect_to: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class GitHubIdentity:
    id: int
    login: str
    name: str | None
    verified_email: str | None  # the primary address if verified, else another verified one


@dataclass(frozen=True, slots=True)
class UserPrincipal:
    user: User
    session: Session | None  # None for operator-side calls


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    key: ApiKey


@dataclass(frozen=True, slots=True)
class OperatorPrincipal:
    """Whoever runs `tkcloud` commands on the server: every right in every org."""

    name: str = "an operator"


@dataclass(frozen=True, slots=True)
class SharePrincipal:
    """Anyone holding a live public share link: that one app's analytics, read-only, and its
    raw events only if the owner opted in."""

    app_id: str
    include_events: bool

    def allows(self, action: Action) -> bool:
        return action is Action.ANALYTICS_READ or (
            action is Action.EVENTS_READ and self.include_events
        )


Principal = UserPrincipal | KeyPrincipal | OperatorPrincipal | SharePrincipal


def normalise_email(email: str) -> str | None:
    """Lowercased and trimmed; None when it is not plausibly an address."""
    cleaned = email.strip().lower()
    local, at, domain = cleaned.partition("@")
    if not at or not local or "." not in domain or len(cleaned) > 254 or " " in cleaned:
        return None
    return cleaned
