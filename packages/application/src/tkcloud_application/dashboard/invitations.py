"""Invites: an admin invites an email address with a role; the invitee signs in with that
address and accepts (or declines) through the single-use link in the mail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from urllib.parse import quote

from tkcloud_application.dashboard.organisations import require_user
from tkcloud_application.identity.access import Access
from tkcloud_application.ports.identity import Mailer, MailMessage
from tkcloud_application.ports.system import Clock, IdGenerator
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.errors import Conflict, Forbidden, InvalidLink, NotFound, ValidationFailed
from tkcloud_domain.identity import (
    INVITE_PREFIX,
    Action,
    Invite,
    InviteStatus,
    Membership,
    OperatorPrincipal,
    Principal,
    Role,
    normalise_email,
)
from tkcloud_domain.tenancy import hash_token

INVITE_TTL = timedelta(days=7)


class Invitations:
    def __init__(
        self,
        *,
        uow: Callable[[], TenancyUnitOfWork],
        access: Access,
        ids: IdGenerator,
        clock: Clock,
        mailer: Mailer,
        dashboard_url: str,
    ) -> None:
        self._uow = uow
        self._access = access
        self._ids = ids
        self._clock = clock
        self._mailer = mailer
        self._dashboard_url = dashboard_url

    async def invite(self, principal: Principal, org_id: str, email: str, role: Role) -> Invite:
        await self._access.require(principal, org_id, Action.MEMBERS_WRITE)
        if isinstance(principal, OperatorPrincipal):
            inviter_id, inviter_label = "operator", principal.name
        else:
            inviter = require_user(principal).user
            inviter_id, inviter_label = inviter.id, f"{inviter.display_name} ({inviter.email})"
        address = normalise_email(email)
        if address is None:
            raise ValidationFailed("email: not a valid address", details={"field": "email"})
        if role is Role.OWNER:
            raise ValidationFailed("role: invite as admin, member or observer; promote later")
        now = self._clock.now()
        token = self._ids.secret("")
        invite = Invite(
            id=self._ids.new_id(INVITE_PREFIX),
            org_id=org_id,
            email=address,
            role=role,
            token_hash=hash_token(token),
            invited_by=inviter_id,
            created_at=now,
            expires_at=now + INVITE_TTL,
        )
        async with self._uow() as uow:
            org = await uow.orgs.get(org_id)
            assert org is not None  # access checked it
            existing = await uow.users.by_email(address)
            if existing and await uow.memberships.get(org_id, existing.id):
                raise Conflict(f"{address} is already a member")
            # Inviting again replaces the pending invite (and its link) instead of piling up.
            for old in await uow.invites.list_for_org(org_id):
                if old.email == address and old.status(now) is InviteStatus.PENDING:
                    await uow.invites.close(old.id, "revoked", now)
            await uow.invites.add(invite)
            await uow.commit()
        url = f"{self._dashboard_url}/invites/accept?token={quote(token)}"
        await self._mailer.send(
            MailMessage(
                to=address,
                subject=f"You are invited to {org.name} on telemetry-kit cloud",
                text=(
                    f"{inviter_label} invited you to join {org.name} "
                    f"as {role.value}.\n\nAccept (sign in with {address}):\n{url}\n\n"
                    "The link works once and expires in 7 days.\n"
                ),
                kind="invite",
            )
        )
        return invite

    async def for_org(self, principal: Principal, org_id: str) -> list[Invite]:
        await self._access.require(principal, org_id, Action.MEMBERS_READ)
        async with self._uow() as uow:
            return await uow.invites.list_for_org(org_id)

    async def revoke(self, principal: Principal, org_id: str, invite_id: str) -> None:
        await self._access.require(principal, org_id, Action.MEMBERS_WRITE)
        async with self._uow() as uow:
            invite = await uow.invites.get(invite_id)
            if invite is None or invite.org_id != org_id:
                raise NotFound(f"No invite {invite_id}")
            if not await uow.invites.close(invite_id, "revoked", self._clock.now()):
                raise Conflict("This invite was already accepted, declined or revoked")
            await uow.commit()

    async def accept(self, principal: Principal, token: str) -> Membership:
        user = require_user(principal).user
        now = self._clock.now()
        async with self._uow() as uow:
            invite = await self._open_invite(uow, token, user.email)
            membership = await uow.memberships.get(invite.org_id, user.id)
            if membership is None:
                membership = Membership(invite.org_id, user.id, invite.role, now)
                await uow.memberships.add(membership)
            if not await uow.invites.close(invite.id, "accepted", now):
                raise InvalidLink()
            await uow.commit()
        return membership

    async def decline(self, principal: Principal, token: str) -> None:
        user = require_user(principal).user
        async with self._uow() as uow:
            invite = await self._open_invite(uow, token, user.email)
            if not await uow.invites.close(invite.id, "declined", self._clock.now()):
                raise InvalidLink()
            await uow.commit()

    async def _open_invite(self, uow: TenancyUnitOfWork, token: str, email: str) -> Invite:
        invite = await uow.invites.by_token_hash(hash_token(token))
        if invite is None or invite.status(self._clock.now()) is not InviteStatus.PENDING:
            raise InvalidLink()
        if invite.email != email:
            raise Forbidden(f"This invite is for another address: sign in as {invite.email}")
        return invite
