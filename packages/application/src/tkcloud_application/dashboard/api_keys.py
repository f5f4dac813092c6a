"""Org API keys for programs: scoped, shown once, stored as a hash."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.system import Clock, IdGenerator
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_application.tenancy.operations import clean_name
from tkcloud_domain.errors import NotFound, ValidationFailed
from tkcloud_domain.identity import (
    API_KEY_PREFIX,
    API_KEY_SECRET_PREFIX,
    Action,
    ApiKey,
    ApiKeyScope,
    Principal,
    UserPrincipal,
)
from tkcloud_domain.tenancy import hash_token


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    key: ApiKey
    secret: str  # shown once


class ApiKeys:
    def __init__(
        self,
        *,
        uow: Callable[[], TenancyUnitOfWork],
        access: Access,
        ids: IdGenerator,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._access = access
        self._ids = ids
        self._clock = clock

    async def create(
        self, principal: Principal, org_id: str, name: str, scopes: Sequence[ApiKeyScope]
    ) -> IssuedApiKey:
        await self._access.require(principal, org_id, Action.KEYS_MANAGE)
        if not scopes:
            raise ValidationFailed("scopes: give at least one", details={"field": "scopes"})
        secret = self._ids.secret(API_KEY_SECRET_PREFIX)
        key = ApiKey(
            id=self._ids.new_id(API_KEY_PREFIX),
            org_id=org_id,
            name=clean_name(name),
            scopes=tuple(dict.fromkeys(scopes)),
            token_hash=hash_token(secret),
            hint=secret[: len(API_KEY_SECRET_PREFIX) + 4],
            created_by=principal.user.id if isinstance(principal, UserPrincipal) else None,
            created_at=self._clock.now(),
        )
        async with self._uow() as uow:
            await uow.api_keys.add(key)
            await uow.commit()
        return IssuedApiKey(key, secret)

    async def for_org(self, principal: Principal, org_id: str) -> list[ApiKey]:
        await self._access.require(principal, org_id, Action.KEYS_MANAGE)
        async with self._uow() as uow:
            return await uow.api_keys.list_for_org(org_id)

    async def revoke(self, principal: Principal, org_id: str, key_id: str) -> None:
        await self._access.require(principal, org_id, Action.KEYS_MANAGE)
        async with self._uow() as uow:
            key = await uow.api_keys.get(key_id)
            if key is None or key.org_id != org_id:
                raise NotFound(f"No API key {key_id}")
            await uow.api_keys.revoke(key_id, self._clock.now())
            await uow.commit()
