"""Promoting an app while other processes still ingest for it as staging (their app cache lags):
no staging event survives the promotion, and later batches count as production. Postgres only:
SQLite serialises writers, so there is no race to lose there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.integration.test_retention import NOW, World, parsed
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.migrate import upgrade
from tkcloud_adapters.sql.schema import apps, usage_monthly
from tkcloud_domain.limits import QuotaScope
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Environment, IngestApp


@pytest.fixture
async def world() -> AsyncIterator[World]:
    url = await asyncio.to_thread(create_postgres_database, "promote")
    engine = create_engine(url)
    try:
        await asyncio.to_thread(upgrade, url)
        yield World(engine)
    finally:
        await engine.dispose()
        await asyncio.to_thread(drop_postgres_database, url)


async def test_a_batch_in_flight_during_a_promotion_is_deleted_with_the_staging_events(
    world: World,
) -> None:
    org = await world.org("Acme", Plan.PRO)
    app = await world.app(org, Environment.STAGING)
    await world.add(org, app, NOW - timedelta(hours=1))

    # A batch being stored holds the app FOR SHARE, as SqlEventStore.store does, and has not
    # committed yet when the promotion starts.
    async with world.engine.connect() as in_flight:
        await in_flight.begin()
        await in_flight.execute(
            select(apps.c.environment).where(apps.c.id == app.id).with_for_update(read=True)
        )
        promotion = asyncio.create_task(world.tenancy.promote_app(app.id))
        await asyncio.sleep(0.3)
        assert not promotion.done()  # it waits for the batch
        # The batch writes one more staging event, then commits.
        for statement in (
            "CREATE TEMP TABLE batch AS SELECT * FROM events WHERE app_id = :a LIMIT 1",
            "UPDATE batch SET event_id = gen_random_uuid()",
            "INSERT INTO events SELECT * FROM batch",
        ):
            await in_flight.execute(text(statement), {"a": app.id})
        await in_flight.commit()
    promoted, deleted = await promotion
    assert promoted.environment is Environment.PRODUCTION
    assert deleted == 2  # the batch committed first, and was deleted with the rest
    assert await world.count(app) == 0


async def test_a_batch_from_a_stale_staging_cache_counts_as_production(world: World) -> None:
    org = await world.org("Acme", Plan.PRO)
    app = await world.app(org, Environment.STAGING)
    stale = IngestApp(org.id, app.id, Environment.STAGING, True, org.plan, org.limits, ())
    await world.tenancy.promote_app(app.id)
    assert await world.store.store(stale, parsed((NOW - timedelta(minutes=1),)), NOW) == 1
    month = NOW.strftime("%Y-%m")
    assert await world.store.events_this_month(QuotaScope("org", org.id), month) == 1
    assert await world.store.events_this_month(QuotaScope("app", app.id), month) == 0
    async with world.engine.connect() as conn:
        rows = (await conn.execute(select(usage_monthly.c.environment))).scalars().all()
    assert rows == ["production"]
