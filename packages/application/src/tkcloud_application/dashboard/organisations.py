"""Orgs as their members see them: create, list, rename; members and their roles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.system import Clock, IdGenerator
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_application.tenancy.operations import TenancyOperations, clean_name
from tkcloud_domain.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tkcloud_domain.identity import (
    USER_PREFIX,
    Action,
    KeyPrincipal,
    Membership,
    OperatorPrincipal,
    Principal,
    Role,
    User,
    UserPrincipal,
    normalise_email,
)
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Org


@dataclass(frozen=True, slots=True)
class OrgView:
    org: Org
    role: Role | None  # None when read with an API key


@dataclass(frozen=True, slots=True)
class Member:
    membership: Membership
    user: User


def require_user(principal: Principal) -> UserPrincipal:
    if not isinstance(principal, UserPrincipal):
        raise Forbidden("This needs a signed-in user, not an API key")
    return principal


class Organisations:
    def __init__(
        self,
        *,
        uow: Callable[[], TenancyUnitOfWork],
        access: Access,
        tenancy: TenancyOperations,
        clock: Clock,
        ids: IdGenerator,
    ) -> None:
        self._ids = ids
        self._uow = uow
        self._access = access
        self._tenancy = tenancy
        self._clock = clock

    async def create(self, principal: Principal, name: str) -> OrgView:
        user = require_user(principal).user
        org = await self._tenancy.create_org(name, Plan.FREE, owner_id=user.id)
        return OrgView(org, Role.OWNER)

    async def mine(self, principal: Principal) -> list[OrgView]:
        if isinstance(principal, KeyPrincipal):
            return [await self.get(principal, principal.key.org_id)]
        if isinstance(principal, OperatorPrincipal):
            return [OrgView(org, None) for org in await self._tenancy.list_orgs()]
        if not isinstance(principal, UserPrincipal):
            return []
        async with self._uow() as uow:
            memberships = await uow.memberships.list_for_user(principal.user.id)
            views = []
            for m in memberships:
                org = await uow.orgs.get(m.org_id)
                if org is not None:
                    views.append(OrgView(org, m.role))
        return views

    async def get(self, principal: Principal, org_id: str) -> OrgView:
        await self._access.require(principal, org_id, Action.ORG_READ)
        async with self._uow() as uow:
            org = await uow.orgs.get(org_id)
            role = None
            if isinstance(principal, UserPrincipal):
                membership = await uow.memberships.get(org_id, principal.user.id)
                role = membership.role if membership else None
        if org is None:
            raise NotFound(f"No org {org_id}")
        return OrgView(org, role)

    async def rename(self, principal: Principal, org_id: str, name: str) -> OrgView:
        await self._access.require(principal, org_id, Action.ORG_WRITE)
        async with self._uow() as uow:
            await uow.orgs.rename(org_id, clean_name(name))
            await uow.commit()
        return await self.get(principal, org_id)

    # --- members ------------------------------------------------------------------------------

    async def members(self, principal: Principal, org_id: str) -> list[Member]:
        await self._access.require(principal, org_id, Action.MEMBERS_READ)
        async with self._uow() as uow:
            result = []
            for m in await uow.memberships.list_for_org(org_id):
                user = await uow.users.get(m.user_id)
                if user is not None:
                    result.append(Member(m, user))
        return result

    async def change_role(
        self, principal: Principal, org_id: str, user_id: str, role: Role
    ) -> Member:
        await self._access.require(principal, org_id, Action.MEMBERS_WRITE)
        owner = await self._access.is_owner(principal, org_id)
        async with self._uow() as uow:
            target = await uow.memberships.get(org_id, user_id)
            if target is None:
                raise NotFound(f"No member {user_id}")
            if Role.OWNER in (target.role, role) and not owner:
                raise Forbidden("Only an owner can make or unmake owners")
            if target.role is Role.OWNER and role is not Role.OWNER:
                await self._keep_an_owner(uow, org_id)
            await uow.memberships.set_role(org_id, user_id, role)
            user = await uow.users.get(user_id)
            await uow.commit()
        assert user is not None
        return Member(Membership(org_id, user_id, role, target.created_at), user)

    async def remove_member(self, principal: Principal, org_id: str, user_id: str) -> None:
        """Admins remove members; anyone may leave. The last owner can do neither."""
        leaving = isinstance(principal, UserPrincipal) and principal.user.id == user_id
        action = Action.ORG_READ if leaving else Action.MEMBERS_WRITE
        await self._access.require(principal, org_id, action)
        if isinstance(principal, KeyPrincipal):
            raise Forbidden("This needs a signed-in user, not an API key")
        owner = await self._access.is_owner(principal, org_id)
        async with self._uow() as uow:
            target = await uow.memberships.get(org_id, user_id)
            if target is None:
                raise NotFound(f"No member {user_id}")
            if target.role is Role.OWNER:
                if not owner:
                    raise Forbidden("Only an owner can remove an owner")
                await self._keep_an_owner(uow, org_id)
            await uow.memberships.remove(org_id, user_id)
            await uow.commit()

    async def add_member(self, principal: Principal, org_id: str, email: str, role: Role) -> Member:
        """Operators add people directly (creating the user, whose address they vouch for);
        everyone else invites."""
        if not isinstance(principal, OperatorPrincipal):
            raise Forbidden("Invite people instead: they accept with their own sign-in")
        await self._access.require(principal, org_id, Action.MEMBERS_WRITE)
        address = normalise_email(email)
        if address is None:
            raise ValidationFailed("email: not a valid address", details={"field": "email"})
        now = self._clock.now()
        async with self._uow() as uow:
            user = await uow.users.by_email(address)
            if user is None:
                user = User(self._ids.new_id(USER_PREFIX), address, address.partition("@")[0], now)
                await uow.users.add(user)
            membership = Membership(org_id, user.id, role, now)
            await uow.memberships.add(membership)
            await uow.commit()
        return Member(membership, user)

    async def _keep_an_owner(self, uow: TenancyUnitOfWork, org_id: str) -> None:
        owners = [m for m in await uow.memberships.list_for_org(org_id) if m.role is Role.OWNER]
        if len(owners) <= 1:
            raise Conflict("An org keeps at least one owner: make someone else owner first")
