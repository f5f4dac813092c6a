"""Orgs as their members see them: create, list, rename; members and their roles."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.system import Clock
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_application.tenancy.operations import TenancyOperations, clean_name
from tkcloud_domain.errors import Conflict, Forbidden, NotFound
from tkcloud_domain.identity import Action, Membership, Principal, Role, User, UserPrincipal
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
    ) -> None:
        self._uow = uow
        self._access = access
        self._tenancy = tenancy
        self._clock = clock

    async def create(self, principal: Principal, name: str) -> OrgView:
        user = require_user(principal).user
        org = await self._tenancy.create_org(name, Plan.FREE, owner_id=user.id)
        return OrgView(org, Role.OWNER)

    async def mine(self, principal: Principal) -> list[OrgView]:
        if not isinstance(principal, UserPrincipal):
            return [await self.get(principal, principal.key.org_id)]
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
        actor = require_user(principal).user
        async with self._uow() as uow:
            target = await uow.memberships.get(org_id, user_id)
            if target is None:
                raise NotFound(f"No member {user_id}")
            mine = await uow.memberships.get(org_id, actor.id)
            touches_owner = Role.OWNER in (target.role, role)
            if touches_owner and (mine is None or mine.role is not Role.OWNER):
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
        actor = require_user(principal).user
        async with self._uow() as uow:
            target = await uow.memberships.get(org_id, user_id)
            if target is None:
                raise NotFound(f"No member {user_id}")
            if target.role is Role.OWNER:
                mine = await uow.memberships.get(org_id, actor.id)
                if mine is None or mine.role is not Role.OWNER:
                    raise Forbidden("Only an owner can remove an owner")
                await self._keep_an_owner(uow, org_id)
            await uow.memberships.remove(org_id, user_id)
            await uow.commit()

    async def _keep_an_owner(self, uow: TenancyUnitOfWork, org_id: str) -> None:
        owners = [m for m in await uow.memberships.list_for_org(org_id) if m.role is Role.OWNER]
        if len(owners) <= 1:
            raise Conflict("An org keeps at least one owner: make someone else owner first")
