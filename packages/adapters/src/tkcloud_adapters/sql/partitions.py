"""The monthly partitions of `events` on Postgres: made ahead, dropped once expired.

The table is PARTITION BY RANGE ("timestamp"), one partition per UTC month named
`events_YYYY_MM`, and `events_default` for any timestamp without one (migration 0005). The
retention job calls both functions below every run; on SQLite, which is not partitioned, they do
nothing.

Making: the current month's partition and the next `MONTHS_AHEAD` months' exist after a run. A
partition is made as a plain table, filled with the default partition's rows of its month (Postgres
refuses to attach a range the default holds rows for: e.g. a partition that was missing when they
arrived), then attached, all in one transaction holding the default partition locked, so no row
can land there meanwhile. ATTACH needs only SHARE UPDATE EXCLUSIVE on `events`: ingestion into
the other partitions goes on.

Dropping: a partition whose every row belongs to an app whose retention cut-off is at or after
the partition's end is detached and dropped whole, which costs no row deletes, no dead tuples and
no vacuum. The apps are read from the partition itself (a skip scan of its app_id index), so a
month any app still keeps stays until the batched per-app deletes (sql/retention.py) have taken
that app's old rows out; an app kept forever keeps the months it has rows in. DETACH takes ACCESS
EXCLUSIVE on `events` and so waits for running statements and holds ingestion back while it
waits: `lock_timeout` bounds that, and a run that times out tries again next time. The apps are
read again after the DETACH, under that lock, so a row that arrived in between keeps the month.
The detached table's event keys are then deleted in batches and the table dropped; a detached
table left by a run that stopped half-way is finished by the next one.

One worker at a time: every worker runs the job, so each run first takes a session advisory
lock and skips this part when another worker holds it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tkcloud_adapters.sql.errors import database_errors

logger = logging.getLogger(__name__)

MONTHS_AHEAD = 2
DEFAULT_PARTITION = "events_default"
# How long DDL may wait for a lock; meanwhile statements queued behind it wait too.
LOCK_TIMEOUT = "2s"
_LOCK_NOT_AVAILABLE = "55P03"
_NAME = re.compile(r"^events_(\d{4})_(\d{2})$")
# pg_try_advisory_lock key of partition maintenance: any constant no other code uses.
_ADVISORY_KEY = 0x746B_6576_7061_7274  # "tkevpart"
# Templates of statements naming a partition: the names are built from integers (Month.name) or
# read from the catalogue; values are bound.
_MOVE_FROM_DEFAULT = (
    'WITH moved AS (DELETE FROM {default} WHERE "timestamp" >= :start AND "timestamp" < :end'
    " RETURNING *) INSERT INTO {partition} SELECT * FROM moved"
)
_APPS_IN = (
    "WITH RECURSIVE a(app_id) AS ("
    " (SELECT app_id FROM {table} ORDER BY app_id LIMIT 1)"
    " UNION ALL"
    " SELECT (SELECT app_id FROM {table} WHERE app_id > a.app_id ORDER BY app_id LIMIT 1)"
    " FROM a WHERE a.app_id IS NOT NULL"
    ") SELECT app_id FROM a WHERE app_id IS NOT NULL"
)


@dataclass(frozen=True, slots=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        utc = moment.astimezone(UTC)
        return cls(utc.year, utc.month)

    @classmethod
    def parse(cls, name: str) -> Month | None:
        """The month of a partition name, None for another name."""
        found = _NAME.match(name)
        return cls(int(found[1]), int(found[2])) if found else None

    @property
    def name(self) -> str:
        return f"events_{self.year:04d}_{self.month:02d}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    def bounds_sql(self) -> str:
        # Literals, not parameters: DDL takes none. Built from integers only.
        return f"FROM ('{self.start.isoformat()}') TO ('{self.end.isoformat()}')"


async def partitions(conn: AsyncConnection) -> list[str]:
    """The names of the partitions attached to `events`."""
    query = text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'events'::regclass ORDER BY c.relname"
    )
    return list((await conn.execute(query)).scalars())


async def create_ahead(engine: AsyncEngine, now: datetime) -> list[str]:
    """Make the partitions of the current month and the next `MONTHS_AHEAD` that are missing;
    returns the names made."""
    if engine.dialect.name != "postgresql":
        return []
    months = [Month.of(now)]
    for _ in range(MONTHS_AHEAD):
        months.append(months[-1].next())
    made: list[str] = []
    with database_errors():
        async with engine.connect() as conn:
            if not await _try_lock(conn):
                return made
            try:
                existing = set(await partitions(conn))
                await conn.commit()
                for month in months:
                    if month.name not in existing and await _attach(conn, month):
                        made.append(month.name)
            finally:
                await _unlock(conn)
    return made


async def _attach(conn: AsyncConnection, month: Month) -> bool:
    name = month.name
    try:
        async with conn.begin():
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await conn.execute(text(f"LOCK TABLE {DEFAULT_PARTITION} IN ACCESS EXCLUSIVE MODE"))
            await conn.execute(
                text(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            )
            moved = await conn.execute(
                text(_MOVE_FROM_DEFAULT.format(default=DEFAULT_PARTITION, partition=name)),
                {"start": month.start, "end": month.end},
            )
            await conn.execute(
                text(f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES {month.bounds_sql()}")
            )
    except sa_exc.DBAPIError as exc:
        if not _lock_timed_out(exc):
            raise
        logger.warning("partition %s not made: a lock was not granted in time", name)
        return False
    if moved.rowcount:
        logger.info("partition %s made with %d event(s) from the default", name, moved.rowcount)
    return True


async def drop_expired(
    engine: AsyncEngine, cutoffs: Mapping[str, datetime | None], batch_size: int
) -> list[str]:
    """Detach and drop every monthly partition all of whose rows belong to apps in `cutoffs`
    with a cut-off (the start of what the app keeps; None: kept forever) at or after the
    partition's end, deleting the dropped events' keys; returns the names dropped."""
    if engine.dialect.name != "postgresql":
        return []
    # No month ending after the latest cut-off is dropped: every app keeps some of it.
    latest = max((c for c in cutoffs.values() if c is not None), default=None)
    dropped: list[str] = []
    with database_errors():
        async with engine.connect() as conn:
            if not await _try_lock(conn):
                return dropped
            try:
                for name in await _detached(conn):  # left by a run that stopped half-way
                    await _finish(conn, name, batch_size)
                    dropped.append(name)
                attached = await partitions(conn)
                await conn.commit()
                for name in attached:
                    month = Month.parse(name)
                    if month is None or latest is None or month.end > latest:
                        continue
                    expired = {
                        a for a, cut in cutoffs.items() if cut is not None and cut >= month.end
                    }
                    if await _apps_in(conn, name) <= expired and await _detach(conn, name, expired):
                        await _finish(conn, name, batch_size)
                        dropped.append(name)
                    await conn.commit()
            finally:
                await _unlock(conn)
    return dropped


async def _detach(conn: AsyncConnection, name: str, expired: set[str]) -> bool:
    await conn.commit()
    try:
        async with conn.begin() as transaction:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            await conn.execute(text(f"ALTER TABLE events DETACH PARTITION {name}"))
            # Again under the lock: a row stored since the first look may keep the month.
            if not await _apps_in(conn, name) <= expired:
                await transaction.rollback()
                return False
    except sa_exc.DBAPIError as exc:
        if not _lock_timed_out(exc):
            raise
        logger.warning("partition %s not dropped: a lock was not granted in time", name)
        return False
    return True


async def _finish(conn: AsyncConnection, name: str, batch_size: int) -> None:
    """Delete a detached partition's event keys in batches, then drop it."""
    month = Month.parse(name)
    assert month is not None
    # The keys of the month, except those of events stored since the DETACH (they went to the
    # default partition); the bounds on `e` let the planner prune to that partition.
    delete_keys = text(
        "DELETE FROM event_keys WHERE ctid IN (SELECT k.ctid FROM event_keys k"
        ' WHERE k."timestamp" >= :start AND k."timestamp" < :end AND NOT EXISTS ('
        '  SELECT 1 FROM events e WHERE e."timestamp" >= :start AND e."timestamp" < :end'
        '  AND e.app_id = k.app_id AND e."timestamp" = k."timestamp" AND e.event_id = k.event_id)'
        " LIMIT :limit)"
    )
    bounds = {"start": month.start, "end": month.end, "limit": batch_size}
    while True:
        async with conn.begin():
            deleted = (await conn.execute(delete_keys, bounds)).rowcount
        if deleted < batch_size:
            break
    async with conn.begin():
        await conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
    logger.info("partition %s dropped: past every retention", name)


async def _apps_in(conn: AsyncConnection, table: str) -> set[str]:
    """The app ids with rows in a partition: a skip scan of its (app_id, timestamp) index, one
    probe per app instead of a read of every row."""
    return set((await conn.execute(text(_APPS_IN.format(table=table)))).scalars())


async def _detached(conn: AsyncConnection) -> list[str]:
    """Monthly tables that are no partition: detached by a run that did not drop them."""
    query = text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition"
        " ORDER BY c.relname"
    )
    names = [name for name in (await conn.execute(query)).scalars() if Month.parse(name)]
    await conn.commit()
    return names


async def _try_lock(conn: AsyncConnection) -> bool:
    query = text("SELECT pg_try_advisory_lock(:key)")
    locked = bool((await conn.execute(query, {"key": _ADVISORY_KEY})).scalar_one())
    await conn.commit()
    return locked


async def _unlock(conn: AsyncConnection) -> None:
    await conn.rollback()  # a failed transaction would refuse the unlock
    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY})
    await conn.commit()


def _lock_timed_out(exc: sa_exc.DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE
