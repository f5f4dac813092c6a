"""The retention job's deletes on SQL (`EventPurger`): small batches, each its own transaction.

A batch is chosen by the (app_id, timestamp) index and deleted by physical row address (ctid on
Postgres, rowid on SQLite), so each statement touches at most `batch_size` rows, holds its locks
briefly, and never waits behind, or blocks, the ingestion hot path's inserts for long.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Delete, and_, delete, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.rollups import SqlRollups
from tkcloud_adapters.sql.schema import events


class SqlEventPurger:
    """Implements `EventPurger` on Postgres and SQLite."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._rollups = SqlRollups(engine)

    async def purge(self, app_id: str, older_than: datetime, batch_size: int) -> int:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        statement = self._batch(app_id, older_than, batch_size)
        total = 0
        while True:
            with database_errors():
                async with self._engine.begin() as conn:
                    deleted = (await conn.execute(statement)).rowcount
            total += deleted
            if deleted < batch_size:
                await self._rollups.purge(app_id, older_than)
                return total

    def _batch(self, app_id: str, older_than: datetime, batch_size: int) -> Delete:
        old = and_(events.c.app_id == app_id, events.c.timestamp < older_than)
        address: ColumnElement[object] = literal_column("ctid" if self._postgres else "rowid")
        doomed = select(address).select_from(events).where(old).limit(batch_size)
        # Postgres plans `ctid IN (SELECT ctid ...)` as a TID scan per chosen row.
        return delete(events).where(address.in_(doomed.scalar_subquery()))
