"""Request and response bodies of the dashboard API (msgspec Structs, documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

import msgspec

from tkcloud_application.dashboard.apps import Allowance
from tkcloud_application.dashboard.organisations import Member, OrgView
from tkcloud_application.ports.tenancy import AppUsage
from tkcloud_domain.identity import ApiKey, ApiKeyScope, Invite, Role, User
from tkcloud_domain.tenancy import App, Credential

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T]):
    items: list[T]
    next_cursor: str | None


# --- requests -----------------------------------------------------------------------------------


class EmailBody(msgspec.Struct):
    email: str


class TokenBody(msgspec.Struct):
    token: str
    redirect_to: str | None = None


class NameBody(msgspec.Struct):
    name: str


class RoleBody(msgspec.Struct):
    role: Role


class InviteRequest(msgspec.Struct):
    email: str
    role: Role = Role.OBSERVER


class ApiKeyRequest(msgspec.Struct):
    name: str
    scopes: list[ApiKeyScope] = msgspec.field(default_factory=lambda: [ApiKeyScope.ANALYTICS_READ])


class ConfirmBody(msgspec.Struct):
    confirm: str  # the app's name, repeated


# --- responses ----------------------------------------------------------------------------------


class UserOut(msgspec.Struct):
    user_id: str
    email: str
    display_name: str
    github_login: str | None
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(user.id, user.email, user.display_name, user.github_login, user.created_at)


class SignedIn(msgspec.Struct):
    user: UserOut
    csrf_token: str  # echo it in X-CSRF-Token on POST/PATCH/PUT/DELETE
    expires_at: datetime
    redirect_to: str


class OrgOut(msgspec.Struct):
    org_id: str
    name: str
    slug: str
    plan: str
    region: str
    role: Role | None
    requests_per_minute: int | None
    events_per_month: int | None
    retention_days: int | None
    created_at: datetime

    @classmethod
    def of(cls, view: OrgView) -> OrgOut:
        org, limits = view.org, view.org.limits
        return cls(
            org.id, org.name, org.slug, org.plan.value, org.region, view.role,
            limits.requests_per_minute, limits.events_per_month, limits.retention_days,
            org.created_at,
        )  # fmt: skip


class MeOut(msgspec.Struct):
    user: UserOut
    orgs: list[OrgOut]


class MemberOut(msgspec.Struct):
    user_id: str
    email: str
    display_name: str
    role: Role
    joined_at: datetime

    @classmethod
    def of(cls, member: Member) -> MemberOut:
        m, u = member.membership, member.user
        return cls(u.id, u.email, u.display_name, m.role, m.created_at)


class InviteOut(msgspec.Struct):
    invite_id: str
    email: str
    role: Role
    status: str
    created_at: datetime
    expires_at: datetime

    @classmethod
    def of(cls, invite: Invite, now: datetime) -> InviteOut:
        return cls(
            invite.id, invite.email, invite.role, invite.status(now).value,
            invite.created_at, invite.expires_at,
        )  # fmt: skip


class ApiKeyOut(msgspec.Struct):
    key_id: str
    name: str
    scopes: list[ApiKeyScope]
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            key.id, key.name, list(key.scopes), key.hint, key.created_at,
            key.last_used_at, key.revoked_at,
        )  # fmt: skip


class IssuedApiKeyOut(msgspec.Struct):
    key: ApiKeyOut
    secret: str  # shown once: send it as `Authorization: Bearer <secret>`


class AppOut(msgspec.Struct):
    app_id: str
    org_id: str
    name: str
    environment: str
    active: bool
    created_at: datetime
    ingest_url: str

    @classmethod
    def of(cls, app: App, public_url: str) -> AppOut:
        return cls(
            app.id, app.org_id, app.name, app.environment.value, app.active, app.created_at,
            f"{public_url}/v1/ingest/{app.org_id}/{app.id}",
        )  # fmt: skip


class CredentialOut(msgspec.Struct):
    credential_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    live: bool

    @classmethod
    def of(cls, credential: Credential, now: datetime) -> CredentialOut:
        c = credential
        return cls(c.id, c.created_at, c.expires_at, c.revoked_at, c.is_live(now))


class IssuedCredentialOut(msgspec.Struct):
    credential_id: str
    token: str  # shown once
    secret: str  # shown once: the SDK signs with it


class CreatedAppOut(msgspec.Struct):
    app: AppOut
    credentials: IssuedCredentialOut


class PromotedOut(msgspec.Struct):
    app: AppOut
    staging_events_deleted: int


class RevokedOut(msgspec.Struct):
    revoked: int


class AllowanceOut(msgspec.Struct):
    month: str
    events_this_month: int
    events_limit: int | None
    events_remaining: int | None

    @classmethod
    def of(cls, a: Allowance) -> AllowanceOut:
        return cls(a.month, a.events_this_month, a.events_limit, a.events_remaining)


class AppUsageOut(msgspec.Struct):
    app_id: str
    environment: str
    events: int

    @classmethod
    def of(cls, u: AppUsage) -> AppUsageOut:
        return cls(u.app_id, u.environment.value, u.events)


class OrgUsageOut(msgspec.Struct):
    month: str
    events_this_month: int
    events_limit: int | None
    events_remaining: int | None
    apps: list[AppUsageOut]
