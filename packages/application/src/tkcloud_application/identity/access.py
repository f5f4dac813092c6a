"""Authorisation: may this principal do this in that org?

Another tenant's objects answer exactly as missing ones would (NotFound), so ids cannot be
probed; a member without the right answers Forbidden.
"""

from __future__ import annotations

from collections.abc import Callable

from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.errors import Forbidden, NotFound
from tkcloud_domain.identity import (
    Action,
    KeyPrincipal,
    OperatorPrincipal,
    Principal,
    Role,
    SharePrincipal,
    UserPrincipal,
)
from tkcloud_domain.tenancy import App


class Access:
    def __init__(self, uow: Callable[[], TenancyUnitOfWork]) -> None:
        self._uow = uow

    async def require(self, principal: Principal, org_id: str, action: Action) -> None:
        if isinstance(principal, SharePrincipal):
            raise NotFound(f"No org {org_id}")  # a share link opens one app, never its org
        if isinstance(principal, OperatorPrincipal):
            async with self._uow() as uow:
                if await uow.orgs.get(org_id) is None:
                    raise NotFound(f"No org {org_id}")
            return
        if isinstance(principal, KeyPrincipal):
            if principal.key.org_id != org_id:
                raise NotFound(f"No org {org_id}")
            if not principal.key.allows(action):
                raise Forbidden(f"This API key's scopes do not allow {action.value}")
            return
        async with self._uow() as uow:
            membership = await uow.memberships.get(org_id, principal.user.id)
        if membership is None:
            raise NotFound(f"No org {org_id}")
        if not membership.allows(action):
            raise Forbidden(f"Your role ({membership.role.value}) does not allow {action.value}")

    async def is_owner(self, principal: Principal, org_id: str) -> bool:
        """Owners (and operators) may make, unmake and remove owners."""
        if isinstance(principal, OperatorPrincipal):
            return True
        if not isinstance(principal, UserPrincipal):
            return False
        async with self._uow() as uow:
            membership = await uow.memberships.get(org_id, principal.user.id)
        return membership is not None and membership.role is Role.OWNER

    async def require_app(self, principal: Principal, app_id: str, action: Action) -> App:
        """The app, if the principal may do `action` in the app's org."""
        if isinstance(principal, SharePrincipal):
            if principal.app_id != app_id:
                raise NotFound(f"No app {app_id}")
            if not principal.allows(action):
                raise Forbidden("A share link only reads this app's analytics")
            async with self._uow() as uow:
                shared = await uow.apps.get(app_id)
            if shared is None:
                raise NotFound(f"No app {app_id}")
            return shared
        async with self._uow() as uow:
            app = await uow.apps.get(app_id)
        if app is None:
            raise NotFound(f"No app {app_id}")
        try:
            await self.require(principal, app.org_id, action)
        except NotFound:
            raise NotFound(f"No app {app_id}") from None
        return app
