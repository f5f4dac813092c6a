"""The retention job's deletes on SQL (`EventPurger`): small batches, each its own transaction,
and on Postgres whole monthly partitions made ahead and dropped once expired (sql/partitions.py).

A batch is chosen by the (app_id, timestamp) index and deleted by physical row address (ctid on
Postgres, rowid on SQLite), so each statement touches at most `batch_size` rows, holds its locks
briefly, and never waits behind, or blocks, the ingestion hot path's inserts for long. A ctid is
unique only within one partition (every partition has a row (0,1)), so on Postgres the batches
run partition by partition, never on `events` itself; partitions that start after the cut-off
are skipped. The deleted events' keys go in the same transaction: a key without its event would
turn a later resend of that event into a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    TableClause,
    and_,
    column,
    delete,
    literal_column,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tkcloud_adapters.sql import partitions
from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.rollups import SqlRollups
from tkcloud_adapters.sql.schema import event_keys, events


class SqlEventPurger:
    """Implements `EventPurger` on Postgres and SQLite."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._rollups = SqlRollups(engine)

    async def prepare(self, now: datetime) -> list[str]:
        return await partitions.create_ahead(self._engine, now)

    async def drop_expired(
        self, cutoffs: Mapping[str, datetime | None], batch_size: int
    ) -> list[str]:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return await partitions.drop_expired(self._engine, cutoffs, batch_size)

    async def purge(self, app_id: str, older_than: datetime, batch_size: int) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        total = 0
        for target in await self._tables(older_than):
            total += await self._purge(target, app_id, older_than, batch_size)
        # The rollups of those hours and days go too (whole partitions dropped meanwhile
        # included: every app with a retention is purged after the drops).
        await self._rollups.purge(app_id, older_than)
        return total

    async def _tables(self, older_than: datetime) -> list[TableClause]:
        """Where old rows can be: `events` on SQLite; on Postgres each partition that starts
        before the cut-off, and the default partition."""
        if not self._postgres:
            return [events]
        with database_errors():
            async with self._engine.connect() as conn:
                names = await partitions.partitions(conn)
        return [
            _partition(name)
            for name in names
            if (month := partitions.Month.parse(name)) is None or month.start < older_than
        ]

    async def _purge(
        self, rows: TableClause, app_id: str, older_than: datetime, batch_size: int
    ) -> int:
        old = and_(rows.c.app_id == app_id, rows.c.timestamp < older_than)
        address: ColumnElement[object] = literal_column("ctid" if self._postgres else "rowid")
        doomed = select(address).select_from(rows).where(old).limit(batch_size)
        # Postgres plans `ctid IN (SELECT ctid ...)` as a TID scan per chosen row.
        statement = (
            delete(rows).where(address.in_(doomed.scalar_subquery())).returning(rows.c.event_id)
        )
        total = 0
        while True:
            with database_errors():
                async with self._engine.begin() as conn:
                    gone = list((await conn.execute(statement)).scalars())
                    await _delete_keys(conn, app_id, gone)
            total += len(gone)
            if len(gone) < batch_size:
                return total


def _partition(name: str) -> TableClause:
    """One partition of `events`, with the columns a purge needs (their types bind values)."""
    return table(
        name,
        column("app_id", events.c.app_id.type),
        column("timestamp", events.c.timestamp.type),
        column("event_id", events.c.event_id.type),
    )


async def _delete_keys(conn: AsyncConnection, app_id: str, event_ids: list[str]) -> None:
    if event_ids:
        await conn.execute(
            delete(event_keys).where(
                event_keys.c.app_id == app_id, event_keys.c.event_id.in_(event_ids)
            )
        )
