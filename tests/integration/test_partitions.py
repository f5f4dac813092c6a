"""Monthly partitions of `events` (Postgres) and the deduplication keys (both backends): events
go in through `SqlEventStore.store`, the partitions are made and dropped by `SqlEventPurger` and
the retention job, and what is left is read back from the catalogue and the tables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import fresh_database, own_database
from tests.integration.test_retention import NOW, SECOND, World
from tests.support.sdk import sdk_event
from tkcloud_adapters.sql import partitions
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.migrate import downgrade, upgrade
from tkcloud_adapters.sql.schema import event_keys, events
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Environment, IngestApp, Org

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    # Not migrated: the tests migrate it themselves, some to an older revision first.
    with own_database(request.param, tmp_path, "partitions", migrated=False) as url:
        yield url


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    try:
        yield World(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def pg() -> AsyncIterator[World]:
    """Postgres alone: SQLite is not partitioned."""
    async with fresh_database() as url:
        engine = create_engine(url)
        try:
            yield World(engine)
        finally:
            await engine.dispose()


def event(moment: datetime, event_id: str | None = None) -> EventSchema:
    wire = sdk_event(moment, **({"event_id": event_id} if event_id else {}))
    parsed = parse_event(json.dumps(wire).encode(), 0, now=max(NOW, moment), oldest=None)
    assert isinstance(parsed, EventSchema), parsed
    return parsed


async def store(world: World, org: Org, app: App, *stored: EventSchema) -> int:
    target = IngestApp(org.id, app.id, app.environment, True, org.plan, org.limits, ())
    return await world.store.store(target, stored, NOW)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql), params)).all())


async def keys(engine: AsyncEngine, app: App) -> int:
    query = select(func.count()).select_from(event_keys).where(event_keys.c.app_id == app.id)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def where_is(engine: AsyncEngine, event_id: str) -> list[str]:
    """The partitions holding the event id."""
    found = await rows(
        engine, "SELECT tableoid::regclass::text FROM events WHERE event_id = :id", id=event_id
    )
    return [row[0] for row in found]


def at(year: int, month: int, day: int = 10) -> datetime:
    return datetime(year, month, day, 12, tzinfo=UTC)


# --- deduplication ------------------------------------------------------------------------------


async def test_an_event_id_is_stored_once_whatever_its_timestamp(world: World) -> None:
    org = await world.org("Acme", Plan.PRO)
    app = await world.app(org, Environment.PRODUCTION)
    await world.purger.prepare(at(2026, 9))
    await world.purger.prepare(NOW)
    first = event(at(2026, 9))
    assert await store(world, org, app, first) == 1
    # The same id sent again with another month's timestamp: another partition, still a duplicate.
    assert await store(world, org, app, event(NOW - SECOND, first.event_id)) == 0
    assert await world.timestamps(app) == [at(2026, 9)]
    assert await keys(world.engine, app) == 1


async def test_promotion_forgets_the_staging_events_keys(world: World) -> None:
    org = await world.org("Acme", Plan.PRO)
    app = await world.app(org, Environment.STAGING)
    sent = event(NOW - SECOND)
    assert await store(world, org, app, sent) == 1
    promoted, deleted = await world.tenancy.promote_app(app.id)
    assert deleted == 1
    assert await keys(world.engine, app) == 0
    # Sent again after the promotion: stored as a production event, not taken for a duplicate
    # of one that no longer exists.
    assert await store(world, org, promoted, sent) == 1
    assert await world.count(app) == 1


# --- partitions made ahead ---------------------------------------------------------------------


async def test_partitions_are_made_ahead_with_utc_month_bounds(pg: World) -> None:
    made = await pg.purger.prepare(datetime(2027, 6, 30, 23, 30, tzinfo=UTC))
    assert made == ["events_2027_06", "events_2027_07", "events_2027_08"]
    assert await pg.purger.prepare(datetime(2027, 6, 1, tzinfo=UTC)) == []  # idempotent
    org = await pg.org("Acme", Plan.ENTERPRISE)
    app = await pg.app(org, Environment.PRODUCTION)
    last, first = event(datetime(2027, 7, 31, 23, 59, 59, tzinfo=UTC)), event(at(2027, 8, 1))
    assert await store(pg, org, app, last, first) == 2
    assert await where_is(pg.engine, last.event_id) == ["events_2027_07"]
    assert await where_is(pg.engine, first.event_id) == ["events_2027_08"]
    # Each new partition has the partitioned table's key and indexes.
    indexes = await rows(
        pg.engine, "SELECT indexdef FROM pg_indexes WHERE tablename = 'events_2027_07'"
    )
    assert len(indexes) == 3, indexes


async def test_rows_in_the_default_partition_move_into_their_new_partition(pg: World) -> None:
    org = await pg.org("Acme", Plan.ENTERPRISE)
    app = await pg.app(org, Environment.PRODUCTION)
    early, other = event(at(2027, 9, 3)), event(at(2027, 12, 25))
    assert await store(pg, org, app, early, other) == 2
    assert await where_is(pg.engine, early.event_id) == ["events_default"]

    # Postgres would refuse to make events_2027_09 while the default holds a row of it.
    made = await pg.purger.prepare(at(2027, 9, 1))
    assert made == ["events_2027_09", "events_2027_10", "events_2027_11"]
    assert await where_is(pg.engine, early.event_id) == ["events_2027_09"]
    assert await where_is(pg.engine, other.event_id) == ["events_default"]
    assert await store(pg, org, app, event(at(2027, 9, 4), early.event_id)) == 0
    assert await keys(pg.engine, app) == 2


# --- retention -----------------------------------------------------------------------------


async def test_a_purge_deletes_its_own_rows_when_partitions_share_row_addresses(
    pg: World,
) -> None:
    await pg.purger.prepare(at(2026, 9))
    org = await pg.org("Acme", Plan.FREE)
    mine = await pg.app(org, Environment.PRODUCTION)
    other = await pg.org("Other", Plan.FREE)
    theirs = await pg.app(other, Environment.PRODUCTION)
    await pg.add(org, mine, at(2026, 9))
    await pg.add(other, theirs, at(2026, 10))
    # The first row of each partition: the same ctid in two partitions.
    addresses = await rows(pg.engine, "SELECT tableoid::regclass::text, ctid::text FROM events")
    assert sorted(addresses) == [("events_2026_09", "(0,1)"), ("events_2026_10", "(0,1)")]

    assert await pg.purger.purge(mine.id, at(2026, 11, 1), 10) == 1
    assert await pg.count(mine) == 0
    assert await pg.timestamps(theirs) == [at(2026, 10)]
    assert (await keys(pg.engine, mine), await keys(pg.engine, theirs)) == (0, 1)


async def test_the_job_drops_the_months_no_app_keeps_and_purges_the_rest(pg: World) -> None:
    for month in (5, 8):  # May to October 2026
        await pg.purger.prepare(at(2026, month))
    free = await pg.org("Free Co", Plan.FREE)  # 90 days: keeps from 2026-09-11 on
    free_app = await pg.app(free, Environment.PRODUCTION)
    forever = await pg.org("Forever Co", Plan.ENTERPRISE)
    forever_app = await pg.app(forever, Environment.PRODUCTION)
    await pg.add(free, free_app, at(2026, 5), at(2026, 6), at(2026, 11))
    await pg.add(forever, forever_app, at(2026, 6, 20))

    done = await pg.job().run()

    # May holds only expired events; July and August hold none. June holds an event kept
    # forever, and from September on the free app keeps its events.
    assert done.dropped == ["events_2026_05", "events_2026_07", "events_2026_08"]
    assert {p.app_id: p.deleted for p in done.purges} == {free_app.id: 1}  # June's, one by one
    assert await pg.timestamps(free_app) == [at(2026, 11)]
    assert await pg.timestamps(forever_app) == [at(2026, 6, 20)]
    assert await keys(pg.engine, free_app) == await keys(pg.engine, forever_app) == 1
    left = await rows(
        pg.engine,
        "SELECT relname FROM pg_class WHERE relname ~ '^events_2026_0[5-8]$' ORDER BY relname",
    )
    assert left == [("events_2026_06",)]
    assert (await pg.job().run()).dropped == []


async def test_a_detached_month_left_half_way_is_finished(pg: World) -> None:
    await pg.purger.prepare(at(2026, 5))
    org = await pg.org("Free Co", Plan.FREE)
    app = await pg.app(org, Environment.PRODUCTION)
    await pg.add(org, app, at(2026, 5), NOW - SECOND)
    # A run stopped after its DETACH: the table is still there, and so are its keys.
    async with pg.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE events DETACH PARTITION events_2026_05"))
    # Meanwhile an event of that month arrives (an app that keeps it): it lands in the default
    # partition, and its key must outlive the detached month's.
    late = event(at(2026, 5, 20))
    assert await store(pg, org, app, late) == 1
    assert await where_is(pg.engine, late.event_id) == ["events_default"]

    dropped = await pg.purger.drop_expired({app.id: NOW - timedelta(days=90)}, 10)
    assert dropped[0] == "events_2026_05"
    assert await keys(pg.engine, app) == 2
    assert await store(pg, org, app, late) == 0
    assert await rows(pg.engine, "SELECT 1 FROM pg_class WHERE relname = 'events_2026_05'") == []


# --- the migration -------------------------------------------------------------------------


def old_row(app_id: str, moment: datetime, event_id: str) -> dict[str, Any]:
    return {
        "org_id": "org_1",
        "app_id": app_id,
        "event_id": event_id,
        "timestamp": moment,
        "received_at": moment,
        "schema_version": "1.0.0",
        "event_type": "command_execution",
        "user_id": "client_1",
        "service_name": "cli",
        "service_version": "1.0.0",
        "raw": "{}",
    }


async def test_the_migration_moves_existing_events_and_their_keys(database_url: str) -> None:
    await asyncio.to_thread(upgrade, database_url, "0004")
    old = [event(at(2025, 3)), event(at(2026, 6)), event(at(2026, 6, 11))]
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(events), [old_row("app_1", e.timestamp, e.event_id) for e in old]
            )
        await asyncio.to_thread(upgrade, database_url)

        assert await rows(engine, "SELECT count(*) FROM events") == [(3,)]
        assert await rows(engine, "SELECT count(*) FROM event_keys") == [(3,)]
        if engine.dialect.name == "postgresql":
            assert await where_is(engine, old[0].event_id) == ["events_2025_03"]
            assert await where_is(engine, old[2].event_id) == ["events_2026_06"]
            async with engine.connect() as conn:
                names = await partitions.partitions(conn)
            month = partitions.Month.of(datetime.now(UTC))
            ahead = [month, month.next(), month.next().next()]
            assert set(names) >= {"events_default", "events_2025_03", "events_2026_06"}
            assert set(names) >= {m.name for m in ahead}
        # Deduplication carries over: an old id sent again is not stored twice.
        world = World(engine)
        org = await world.org("Acme", Plan.ENTERPRISE)
        target = IngestApp(org.id, "app_1", Environment.PRODUCTION, True, org.plan, org.limits, ())
        resent = event(at(2026, 6), old[1].event_id)
        assert await world.store.store(target, [resent], NOW) == 0

        await asyncio.to_thread(downgrade, database_url, "0004")
        assert await rows(engine, "SELECT count(*) FROM events") == [(3,)]
        await asyncio.to_thread(upgrade, database_url)
        assert await rows(engine, "SELECT count(*) FROM event_keys") == [(3,)]
    finally:
        await engine.dispose()
