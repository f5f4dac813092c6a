"""Operator-facing tenancy use cases (the `tkcloud org|app` commands call these).

Each is one unit of work. Secrets are generated here, shown once in the returned value, and only
the token's hash and the secret's ciphertext are stored.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from tkcloud_application.ports.system import Clock, IdGenerator, SecretBox
from tkcloud_application.ports.tenancy import AppUsage, TenancyUnitOfWork, UsageReport
from tkcloud_domain.billing import PlanChange
from tkcloud_domain.errors import Conflict, NotFound, ValidationFailed
from tkcloud_domain.identity import Membership, Role
from tkcloud_domain.months import month_key
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import (
    CREDENTIAL_PREFIX,
    SECRET_PREFIX,
    TOKEN_PREFIX,
    App,
    Credential,
    Environment,
    IssuedCredential,
    Org,
    hash_token,
)

MAX_NAME = 100
DEFAULT_ROTATION_GRACE = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class CreatedApp:
    app: App
    issued: IssuedCredential


def clean_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise ValidationFailed("name must not be empty", details={"field": "name"})
    if len(cleaned) > MAX_NAME:
        raise ValidationFailed(
            f"name is longer than {MAX_NAME} characters", details={"field": "name"}
        )
    return cleaned


def canonical_uuid(value: str, field: str) -> str:
    """An imported org or app id in the form the SDK sends it back: lowercase, hyphenated."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationFailed(f"{field}: expected a UUID", details={"field": field}) from None


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:48] or "org"


