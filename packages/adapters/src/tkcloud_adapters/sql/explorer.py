"""The events explorer and export on SQL (`EventReader`), and the Parquet encoding of an export.

Reads go by keyset on (timestamp, event_id) over the (app_id, timestamp) index, one short query
per page or batch. A server-side cursor would give the export a snapshot, but would also hold a
pooled connection and an open transaction for as long as the slowest client takes to download,
which pins vacuum on Postgres and a WAL snapshot on SQLite; keyset batches hold nothing between
batches and still serve every event present throughout the export exactly once.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import ColumnElement, Row, Select, Text, and_, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.schema import events
from tkcloud_application.ports.explorer import EventFilters, Position, StoredEvent

# The flat columns of StoredEvent, in its field order; raw is read as text so that it is never
# decoded into Python objects only to be encoded again.
_COLUMNS = (
    events.c.event_id,
    events.c.timestamp,
    events.c.received_at,
    events.c.event_type,
    events.c.user_id,
    events.c.session_id,
    events.c.service_name,
    events.c.service_version,
    events.c.os,
    events.c.arch,
    events.c.ci,
    events.c.shell,
    events.c.sdk_version,
    events.c.command,
    events.c.success,
    events.c.duration_ms,
    events.c.exit_code,
    events.c.feature,
    cast(events.c.raw, Text).label("raw"),
)


class SqlEventReader:
    """Implements `EventReader` on Postgres and SQLite."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def page(
        self,
        app_id: str,
        *,
        before: Position | None,
        limit: int,
        filters: EventFilters,
    ) -> list[StoredEvent]:
        query = select(*_COLUMNS).where(events.c.app_id == app_id, *_filter_clauses(filters))
        if before is not None:
            query = query.where(_older_than(before))
        query = query.order_by(events.c.timestamp.desc(), events.c.event_id.desc()).limit(limit)
        return await self._fetch(query)

    async def get(self, app_id: str, event_id: str) -> StoredEvent | None:
        try:
            uuid.UUID(event_id)
        except ValueError:
            # Postgres would refuse the cast with an error; a malformed id simply matches nothing.
            return None
        query = select(*_COLUMNS).where(events.c.app_id == app_id, events.c.event_id == event_id)
        found = await self._fetch(query)
        return found[0] if found else None

    async def stream(
        self, app_id: str, start: datetime, end: datetime, *, batch_size: int
    ) -> AsyncIterator[list[StoredEvent]]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        base = (
            select(*_COLUMNS)
            .where(
                events.c.app_id == app_id,
                events.c.timestamp >= start,
                events.c.timestamp < end,
            )
            .order_by(events.c.timestamp, events.c.event_id)
            .limit(batch_size)
        )
        after: Position | None = None
        while True:
            query = base if after is None else base.where(_newer_than(after))
            batch = await self._fetch(query)
            if not batch:
                return
            # Yielded outside database_errors(): errors of the consumer are not ours to translate.
            yield batch
            if len(batch) < batch_size:
                return
            after = (batch[-1].timestamp, batch[-1].event_id)

    async def _fetch(self, query: Select[Any]) -> list[StoredEvent]:
        with database_errors():
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        return [_stored_event(row) for row in rows]


def _filter_clauses(filters: EventFilters) -> list[ColumnElement[bool]]:
    wanted = {
        events.c.event_type: filters.event_type,
        events.c.service_version: filters.service_version,
        events.c.os: filters.os,
        events.c.user_id: filters.user_id,
    }
    return [column == value for column, value in wanted.items() if value is not None]


def _older_than(position: Position) -> ColumnElement[bool]:
    """(timestamp, event_id) < position. The plain `timestamp <=` bound is redundant, but it is
    what lets the planner turn the condition into an index range instead of a filter."""
    timestamp, event_id = position
    return and_(
        events.c.timestamp <= timestamp,
        or_(
            events.c.timestamp < timestamp,
            and_(events.c.timestamp == timestamp, events.c.event_id < event_id),
        ),
    )


def _newer_than(position: Position) -> ColumnElement[bool]:
    """(timestamp, event_id) > position, with the same index-friendly bound."""
    timestamp, event_id = position
    return and_(
        events.c.timestamp >= timestamp,
        or_(
            events.c.timestamp > timestamp,
            and_(events.c.timestamp == timestamp, events.c.event_id > event_id),
        ),
    )


def _stored_event(row: Row[Any]) -> StoredEvent:
    m = row._mapping
    return StoredEvent(
        event_id=m["event_id"],
        timestamp=m["timestamp"],
        received_at=m["received_at"],
        event_type=m["event_type"],
        user_id=m["user_id"],
        session_id=m["session_id"],
        service_name=m["service_name"],
        service_version=m["service_version"],
        os=m["os"],
        arch=m["arch"],
        ci=m["ci"],
        shell=m["shell"],
        sdk_version=m["sdk_version"],
        command=m["command"],
        success=m["success"],
        duration_ms=m["duration_ms"],
        exit_code=m["exit_code"],
        feature=m["feature"],
        raw=m["raw"],
    )


# --- Parquet ------------------------------------------------------------------------------------
# Not SQL, but the export's other adapter; it lives here until the export gets a module of its
# own (tkcloud_adapters/export/).

_UTC_MICROS = pa.timestamp("us", tz="UTC")

PARQUET_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("timestamp", _UTC_MICROS, nullable=False),
        pa.field("received_at", _UTC_MICROS, nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("service_name", pa.string(), nullable=False),
        pa.field("service_version", pa.string(), nullable=False),
        pa.field("os", pa.string()),
        pa.field("arch", pa.string()),
        pa.field("ci", pa.bool_()),
        pa.field("shell", pa.string()),
        pa.field("sdk_version", pa.string()),
        pa.field("command", pa.string()),
        pa.field("success", pa.bool_()),
        pa.field("duration_ms", pa.int64()),
        pa.field("exit_code", pa.int32()),
        pa.field("feature", pa.string()),
        pa.field("raw", pa.string(), nullable=False),
    ]
)


class ArrowParquetEncoder:
    """Implements `ParquetEncoder` with pyarrow: one row group per batch, its bytes handed on as
    soon as they are written, then the footer. Peak memory is about one batch, encoded twice."""

    def __init__(self, compression: str = "zstd") -> None:
        self._compression = compression

    async def encode(self, batches: AsyncIterator[list[StoredEvent]]) -> AsyncIterator[bytes]:
        sink = _DrainableSink()
        writer = pq.ParquetWriter(sink, PARQUET_SCHEMA, compression=self._compression)
        try:
            async for batch in batches:
                writer.write_batch(_record_batch(batch))
                chunk = sink.drain()
                if chunk:
                    yield chunk
        finally:
            # Also on an abandoned download: the writer's native buffers are released here.
            writer.close()
        yield sink.drain()


def _record_batch(batch: Sequence[StoredEvent]) -> Any:
    columns = {name: [getattr(e, name) for e in batch] for name in PARQUET_SCHEMA.names}
    return pa.RecordBatch.from_pydict(columns, schema=PARQUET_SCHEMA)


class _DrainableSink(io.RawIOBase):
    """A write-only file that hands over what was written so far and forgets it.

    io.BytesIO cannot do this: truncating it would rewind tell(), and the Parquet footer records
    the absolute offsets of the row groups, so the position must keep counting.
    """

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        drained = b"".join(self._chunks)
        self._chunks.clear()
        return drained
