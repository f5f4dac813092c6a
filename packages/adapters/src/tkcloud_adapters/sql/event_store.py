"""The event store and usage report on SQL: the ingestion hot path's only write.

A batch is stored in one transaction: its keys go into `event_keys` first (ON CONFLICT DO
NOTHING RETURNING), and only the events whose key was new go into `events`, which on Postgres is
partitioned by month and cannot hold the (app_id, event_id) deduplication key itself (see
migration 0005). Both backends run this same path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.rollups import SqlRollups
from tkcloud_adapters.sql.schema import apps, dnt_daily, event_keys, usage_monthly
from tkcloud_adapters.sql.schema import events as events_table
from tkcloud_adapters.sql.upsert import adding
from tkcloud_application.ports.tenancy import AppUsage
from tkcloud_domain.events import EventSchema
from tkcloud_domain.limits import QuotaScope
from tkcloud_domain.months import month_key
from tkcloud_domain.tenancy import Environment, IngestApp

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_NUL_ESCAPE = "\\u0000"
# The escape itself, not an escaped backslash followed by "u0000": an even run of backslashes.
_NUL_IN_JSON = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class SqlEventStore:
    """Implements `EventStore` and `UsageReport`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        # SQLAlchemy's "insertmanyvalues" sends the rows as multi-row INSERT statements (as few
        # as the driver's parameter limit allows) and gathers RETURNING across them.
        self._insert_keys = (
            insert(event_keys)
            .on_conflict_do_nothing(index_elements=[event_keys.c.app_id, event_keys.c.event_id])
            .returning(event_keys.c.event_id)
        )
        # No RETURNING: the keys above already tell what is new. DO NOTHING only guards against
        # an event stored without its key (never written so): it must not fail the batch, which
        # the SDK would then resend forever.
        self._insert_events = insert(events_table).on_conflict_do_nothing()
        self._add_usage = adding(insert(usage_monthly), usage_monthly, ("events",))
        # FOR SHARE, on Postgres only: see store().
        self._app_environment = (
            select(apps.c.environment)
            .where(apps.c.id == bindparam("app_id"))
            .with_for_update(read=True)
        )
        self._add_dnt = adding(insert(dnt_daily), dnt_daily, ("requests",))

    async def store(
        self, app: IngestApp, events: Sequence[EventSchema], received_at: datetime
    ) -> int:
        unique = {e.event_id: e for e in reversed(events)}  # the first of an id wins
        # A fixed lock order: concurrent batches sharing ids cannot deadlock each other.
        rows = [_event_row(app, unique[key], received_at) for key in sorted(unique)]
        if not rows:
            return 0
        with database_errors():
            async with self._engine.begin() as conn:
                # The app as it is now, not as the ingest cache last saw it: a promotion in
                # another process either waits for this batch (and deletes it with the staging
                # events) or has committed, and the batch counts as production.
                environment = app.environment.value
                if self._engine.dialect.name == "postgresql":
                    # On SQLite a read first would turn concurrent writers into BUSY errors;
                    # its writers are serialised anyway, so the race below cannot happen there.
                    current = (
                        await conn.execute(self._app_environment, {"app_id": app.app_id})
                    ).scalar_one_or_none()
                    environment = current or environment
                # The ids this batch stored, in this open transaction: the place for any other
                # write that must commit with exactly the new events.
                inserted_ids = await self._insert_new(conn, rows)
                if inserted_ids:
                    new = set(inserted_ids)
                    moments = [row["timestamp"] for row in rows if row["event_id"] in new]
                    await SqlRollups.enqueue(
                        conn, app.app_id, inserted_ids, min(moments), max(moments)
                    )
                    usage = {
                        "org_id": app.org_id,
                        "app_id": app.app_id,
                        "environment": environment,
                        "month": month_key(received_at),
                        "events": len(inserted_ids),
                    }
                    await conn.execute(self._add_usage, usage)
        return len(inserted_ids)

    async def _insert_new(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> list[str]:
        """Insert the rows whose (app_id, event_id) is not stored yet; returns their event ids.

        The rows come sorted by event id, so concurrent batches take the keys' locks in the same
        order: a batch sharing ids with another waits for it to commit, then finds them taken.
        """
        keys = [
            {"app_id": row["app_id"], "event_id": row["event_id"], "timestamp": row["timestamp"]}
            for row in rows
        ]
        new = set((await conn.execute(self._insert_keys, keys)).scalars())
        fresh = [row for row in rows if row["event_id"] in new]
        if fresh:
            await conn.execute(self._insert_events, fresh)
        return [row["event_id"] for row in fresh]

    async def events_this_month(self, scope: QuotaScope, month: str) -> int:
        if scope.kind == "org":
            where = and_(
                usage_monthly.c.org_id == scope.id,
                usage_monthly.c.environment == Environment.PRODUCTION.value,
            )
        elif scope.kind == "app":
            where = and_(
                usage_monthly.c.app_id == scope.id,
                usage_monthly.c.environment == Environment.STAGING.value,
            )
        else:
            raise ValueError(f"unknown quota scope kind {scope.kind!r}")
        query = select(func.coalesce(func.sum(usage_monthly.c.events), 0)).where(
            where, usage_monthly.c.month == month
        )
        with database_errors():
            async with self._engine.connect() as conn:
                total = (await conn.execute(query)).scalar_one()
        return int(total)  # Postgres sums bigints as numeric

    async def count_dnt(self, app: IngestApp, day: date) -> None:
        with database_errors():
            async with self._engine.begin() as conn:
                await conn.execute(self._add_dnt, {"app_id": app.app_id, "day": day, "requests": 1})

    async def dnt_requests(self, app_id: str, since: date | None = None) -> int:
        query = select(func.coalesce(func.sum(dnt_daily.c.requests), 0)).where(
            dnt_daily.c.app_id == app_id
        )
        if since is not None:
            query = query.where(dnt_daily.c.day >= since)
        with database_errors():
            async with self._engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def monthly_usage(self, month: str, org_id: str | None = None) -> list[AppUsage]:
        """One entry per app and environment with events in the month; an app without any has
        one entry, in its current environment, with 0. Ordered by org, app, environment."""
        environment = func.coalesce(usage_monthly.c.environment, apps.c.environment)
        query = (
            select(
                apps.c.org_id,
                apps.c.id,
                environment,
                func.coalesce(usage_monthly.c.events, 0),
            )
            .select_from(
                apps.outerjoin(
                    usage_monthly,
                    and_(usage_monthly.c.app_id == apps.c.id, usage_monthly.c.month == month),
                )
            )
            .order_by(apps.c.org_id, apps.c.id, environment)
        )
        if org_id is not None:
            query = query.where(apps.c.org_id == org_id)
        with database_errors():
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [
            AppUsage(
                org_id=row[0],
                app_id=row[1],
                environment=Environment(row[2]),
                month=month,
                events=int(row[3]),
            )
            for row in rows
        ]


def _event_row(app: IngestApp, event: EventSchema, received_at: datetime) -> dict[str, Any]:
    env = event.environment
    exit_code = event.data_int("exit_code")
    raw = event.raw.decode() if event.raw else _encode(event)
    row: dict[str, Any] = {
        "org_id": app.org_id,
        "app_id": app.app_id,
        "event_id": event.event_id,
        "timestamp": event.timestamp,
        "received_at": received_at,
        "schema_version": event.schema_version,
        "event_type": event.event_type,
        "event_category": event.event_category,
        "user_id": event.user_id,
        "session_id": event.session_id,
        "service_name": event.service_name,
        "service_version": event.service_version,
        "service_language": event.service_language,
        "service_language_version": event.service_language_version,
        "os": env.os,
        "os_version": env.os_version,
        "arch": env.arch,
        "ci": env.ci,
        "shell": env.shell,
        "sdk_version": event.sdk_version,
        "command": event.data_str("command"),
        "subcommand": event.data_str("subcommand"),
        "success": event.data_bool("success"),
        "duration_ms": event.data_int("duration_ms"),
        # An exit code beyond 32 bits is noise; storing it would fail the whole batch.
        "exit_code": exit_code
        if exit_code is not None and _INT32_MIN <= exit_code <= _INT32_MAX
        else None,
        "feature": event.data_str("feature"),
        "raw": raw,
    }
    # A NUL character can only arrive as the JSON escape; the search is cheap, the rewrite rare.
    return _without_nul(row) if _NUL_ESCAPE in raw else row


def _without_nul(row: dict[str, Any]) -> dict[str, Any]:
    """Postgres refuses NUL in text and jsonb, which would fail the whole batch (and the SDK
    would resend it forever): store U+FFFD in its place, on every backend alike."""
    clean = {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v for k, v in row.items()}
    clean["raw"] = _NUL_IN_JSON.sub(r"\1\\ufffd", row["raw"])
    return clean


def _encode(event: EventSchema) -> str:
    """JSON for an event built without its wire text (not decoded from a request)."""
    env = event.environment
    return json.dumps(
        {
            "schema_version": event.schema_version,
            "event_id": event.event_id,
            "timestamp": event.timestamp.isoformat().replace("+00:00", "Z"),
            "service": {
                "name": event.service_name,
                "version": event.service_version,
                "language": event.service_language,
                "language_version": event.service_language_version,
            },
            "user_id": event.user_id,
            "session_id": event.session_id,
            "environment": {
                "os": env.os,
                "os_version": env.os_version,
                "arch": env.arch,
                "ci": env.ci,
                "shell": env.shell,
            },
            "event": {
                "type": event.event_type,
                "category": event.event_category,
                "data": event.event_data,
            },
            "metadata": event.metadata,
        }
    )