class TenancyOperations:
    def __init__(
        self,
        *,
        uow: Callable[[], TenancyUnitOfWork],
        usage: UsageReport,
        ids: IdGenerator,
        secret_box: SecretBox,
        clock: Clock,
        region: str,
        rotation_grace: timedelta = DEFAULT_ROTATION_GRACE,
        on_change: Callable[[str | None, str | None], None] | None = None,
    ) -> None:
        self._uow = uow
        self._usage = usage
        self._ids = ids
        self._box = secret_box
        self._clock = clock
        self._region = region
        self._grace = rotation_grace
        # Lets the composition root invalidate the in-process ingest cache at once.
        self._on_change = on_change or (lambda org_id, app_id: None)

    async def create_org(
        self,
        name: str,
        plan: Plan = Plan.FREE,
        *,
        org_id: str | None = None,
        owner_id: str | None = None,
    ) -> Org:
        clean = clean_name(name)
        new_id = canonical_uuid(org_id, "org_id") if org_id else self._ids.new_uuid()
        org = Org(
            id=new_id,
            name=clean,
            slug=f"{slugify(clean)}-{new_id[-6:]}",
            plan=plan,
            region=self._region,
            created_at=self._clock.now(),
        )
        async with self._uow() as uow:
            await uow.orgs.add(org)
            if owner_id is not None:
                if await uow.users.get(owner_id) is None:
                    raise NotFound(f"No user {owner_id}")
                await uow.memberships.add(Membership(org.id, owner_id, Role.OWNER, org.created_at))
            await uow.commit()
        return org

    async def get_org(self, org_id: str) -> Org:
        async with self._uow() as uow:
            org = await uow.orgs.get(org_id)
        if org is None:
            raise NotFound(f"No org {org_id}")
        return org

    async def list_orgs(self) -> list[Org]:
        async with self._uow() as uow:
            return await uow.orgs.list_all()

    async def set_plan(
        self,
        org_id: str,
        plan: Plan,
        *,
        custom_events_per_month: int | None = None,
        custom_retention_days: int | None = None,
        actor: str = "operator",
    ) -> Org:
        if plan is not Plan.ENTERPRISE and (
            custom_events_per_month is not None or custom_retention_days is not None
        ):
            raise ValidationFailed("custom quota and retention apply to the enterprise plan only")
        for value in (custom_events_per_month, custom_retention_days):
            if value is not None and value <= 0:
                raise ValidationFailed("custom quota and retention must be positive")
        async with self._uow() as uow:
            before = await uow.orgs.get(org_id)
            if before is None:
                raise NotFound(f"No org {org_id}")
            await uow.orgs.set_plan(org_id, plan, custom_events_per_month, custom_retention_days)
            billing = await uow.billing.state(org_id)
            if billing is not None:
                # The operator's word is final: no scheduled downgrade or running grace period
                # may undo it later.
                await uow.billing.save(
                    replace(
                        billing, plan=plan, pending_plan=None, pending_at=None, grace_until=None
                    )
                )
            if before.plan is not plan:
                change = PlanChange(org_id, before.plan, plan, "operator", actor, self._clock.now())
                await uow.billing.record_change(change)
            await uow.commit()
        self._on_change(org_id, None)
        return await self.get_org(org_id)

    async def create_app(
        self,
        org_id: str,
        name: str,
        environment: Environment = Environment.STAGING,
        *,
        app_id: str | None = None,
        secret: str | None = None,
    ) -> CreatedApp:
        """`app_id` and `secret` are for importing an existing SDK configuration; normally both
        are generated."""
        now = self._clock.now()
        app = App(
            id=canonical_uuid(app_id, "app_id") if app_id else self._ids.new_uuid(),
            org_id=org_id,
            name=clean_name(name),
            environment=environment,
            active=True,
            created_at=now,
        )
        async with self._uow() as uow:
            if await uow.orgs.get(org_id) is None:
                raise NotFound(f"No org {org_id}")
            await uow.apps.add(app)
            issued = await self._issue(uow, app.id, secret)
            await uow.commit()
        self._on_change(org_id, app.id)
        return CreatedApp(app=app, issued=issued)

    async def get_app(self, app_id: str) -> App:
        async with self._uow() as uow:
            return await self._get_app(uow, app_id)

    async def rename_app(self, app_id: str, name: str) -> App:
        async with self._uow() as uow:
            await self._get_app(uow, app_id)
            await uow.apps.rename(app_id, clean_name(name))
            await uow.commit()
        return await self.get_app(app_id)

    async def promote_app(self, app_id: str) -> tuple[App, int]:
        """Staging -> production, deleting the staging events (irreversible). Returns the app
        and how many events were deleted."""
        async with self._uow() as uow:
            app = await self._get_app(uow, app_id)
            if app.environment is Environment.PRODUCTION:
                raise Conflict("This app is already in production")
            deleted = await uow.apps.delete_events(app_id)
            await uow.apps.set_environment(app_id, Environment.PRODUCTION)
            await uow.commit()
        self._on_change(app.org_id, app_id)
        return await self.get_app(app_id), deleted

    async def delete_app(self, app_id: str) -> None:
        async with self._uow() as uow:
            app = await self._get_app(uow, app_id)
            await uow.apps.delete(app_id)
            await uow.commit()
        self._on_change(app.org_id, app_id)

    async def list_credentials(self, app_id: str) -> list[Credential]:
        async with self._uow() as uow:
            await self._get_app(uow, app_id)
            return await uow.credentials.list_for_app(app_id)

    async def list_apps(self, org_id: str) -> list[App]:
        async with self._uow() as uow:
            if await uow.orgs.get(org_id) is None:
                raise NotFound(f"No org {org_id}")
            return await uow.apps.list_for_org(org_id)

    async def rotate_credentials(self, app_id: str) -> IssuedCredential:
        """Issue a new token + secret; the live old ones keep verifying for the grace period."""
        now = self._clock.now()
        async with self._uow() as uow:
            app = await self._get_app(uow, app_id)
            for old in await uow.credentials.list_for_app(app_id):
                if old.is_live(now) and old.expires_at is None:
                    await uow.credentials.expire(old.id, now + self._grace)
            issued = await self._issue(uow, app_id, None)
            await uow.commit()
        self._on_change(app.org_id, app_id)
        return issued

    async def revoke_credentials(self, app_id: str) -> int:
        """Revoke every live credential of the app at once; returns how many."""
        now = self._clock.now()
        async with self._uow() as uow:
            app = await self._get_app(uow, app_id)
            live = [c for c in await uow.credentials.list_for_app(app_id) if c.is_live(now)]
            for credential in live:
                await uow.credentials.revoke(credential.id, now)
            await uow.commit()
        self._on_change(app.org_id, app_id)
        return len(live)

    async def usage(self, org_id: str | None = None, month: str | None = None) -> list[AppUsage]:
        if org_id is not None:
            await self.get_org(org_id)
        return await self._usage.monthly_usage(month or month_key(self._clock.now()), org_id)

    async def _get_app(self, uow: TenancyUnitOfWork, app_id: str) -> App:
        app = await uow.apps.get(app_id)
        if app is None:
            raise NotFound(f"No app {app_id}")
        return app

    async def _issue(
        self, uow: TenancyUnitOfWork, app_id: str, secret: str | None
    ) -> IssuedCredential:
        token = self._ids.secret(TOKEN_PREFIX)
        secret = secret or self._ids.secret(SECRET_PREFIX)
        credential = Credential(
            id=self._ids.new_id(CREDENTIAL_PREFIX),
            app_id=app_id,
            token_hash=hash_token(token),
            created_at=self._clock.now(),
        )
        await uow.credentials.add(credential, self._box.encrypt(secret))
        return IssuedCredential(credential=credential, token=token, secret=secret)
