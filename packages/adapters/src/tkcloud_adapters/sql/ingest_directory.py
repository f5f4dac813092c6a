"""What the ingestion hot path knows about an app, read in one query."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.schema import app_credentials, apps, orgs
from tkcloud_application.ports.system import Clock, SecretBox
from tkcloud_domain.plans import Plan, limits_for
from tkcloud_domain.tenancy import Environment, IngestApp, LiveSecret

_credentials = app_credentials.c


class SqlIngestDirectory:
    """Implements `IngestDirectory`."""

    def __init__(self, engine: AsyncEngine, secret_box: SecretBox, clock: Clock) -> None:
        self._engine = engine
        self._secret_box = secret_box
        self._clock = clock

    async def find_ingest_app(self, org_id: str, app_id: str) -> IngestApp | None:
        # One row per live credential (or one row with NULL credential columns when none).
        query = (
            select(
                apps.c.environment,
                apps.c.active,
                orgs.c.plan,
                orgs.c.custom_events_per_month,
                orgs.c.custom_retention_days,
                _credentials.token_hash,
                _credentials.secret_ciphertext,
                _credentials.expires_at,
            )
            .select_from(
                apps.join(orgs, orgs.c.id == apps.c.org_id).outerjoin(
                    app_credentials,
                    and_(
                        _credentials.app_id == apps.c.id,
                        _credentials.revoked_at.is_(None),
                        or_(
                            _credentials.expires_at.is_(None),
                            _credentials.expires_at > self._clock.now(),
                        ),
                    ),
                )
            )
            .where(apps.c.id == app_id, apps.c.org_id == org_id)
            .order_by(_credentials.created_at.desc(), _credentials.id)
        )
        with database_errors():
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        if not rows:
            return None
        first = rows[0]
        plan = Plan(first.plan)
        return IngestApp(
            org_id=org_id,
            app_id=app_id,
            environment=Environment(first.environment),
            active=first.active,
            plan=plan,
            org_limits=limits_for(
                plan,
                custom_events_per_month=first.custom_events_per_month,
                custom_retention_days=first.custom_retention_days,
            ),
            secrets=tuple(
                LiveSecret(
                    token_hash=row.token_hash,
                    secret=self._secret_box.decrypt(row.secret_ciphertext),
                    expires_at=row.expires_at,
                )
                for row in rows
                if row.token_hash is not None
            ),
        )
