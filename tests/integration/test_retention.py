"""The retention job against the real SQL purger, on SQLite and on a fresh Postgres database.

Orgs and apps come from the real `TenancyOperations`, events go in through `SqlEventStore.store`,
and what is left is read back from the events table itself.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import own_database
from tests.fakes.system import FakeClock
from tests.support.sdk import sdk_event
from tkcloud_adapters.crypto import FernetSecretBox, generate_key
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.retention import SqlEventPurger
from tkcloud_adapters.sql.schema import events
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.tenancy.operations import TenancyOperations
from tkcloud_application.tenancy.retention import RetentionJob, RetentionRun
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Environment, IngestApp, Org

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    # A database of this test alone: the counts below must not meet other tests' events.
    with own_database(request.param, tmp_path, "retention") as url:
        yield url


class World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.clock = FakeClock(NOW)
        self.store = SqlEventStore(engine)
        self.tenancy = TenancyOperations(
            uow=lambda: SqlTenancyUnitOfWork(engine),
            usage=self.store,
            ids=RandomIdGenerator(),
            secret_box=FernetSecretBox(generate_key()),
            clock=self.clock,
            region="local",
        )
        self.purger = SqlEventPurger(engine)

    def job(self, batch_size: int = 10_000) -> RetentionJob:
        return RetentionJob(
            lambda: SqlTenancyUnitOfWork(self.engine),
            self.purger,
            self.clock,
            batch_size=batch_size,
        )

    async def org(self, name: str, plan: Plan, retention_days: int | None = None) -> Org:
        org = await self.tenancy.create_org(name, plan)
        if retention_days is not None:
            org = await self.tenancy.set_plan(org.id, plan, custom_retention_days=retention_days)
        return org

    async def app(self, org: Org, environment: Environment) -> App:
        return (await self.tenancy.create_app(org.id, f"{environment.value} app", environment)).app

    async def add(self, org: Org, app: App, *moments: datetime) -> None:
        target = IngestApp(org.id, app.id, app.environment, True, org.plan, org.limits, ())
        assert await self.store.store(target, parsed(moments), NOW) == len(moments)

    async def timestamps(self, app: App) -> list[datetime]:
        query = select(events.c.timestamp).where(events.c.app_id == app.id)
        async with self.engine.connect() as conn:
            found = (await conn.execute(query.order_by(events.c.timestamp))).scalars().all()
        return [moment.replace(microsecond=0) for moment in found]

    async def count(self, app: App) -> int:
        query = select(func.count()).select_from(events).where(events.c.app_id == app.id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


def parsed(moments: tuple[datetime, ...]) -> list[EventSchema]:
    result = []
    for index, moment in enumerate(moments):
        raw = json.dumps(sdk_event(moment)).encode()
        schema = parse_event(raw, index, now=NOW, oldest=None)
        assert isinstance(schema, EventSchema), schema
        result.append(schema)
    return result


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    engine = create_engine(database_url)
    try:
        yield World(engine)
    finally:
        await engine.dispose()


def by_app(run: RetentionRun) -> dict[str, int]:
    return {p.app_id: p.deleted for p in run.purges}


async def test_each_app_keeps_its_own_retention(world: World) -> None:
    free = await world.org("Free Co", Plan.FREE)
    production = await world.app(free, Environment.PRODUCTION)
    staging = await world.app(free, Environment.STAGING)
    pro = await world.org("Pro Co", Plan.PRO)
    pro_app = await world.app(pro, Environment.PRODUCTION)
    enterprise = await world.org("Forever Co", Plan.ENTERPRISE)
    forever = await world.app(enterprise, Environment.PRODUCTION)
    custom = await world.org("Custom Co", Plan.ENTERPRISE, retention_days=10)
    custom_app = await world.app(custom, Environment.PRODUCTION)

    days_90, days_30 = NOW - timedelta(days=90), NOW - timedelta(days=30)
    await world.add(free, production, days_90 - SECOND, days_90, days_90 + SECOND, NOW)
    await world.add(free, staging, days_30 - SECOND, days_30 + SECOND, NOW - timedelta(days=60))
    # Another tenant's events as old as the free ones: inside the Pro plan's 365 days.
    await world.add(pro, pro_app, days_90 - SECOND, NOW - timedelta(days=366))
    await world.add(enterprise, forever, NOW - timedelta(days=2000), NOW - timedelta(days=400))
    await world.add(custom, custom_app, NOW - timedelta(days=11), NOW - timedelta(days=9))

    done = await world.job().run()

    assert by_app(done) == {
        production.id: 1,
        staging.id: 2,
        pro_app.id: 1,
        custom_app.id: 1,
    }  # and none for the app kept forever
    purge = next(p for p in done.purges if p.app_id == staging.id)
    assert (purge.org_id, purge.environment, purge.retention_days) == (
        free.id,
        Environment.STAGING,
        30,
    )
    assert purge.older_than == days_30
    assert await world.timestamps(production) == [days_90, days_90 + SECOND, NOW]
    assert await world.timestamps(staging) == [days_30 + SECOND]
    assert await world.timestamps(pro_app) == [days_90 - SECOND]
    assert await world.count(forever) == 2
    assert await world.timestamps(custom_app) == [NOW - timedelta(days=9)]

    # A second run finds nothing more to do; a later one moves the cut-off with the clock.
    assert set(by_app(await world.job().run()).values()) == {0}
    world.clock.advance(timedelta(days=1).total_seconds())
    assert by_app(await world.job().run())[production.id] == 2
    assert await world.timestamps(production) == [NOW]


async def test_the_clock_or_an_explicit_now_sets_the_cut_off(world: World) -> None:
    free = await world.org("Free Co", Plan.FREE)
    app = await world.app(free, Environment.PRODUCTION)
    await world.add(free, app, NOW - timedelta(days=50))
    assert by_app(await world.job().run()) == {app.id: 0}
    assert by_app(await world.job().run(now=NOW + timedelta(days=41))) == {app.id: 1}


async def test_deletes_in_bounded_batches_each_committed(world: World) -> None:
    free = await world.org("Free Co", Plan.FREE)
    app = await world.app(free, Environment.STAGING)
    other = await world.app(free, Environment.STAGING)
    old = NOW - timedelta(days=31)
    await world.add(free, app, *(old - i * SECOND for i in range(25)), NOW)
    await world.add(free, other, *(old - i * SECOND for i in range(20)))

    deletes: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # Events' deletes (from `events`, or a partition of it), not those of their keys.
        if statement.lstrip().upper().startswith("DELETE FROM EVENTS"):
            deletes.append(statement)

    sa_event.listen(world.engine.sync_engine, "before_cursor_execute", record)
    try:
        assert await world.purger.purge(app.id, NOW - timedelta(days=30), 10) == 25
        assert len(deletes) == 3  # 10, 10, 5
        deletes.clear()
        # Exactly two full batches: a third, empty one tells that nothing is left.
        assert await world.purger.purge(other.id, NOW - timedelta(days=30), 10) == 20
        assert len(deletes) == 3
    finally:
        sa_event.remove(world.engine.sync_engine, "before_cursor_execute", record)
    assert await world.timestamps(app) == [NOW]
    assert await world.count(other) == 0


async def test_a_purge_of_one_app_leaves_another_tenant_alone(world: World) -> None:
    first = await world.org("First", Plan.FREE)
    second = await world.org("Second", Plan.FREE)
    mine = await world.app(first, Environment.PRODUCTION)
    theirs = await world.app(second, Environment.PRODUCTION)
    ancient = NOW - timedelta(days=500)
    await world.add(first, mine, ancient, ancient + SECOND)
    await world.add(second, theirs, ancient, ancient + SECOND)
    assert await world.purger.purge(mine.id, NOW, 1) == 2
    assert await world.count(mine) == 0
    assert await world.count(theirs) == 2


def test_a_batch_must_hold_a_row() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        RetentionJob(lambda: None, None, FakeClock(NOW), batch_size=0)  # type: ignore[arg-type,return-value]
