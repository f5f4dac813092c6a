"""Rollup maintenance on SQL: folding queued batches into the rollup tables, and rebuilding them.

Ingestion adds one `rollup_queue` row per stored batch in the batch's own transaction
(`enqueue`). `catch_up` folds queued batches: it reads their events, adds their
`RollupDelta` to the rollup tables and deletes the queue rows, all in one transaction, so a
batch is folded exactly once whatever fails when. One fold runs at a time (an advisory lock on
Postgres, a write transaction taken up front on SQLite), because folding reads the sessions'
first-seen instants before it moves their start counters.

Who folds: every service process runs `catch_up` every second or so, and an analytics read
first folds its app's queued batches (waiting at most a second for a fold in progress), so the
dashboard sees an event as soon as its batch is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    any_,
    delete,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.schema import (
    ROLLUP_TABLES,
    events,
    rollup_counts,
    rollup_durations,
    rollup_first_seen,
    rollup_queue,
    rollup_user_days,
)
from tkcloud_adapters.sql.upsert import adding
from tkcloud_domain.rollups import DAY, WEEK, RolledEvent, RollupDelta, UserDayKey

# Postgres advisory lock key of the fold ("tkroll" in ASCII), and lock_timeout's SQLSTATE.
_FOLD_LOCK = 0x746B726F6C6C
_LOCK_NOT_AVAILABLE = "55P03"
# Every statement of a fold is an index lookup or range scan, into tables that grow as it runs
# (a rebuild starts from empty ones): a plan made while a table was small (and cached by the
# driver's prepared statements) would scan it whole each time it is reused.
_INDEXES_ONLY = "SET LOCAL enable_seqscan = off"
# A rebuild refills the app's first-seen rows as it goes, and looks sessions up in them each day.
# Planned with the statistics of a table without them (all of them, the first time), that lookup
# prefers the narrower (app_id, kind, slice, first_seen) index and filters every session of the
# app by key, so each day took longer than the one before (a 10M-event rebuild took 13 minutes).
# ANALYZE sees the transaction's own rows; it runs after days 1, 2, 4, 8, ..., as they double.
_FRESH_STATISTICS = "ANALYZE rollup_first_seen"
# Queue rows folded per transaction: bounded so a fold holds its lock briefly.
FOLD_BATCHES = 200
# Bind parameters per statement stay far below both drivers' limits.
_KEYS_PER_QUERY = 2_000

_ROLLED_COLUMNS = [events.c[name] for name in RolledEvent.__dataclass_fields__]


class SqlRollups:
    """Implements `RollupMaintainer`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        insert = postgresql.insert if self._postgres else sqlite.insert
        self._add_counts = adding(
            insert(rollup_counts), rollup_counts, ("events", "reported", "successes", "failures")
        )
        self._add_durations = adding(insert(rollup_durations), rollup_durations, ("events",))
        user_days = insert(rollup_user_days)
        # Both upserts write only when the row changes: an unchanged row rewritten by every
        # fold (each active user, every day) would leave a dead version behind each time, and
        # a rebuild, in one transaction, cannot prune them.
        merged_hours = rollup_user_days.c.hours.op("|")(user_days.excluded.hours)
        self._add_user_days = user_days.on_conflict_do_update(
            index_elements=list(rollup_user_days.primary_key.columns),
            set_={"hours": merged_hours},
            where=merged_hours != rollup_user_days.c.hours,
        )
        first_seen = insert(rollup_first_seen)
        self._add_first_seen = first_seen.on_conflict_do_update(
            index_elements=list(rollup_first_seen.primary_key.columns),
            set_={"first_seen": first_seen.excluded.first_seen},
            where=first_seen.excluded.first_seen < rollup_first_seen.c.first_seen,
        )
        # SQLite: the fold's transaction is the only writer of rollups in this process.
        self._sqlite_lock = asyncio.Lock()

    @staticmethod
    async def enqueue(
        conn: AsyncConnection,
        app_id: str,
        event_ids: Sequence[str],
        first: datetime,
        last: datetime,
    ) -> None:
        """Queue a stored batch, in the batch's own transaction: the ids of the events it
        inserted, and bounds of their timestamps."""
        if event_ids:
            await conn.execute(
                rollup_queue.insert(),
                {
                    "app_id": app_id,
                    "event_ids": json.dumps(list(event_ids)),
                    "first_timestamp": first,
                    "last_timestamp": last,
                },
            )

    async def pending(self, app_id: str | None = None, *, at_least_one: bool = False) -> int:
        """Batches queued (of one app, or all); with `at_least_one`, 1 if any (a cheaper probe)."""
        mine = [] if app_id is None else [rollup_queue.c.app_id == app_id]
        query = select(func.count()).select_from(rollup_queue).where(*mine)
        if at_least_one:
            query = select(select(rollup_queue.c.id).where(*mine).exists())
        with database_errors():
            async with self._engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

    async def catch_up(
        self, app_id: str | None = None, max_batches: int | None = None, wait: float | None = None
    ) -> int:
        """Fold queued batches (of one app, or all) until none is left or `max_batches` are
        folded; returns the number folded. `wait`: seconds to wait for a fold in progress before
        giving up (returning 0); None waits as long as it takes."""
        if not await self.pending(app_id, at_least_one=True):
            return 0  # the usual case, without taking the fold lock
        folded = 0
        while max_batches is None or folded < max_batches:
            limit = FOLD_BATCHES if max_batches is None else min(FOLD_BATCHES, max_batches - folded)
            done = await self._fold_some(app_id, limit, wait)
            if done is None:
                break
            folded += done
            if done < limit:
                break
        return folded

    async def _fold_some(self, app_id: str | None, limit: int, wait: float | None) -> int | None:
        query = select(rollup_queue).order_by(rollup_queue.c.id).limit(limit)
        if app_id is not None:
            query = query.where(rollup_queue.c.app_id == app_id)
        async with self._folding(wait) as conn:
            if conn is None:
                return None
            queued = (await conn.execute(query)).all()
            by_app: dict[str, list[Any]] = {}
            for row in queued:
                by_app.setdefault(row.app_id, []).append(row)
            for app, rows in by_app.items():
                delta = RollupDelta().add_all(await self._queued_events(conn, app, rows))
                await self._apply(conn, app, delta)
            if queued:
                await conn.execute(
                    delete(rollup_queue).where(rollup_queue.c.id.in_([row.id for row in queued]))
                )
            return len(queued)

    @contextlib.asynccontextmanager
    async def _folding(self, wait: float | None) -> AsyncIterator[AsyncConnection | None]:
        """The fold's transaction, with the fold lock held (None: not had within `wait`)."""
        with database_errors():
            async with self._sqlite_guard(), self._engine.connect() as conn:
                if not self._postgres:
                    # The write lock now, not at the first write after the reads (which would
                    # fail with SQLITE_BUSY if another writer committed in between).
                    conn = await conn.execution_options(sqlite_begin_immediate=True)
                async with conn.begin():
                    if self._postgres and not await self._lock(conn, wait):
                        yield None
                        return
                    if self._postgres:
                        await conn.execute(text(_INDEXES_ONLY))
                    yield conn

    async def _lock(self, conn: AsyncConnection, wait: float | None) -> bool:
        if wait == 0:
            locked = select(func.pg_try_advisory_xact_lock(_FOLD_LOCK))
            return bool((await conn.execute(locked)).scalar_one())
        if wait is not None:
            milliseconds = max(1, int(wait * 1000))
            await conn.execute(text(f"SET LOCAL lock_timeout = {milliseconds}"))
        try:
            async with conn.begin_nested():
                await conn.execute(select(func.pg_advisory_xact_lock(_FOLD_LOCK)))
        except DBAPIError as error:
            if wait is not None and getattr(error.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
                return False
            raise
        await conn.execute(text("SET LOCAL lock_timeout = 0"))
        return True

    def _sqlite_guard(self) -> contextlib.AbstractAsyncContextManager[object]:
        return contextlib.nullcontext() if self._postgres else self._sqlite_lock

    async def _queued_events(
        self, conn: AsyncConnection, app_id: str, rows: Sequence[Any]
    ) -> list[RolledEvent]:
        found: list[RolledEvent] = []
        for row in rows:
            ids = json.loads(row.event_ids)
            for start in range(0, len(ids), _KEYS_PER_QUERY):
                query = select(*_ROLLED_COLUMNS).where(
                    events.c.app_id == app_id,
                    # The batch's time range lets Postgres skip the other months' partitions.
                    events.c.timestamp >= row.first_timestamp,
                    events.c.timestamp <= row.last_timestamp,
                    events.c.event_id.in_(ids[start : start + _KEYS_PER_QUERY]),
                )
                found += [RolledEvent(*event) for event in (await conn.execute(query)).all()]
        return found

    async def rebuild(self, app_id: str) -> int:
        """Drop one app's rollups and fold all its stored events again, in one transaction that
        sees one snapshot: a batch stored meanwhile is either read here (and its queue row
        deleted) or folded later from the queue, never both. Returns the events folded."""
        with database_errors():
            async with self._rebuilding() as conn:
                await conn.execute(delete(rollup_queue).where(rollup_queue.c.app_id == app_id))
                for table in ROLLUP_TABLES:
                    await conn.execute(delete(table).where(table.c.app_id == app_id))
                span = select(func.min(events.c.timestamp), func.max(events.c.timestamp)).where(
                    events.c.app_id == app_id
                )
                first, last = (await conn.execute(span)).one()
                total = 0
                if first is None:
                    return total
                # A UTC day at a time, each an index range scan on (app_id, timestamp).
                start = first.replace(hour=0, minute=0, second=0, microsecond=0)
                days = 0
                while start <= last:
                    days += 1
                    if self._postgres and days & (days - 1) == 0:
                        await conn.execute(text(_FRESH_STATISTICS))
                    end = start + timedelta(days=1)
                    query = select(*_ROLLED_COLUMNS).where(
                        events.c.app_id == app_id,
                        events.c.timestamp >= start,
                        events.c.timestamp < end,
                    )
                    rows = (await conn.execute(query)).all()
                    await self._apply(
                        conn, app_id, RollupDelta().add_all(RolledEvent(*r) for r in rows)
                    )
                    total += len(rows)
                    start = end
                return total

    @contextlib.asynccontextmanager
    async def _rebuilding(self) -> AsyncIterator[AsyncConnection]:
        if not self._postgres:
            async with self._folding(None) as conn:  # SQLite transactions are serializable
                assert conn is not None
                yield conn
            return
        async with self._engine.connect() as conn:
            # A session-level lock, taken before the snapshot: a repeatable-read transaction's
            # snapshot is its first statement's, and it must not predate the last fold.
            await conn.execute(select(func.pg_advisory_lock(_FOLD_LOCK)))
            await conn.commit()
            try:
                snapshot = await conn.execution_options(isolation_level="REPEATABLE READ")
                async with snapshot.begin():
                    await snapshot.execute(text(_INDEXES_ONLY))
                    yield snapshot
            finally:
                await conn.execution_options(isolation_level="READ COMMITTED")
                await conn.execute(select(func.pg_advisory_unlock(_FOLD_LOCK)))
                await conn.commit()

    async def purge(self, app_id: str, older_than: datetime) -> None:
        """Delete one app's rollups of the hours before `older_than` (the retention job). A
        day row goes with the last of its hours, a week row with the last of its days; users'
        first-seen instants stay (a user seen before the retention horizon is not new after
        it), sessions' go."""
        midnight = older_than.replace(hour=0, minute=0, second=0, microsecond=0)
        with database_errors():
            async with self._engine.begin() as conn:
                for table in (rollup_counts, rollup_durations):
                    await conn.execute(
                        delete(table).where(
                            table.c.app_id == app_id,
                            or_(
                                and_(table.c.grain == "h", table.c.at < older_than),
                                and_(table.c.grain == "d", table.c.at < midnight),
                                and_(table.c.grain == "w", table.c.at <= midnight - WEEK),
                            ),
                        )
                    )
                await conn.execute(
                    delete(rollup_user_days).where(
                        rollup_user_days.c.app_id == app_id,
                        rollup_user_days.c.day < midnight.date(),
                    )
                )
                await conn.execute(
                    delete(rollup_first_seen).where(
                        rollup_first_seen.c.app_id == app_id,
                        rollup_first_seen.c.kind == "session",
                        rollup_first_seen.c.first_seen < older_than,
                    )
                )

    async def _apply(self, conn: AsyncConnection, app_id: str, delta: RollupDelta) -> None:
        if not delta.events:
            return
        known = await self._known_sessions(conn, app_id, delta)
        for key, change in delta.session_start_moves(known):
            delta.counts[key][0] += change
        stored = await self._stored_hours(conn, app_id, delta)
        for key, change in delta.day_window_changes(stored):
            delta.counts[key][0] += change
        counts = [
            {
                "app_id": app_id,
                "slice": name,
                "kind": kind,
                "grain": grain,
                "at": at,
                "key": key,
                "subkey": subkey,
                "events": values[0],
                "reported": values[1],
                "successes": values[2],
                "failures": values[3],
            }
            for (name, kind, grain, at, key, subkey), values in sorted(delta.counts.items())
        ]
        durations = [
            {
                "app_id": app_id,
                "slice": name,
                "grain": grain,
                "at": at,
                "command": command,
                "bucket": bucket,
                "events": n,
            }
            for (name, grain, at, command, bucket), n in sorted(delta.durations.items())
        ]
        user_days = [
            {"app_id": app_id, "slice": name, "day": day, "user_key": user, "hours": hours}
            for (name, day, user), hours in sorted(delta.user_hours.items())
        ]
        first_seen = [
            {"app_id": app_id, "kind": kind, "slice": name, "key": key, "first_seen": moment}
            for (kind, name, key), moment in sorted(delta.first_seen.items())
        ]
        for statement, rows in (
            (self._add_counts, counts),
            (self._add_durations, durations),
            (self._add_user_days, user_days),
            (self._add_first_seen, first_seen),
        ):
            for chunk in _chunks(rows, _KEYS_PER_QUERY):
                await conn.execute(statement, chunk)

    async def _known_sessions(
        self, conn: AsyncConnection, app_id: str, delta: RollupDelta
    ) -> dict[tuple[str, int], datetime]:
        keys = sorted({key for kind, _, key in delta.first_seen if kind == "session"})
        known: dict[tuple[str, int], datetime] = {}
        for chunk in _chunks(keys, _KEYS_PER_QUERY):
            which = self._among(rollup_first_seen.c.key, chunk)
            query = select(
                rollup_first_seen.c.slice, rollup_first_seen.c.key, rollup_first_seen.c.first_seen
            ).where(
                rollup_first_seen.c.app_id == app_id,
                rollup_first_seen.c.kind == "session",
                which,
            )
            for name, key, moment in (await conn.execute(query)).all():
                known[(name, key)] = moment
        return known

    def _among(self, column: ColumnElement[int], keys: Sequence[int]) -> ColumnElement[bool]:
        """`column IN keys`; on Postgres as one array parameter, so that one prepared statement
        serves any number of keys."""
        if self._postgres:
            return column == any_(literal(list(keys), ARRAY(BigInteger)))
        return column.in_(keys)

    async def _stored_hours(
        self, conn: AsyncConnection, app_id: str, delta: RollupDelta
    ) -> dict[UserDayKey, int]:
        """The stored hour masks of the delta's user-days and of the days either side."""
        wanted = {
            (name, day + shift, user)
            for name, day, user in delta.user_hours
            for shift in (-DAY, timedelta(0), DAY)
        }
        if not wanted:
            return {}
        names = sorted({name for name, _, _ in wanted})
        first, last = min(day for _, day, _ in wanted), max(day for _, day, _ in wanted)
        users = sorted({user for _, _, user in wanted})
        t = rollup_user_days
        stored: dict[UserDayKey, int] = {}
        for chunk in _chunks(users, _KEYS_PER_QUERY):
            which = self._among(t.c.user_key, chunk)
            query = select(t.c.slice, t.c.day, t.c.user_key, t.c.hours).where(
                t.c.app_id == app_id,
                t.c.slice.in_(names),
                t.c.day >= first,
                t.c.day <= last,
                which,
            )
            for name, day, user, hours in (await conn.execute(query)).all():
                if (name, day, user) in wanted:
                    stored[(name, day, user)] = hours
        return stored


async def forget_rollups(conn: AsyncConnection, app_id: str) -> None:
    """Delete one app's rollups and queued batches, in `conn`'s transaction, which is deleting
    the app's events. Folds are kept out until it ends (after waiting for one in progress): a
    concurrent fold would otherwise deadlock with it, or fold into rollups just deleted. (On
    SQLite write transactions are serialised anyway.)"""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_FOLD_LOCK)))
    for table in (rollup_queue, *ROLLUP_TABLES):
        await conn.execute(delete(table).where(table.c.app_id == app_id))


def _chunks(rows: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
