"""Contract tests of the storage ports (EventStore, UsageReport, IngestDirectory, the tenancy
unit of work): the in-memory fakes, SQLite and Postgres pass the same tests, so fakes stay honest.

Postgres is shared by the whole run, so every test works with ids of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.storage import (
    FakeDatabase,
    FakeEventStore,
    FakeIngestDirectory,
    FakeSecretBox,
    FakeTenancyUnitOfWork,
)
from tests.fakes.system import FakeClock
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.ingest_directory import SqlIngestDirectory
from tkcloud_adapters.sql.migrate import alembic_config, upgrade
from tkcloud_adapters.sql.schema import dnt_daily, events, include_name, metadata
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_application.ports.ingestion import IngestDirectory
from tkcloud_application.ports.tenancy import AppUsage, TenancyUnitOfWork
from tkcloud_domain.errors import Conflict, ServiceUnavailable
from tkcloud_domain.events import MAX_EVENTS_PER_BATCH, EventSchema, parse_event
from tkcloud_domain.limits import QuotaScope
from tkcloud_domain.plans import PLAN_LIMITS, Plan, PlanLimits
from tkcloud_domain.tenancy import (
    App,
    Credential,
    Environment,
    IngestApp,
    LiveSecret,
    Org,
    hash_token,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 4, 15, 20, 15, 890821, tzinfo=UTC)
MONTH = "2026-12"
PRODUCTION, STAGING = Environment.PRODUCTION, Environment.STAGING
CLOSED_PORT_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/x"


# --- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    store: FakeEventStore | SqlEventStore  # EventStore and UsageReport
    directory: IngestDirectory
    new_uow: Callable[[], TenancyUnitOfWork]
    clock: FakeClock
    engine: AsyncEngine | None = None
    db: FakeDatabase | None = None

    async def dnt_count(self, app_id: str, day: date) -> int:
        if self.db is not None:
            return self.db.dnt.get((app_id, day), 0)
        assert self.engine is not None
        query = select(dnt_daily.c.requests).where(
            dnt_daily.c.app_id == app_id, dnt_daily.c.day == day
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one_or_none() or 0)

    async def stored_raw(self, app_id: str, event_id: str) -> Any:
        """The stored event's JSON, decoded."""
        if self.db is not None:
            return json.loads(self.db.events[(app_id, event_id)].event.raw)
        assert self.engine is not None
        query = select(events.c.raw).where(events.c.app_id == app_id, events.c.event_id == event_id)
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar_one()


def sql_backend(name: str, engine: AsyncEngine, clock: FakeClock) -> Backend:
    return Backend(
        name=name,
        store=SqlEventStore(engine),
        directory=SqlIngestDirectory(engine, FakeSecretBox(), clock),
        new_uow=lambda: SqlTenancyUnitOfWork(engine),
        clock=clock,
        engine=engine,
    )


def fake_backend(db: FakeDatabase, clock: FakeClock) -> Backend:
    return Backend(
        name="fake",
        store=FakeEventStore(db),
        directory=FakeIngestDirectory(db, secret_box=FakeSecretBox(), clock=clock),
        new_uow=lambda: FakeTenancyUnitOfWork(db),
        clock=clock,
        db=db,
    )


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'contract.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    # Resolved here, in a plain fixture: the database fixtures run asyncio.run() themselves.
    if request.param == "fake":
        return None
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def backend(backend_url: str | None) -> AsyncIterator[Backend]:
    clock = FakeClock(NOW)
    if backend_url is None:
        yield fake_backend(FakeDatabase(), clock)
        return
    engine = create_engine(backend_url)
    try:
        yield sql_backend(engine.dialect.name, engine, clock)
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def sql_engine(sql_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(sql_url)
    try:
        yield engine
    finally:
        await engine.dispose()


# --- data --------------------------------------------------------------------------------------


def uid() -> str:
    return secrets.token_hex(6)


def new_org(plan: Plan = Plan.PRO, **changes: Any) -> Org:
    key = uid()
    values: dict[str, Any] = {
        "id": f"org_{key}",
        "name": "Acme",
        "slug": f"acme-{key}",
        "plan": plan,
        "region": "eu",
        "created_at": NOW - timedelta(days=30),
        **changes,
    }
    return Org(**values)


def new_app(org: Org, environment: Environment = PRODUCTION, **changes: Any) -> App:
    values: dict[str, Any] = {
        "id": f"app_{uid()}",
        "org_id": org.id,
        "name": "cli",
        "environment": environment,
        "active": True,
        "created_at": NOW - timedelta(days=20),
        **changes,
    }
    return App(**values)


def new_credential(app: App, created_at: datetime, **changes: Any) -> tuple[Credential, str]:
    token = f"tk_{uid()}"
    credential = Credential(f"crd_{uid()}", app.id, hash_token(token), created_at, **changes)
    return credential, f"tks_{uid()}"


def ingest_app(org: Org, app: App, environment: Environment | None = None) -> IngestApp:
    return IngestApp(
        org_id=org.id,
        app_id=app.id,
        environment=environment or app.environment,
        active=app.active,
        plan=org.plan,
        org_limits=org.limits,
        secrets=(),
    )


async def create(
    backend: Backend,
    org: Org,
    apps: tuple[App, ...] = (),
    credentials: tuple[tuple[Credential, str], ...] = (),
) -> None:
    async with backend.new_uow() as uow:
        await uow.orgs.add(org)
        for app in apps:
            await uow.apps.add(app)
        for credential, secret in credentials:
            await uow.credentials.add(credential, FakeSecretBox().encrypt(secret))
        await uow.commit()


def event(event_id: str | None = None, **changes: Any) -> EventSchema:
    """An event decoded from wire JSON, as the ingestion use case hands it over."""
    wire: dict[str, Any] = {
        "schema_version": "1.0.0",
        "event_id": event_id or new_event_id(),
        "timestamp": "2026-12-04T15:00:00.123456789Z",
        "service": {"name": "harness-app", "version": "1.2.3", "language": "rust"},
        "user_id": f"client_{'a' * 64}",
        "session_id": f"sess_{'b' * 32}",
        "environment": {"os": "linux", "arch": "x86_64", "ci": False, "shell": "bash"},
        "event": {
            "type": "command_execution",
            "category": "usage",
            "data": {"command": "build", "success": True, "duration_ms": 1000, "exit_code": 0},
        },
        "metadata": {"sdk_version": "telemetry-kit-rust/0.3.0", "batch_size": 1},
        **changes,
    }
    parsed = parse_event(json.dumps(wire).encode(), 0, now=NOW, oldest=None)
    assert isinstance(parsed, EventSchema), parsed
    return parsed


def new_event_id() -> str:
    return str(uuid.uuid4())


def batch(size: int) -> list[EventSchema]:
    return [event() for _ in range(size)]


def org_scope(org: Org) -> QuotaScope:
    return QuotaScope("org", org.id)


def app_scope(app: App) -> QuotaScope:
    return QuotaScope("app", app.id)


# --- EventStore --------------------------------------------------------------------------------


async def test_store_inserts_events_and_counts_them(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    await create(backend, org, (app,))

    assert await backend.store.store(ingest_app(org, app), batch(3), NOW) == 3
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 3


async def test_store_skips_event_ids_already_stored(backend: Backend) -> None:
    org = new_org()
    app, other = new_app(org), new_app(org)
    first, second, third = batch(3)
    target = ingest_app(org, app)

    assert await backend.store.store(target, [first, second], NOW) == 2
    assert await backend.store.store(target, [first, second], NOW) == 0
    assert await backend.store.store(target, [second, third], NOW) == 1
    # Deduplication is per app: another app may send the same id.
    assert await backend.store.store(ingest_app(org, other), [first], NOW) == 1
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 4


async def test_store_keeps_the_first_of_an_id_repeated_in_one_batch(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    event_id = new_event_id()
    first = event(event_id, user_id="client_first")
    again = event(event_id, user_id="client_again")

    assert await backend.store.store(ingest_app(org, app), [first, again], NOW) == 1
    assert (await backend.stored_raw(app.id, event_id))["user_id"] == "client_first"
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 1


async def test_first_write_wins_across_batches(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    event_id = new_event_id()
    await backend.store.store(ingest_app(org, app), [event(event_id, user_id="client_1")], NOW)
    await backend.store.store(ingest_app(org, app), [event(event_id, user_id="client_2")], NOW)

    assert (await backend.stored_raw(app.id, event_id))["user_id"] == "client_1"


async def test_stored_event_keeps_unknown_fields(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    stored = event(future_field={"nested": [1, 2, 3]})

    await backend.store.store(ingest_app(org, app), [stored], NOW)

    raw = await backend.stored_raw(app.id, stored.event_id)
    assert raw["future_field"] == {"nested": [1, 2, 3]}
    assert raw["event"]["data"]["command"] == "build"


async def test_a_full_batch_fits_the_drivers_parameter_limits(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    full = batch(MAX_EVENTS_PER_BATCH)

    assert await backend.store.store(ingest_app(org, app), full, NOW) == MAX_EVENTS_PER_BATCH
    assert await backend.store.store(ingest_app(org, app), full, NOW) == 0
    assert await backend.store.events_this_month(org_scope(org), MONTH) == MAX_EVENTS_PER_BATCH


async def test_usage_counts_in_the_month_events_were_received(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    late_november = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)

    await backend.store.store(ingest_app(org, app), batch(2), late_november)

    assert await backend.store.events_this_month(org_scope(org), "2026-11") == 2
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 0


async def test_events_this_month_per_scope(backend: Backend) -> None:
    org, other_org = new_org(), new_org()
    prod_1, prod_2, staging = new_app(org), new_app(org), new_app(org, STAGING)
    elsewhere = new_app(other_org)
    for app, size in ((prod_1, 2), (prod_2, 3), (staging, 4)):
        await backend.store.store(ingest_app(org, app), batch(size), NOW)
    await backend.store.store(ingest_app(other_org, elsewhere), batch(5), NOW)

    # An org's quota counts its production apps; a staging app has its own.
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 5
    assert await backend.store.events_this_month(app_scope(staging), MONTH) == 4
    assert await backend.store.events_this_month(app_scope(prod_1), MONTH) == 0
    assert await backend.store.events_this_month(org_scope(other_org), MONTH) == 5
    assert await backend.store.events_this_month(QuotaScope("org", "org_unknown"), MONTH) == 0


async def test_a_promoted_app_keeps_staging_and_production_counts_apart(backend: Backend) -> None:
    org = new_org()
    app = new_app(org, STAGING)
    await create(backend, org, (app,))
    await backend.store.store(ingest_app(org, app), batch(2), NOW)
    async with backend.new_uow() as uow:
        await uow.apps.set_environment(app.id, PRODUCTION)
        await uow.commit()

    await backend.store.store(ingest_app(org, app, PRODUCTION), batch(3), NOW)

    assert await backend.store.events_this_month(app_scope(app), MONTH) == 2
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 3
    assert await backend.store.monthly_usage(MONTH, org.id) == [
        AppUsage(org.id, app.id, PRODUCTION, MONTH, 3),
        AppUsage(org.id, app.id, STAGING, MONTH, 2),
    ]


async def test_count_dnt_counts_requests_per_day_and_nothing_else(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    today, tomorrow = NOW.date(), NOW.date() + timedelta(days=1)

    await backend.store.count_dnt(ingest_app(org, app), today)
    await backend.store.count_dnt(ingest_app(org, app), today)
    await backend.store.count_dnt(ingest_app(org, app), tomorrow)

    assert await backend.dnt_count(app.id, today) == 2
    assert await backend.dnt_count(app.id, tomorrow) == 1
    assert await backend.store.dnt_requests(app.id) == 3
    assert await backend.store.dnt_requests(app.id, since=tomorrow) == 1
    assert await backend.store.dnt_requests(new_app(org).id) == 0
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 0


async def test_concurrent_stores_of_one_batch_insert_it_once(backend: Backend) -> None:
    # The SDK retries a batch it got no answer for; copies may race each other.
    org = new_org()
    app = new_app(org)
    same = batch(50)

    results = await asyncio.gather(
        *(backend.store.store(ingest_app(org, app), same, NOW) for _ in range(20))
    )

    assert sorted(results) == [0] * 19 + [50]
    assert await backend.store.events_this_month(org_scope(org), MONTH) == 50


async def test_concurrent_overlapping_batches_neither_deadlock_nor_double_count(
    backend: Backend,
) -> None:
    org = new_org()
    app = new_app(org)
    pool = batch(60)
    rng = random.Random(7)
    batches = [rng.sample(pool, 30) for _ in range(12)]

    results = await asyncio.gather(
        *(backend.store.store(ingest_app(org, app), b, NOW) for b in batches)
    )

    distinct = len({e.event_id for b in batches for e in b})
    assert sum(results) == distinct
    assert await backend.store.events_this_month(org_scope(org), MONTH) == distinct


# --- UsageReport ---------------------------------------------------------------------------------


async def test_monthly_usage_lists_every_app_with_zero_for_quiet_ones(backend: Backend) -> None:
    org, other_org = new_org(), new_org()
    busy = new_app(org, id=f"app_a{uid()}")
    quiet = new_app(org, STAGING, id=f"app_b{uid()}")
    elsewhere = new_app(other_org)
    await create(backend, org, (busy, quiet))
    await create(backend, other_org, (elsewhere,))
    await backend.store.store(ingest_app(org, busy), batch(2), NOW)
    await backend.store.store(ingest_app(other_org, elsewhere), batch(1), NOW)

    assert await backend.store.monthly_usage(MONTH, org.id) == [
        AppUsage(org.id, busy.id, PRODUCTION, MONTH, 2),
        AppUsage(org.id, quiet.id, STAGING, MONTH, 0),
    ]
    everyone = await backend.store.monthly_usage(MONTH)
    ours = [u for u in everyone if u.org_id in (org.id, other_org.id)]
    assert ours == sorted(
        [
            AppUsage(org.id, busy.id, PRODUCTION, MONTH, 2),
            AppUsage(org.id, quiet.id, STAGING, MONTH, 0),
            AppUsage(other_org.id, elsewhere.id, PRODUCTION, MONTH, 1),
        ],
        key=lambda u: (u.org_id, u.app_id),
    )
    assert [u.events for u in await backend.store.monthly_usage("2026-11", org.id)] == [0, 0]


# --- IngestDirectory -----------------------------------------------------------------------------


async def test_directory_finds_nothing_for_unknown_app_or_another_org(backend: Backend) -> None:
    org, other_org = new_org(), new_org()
    app = new_app(org)
    await create(backend, org, (app,))
    await create(backend, other_org)

    assert await backend.directory.find_ingest_app(org.id, "app_unknown") is None
    assert await backend.directory.find_ingest_app(other_org.id, app.id) is None
    assert await backend.directory.find_ingest_app("org_unknown", app.id) is None


async def test_directory_returns_plan_and_live_secrets_decrypted(backend: Backend) -> None:
    org = new_org(Plan.BUSINESS)
    app = new_app(org)
    oldest = new_credential(app, NOW - timedelta(days=3))
    retiring = new_credential(app, NOW - timedelta(days=2), expires_at=NOW + timedelta(hours=1))
    newest = new_credential(app, NOW - timedelta(days=1))
    expired = new_credential(app, NOW - timedelta(days=4), expires_at=NOW - timedelta(seconds=1))
    revoked = new_credential(app, NOW - timedelta(days=5), revoked_at=NOW - timedelta(hours=1))
    await create(backend, org, (app,), (oldest, retiring, newest, expired, revoked))

    found = await backend.directory.find_ingest_app(org.id, app.id)

    assert found == IngestApp(
        org_id=org.id,
        app_id=app.id,
        environment=PRODUCTION,
        active=True,
        plan=Plan.BUSINESS,
        org_limits=PLAN_LIMITS[Plan.BUSINESS],
        secrets=tuple(
            LiveSecret(credential.token_hash, secret, credential.expires_at)
            for credential, secret in (newest, retiring, oldest)
        ),
    )


async def test_directory_excludes_secrets_expired_by_the_clock(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    retiring = new_credential(app, NOW - timedelta(days=2), expires_at=NOW + timedelta(hours=1))
    await create(backend, org, (app,), (retiring,))

    backend.clock.set(NOW + timedelta(hours=2))
    found = await backend.directory.find_ingest_app(org.id, app.id)

    assert found is not None
    assert found.secrets == ()


async def test_directory_returns_inactive_staging_apps_and_custom_terms(backend: Backend) -> None:
    # Whether an inactive app may ingest is the use case's decision, not the directory's.
    org = new_org(Plan.ENTERPRISE, custom_events_per_month=5_000_000, custom_retention_days=400)
    app = new_app(org, STAGING, active=False)
    await create(backend, org, (app,))

    found = await backend.directory.find_ingest_app(org.id, app.id)

    assert found is not None
    assert (found.active, found.environment, found.secrets) == (False, STAGING, ())
    assert found.org_limits == PlanLimits(None, 5_000_000, 400)


# --- TenancyUnitOfWork ---------------------------------------------------------------------------


async def test_committed_work_is_read_back_equal(backend: Backend) -> None:
    org = new_org(Plan.FREE)
    app = new_app(org)
    credential, secret = new_credential(app, NOW, expires_at=NOW + timedelta(days=1))
    await create(backend, org, (app,), ((credential, secret),))

    async with backend.new_uow() as uow:
        assert await uow.orgs.get(org.id) == org
        assert await uow.apps.get(app.id) == app
        assert await uow.apps.list_for_org(org.id) == [app]
        assert await uow.credentials.list_for_app(app.id) == [credential]
        assert org in await uow.orgs.list_all()
        assert await uow.orgs.get("org_unknown") is None
        assert await uow.apps.get("app_unknown") is None
    stored = await uow_org_created_at(backend, org.id)
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)


async def uow_org_created_at(backend: Backend, org_id: str) -> datetime:
    async with backend.new_uow() as uow:
        org = await uow.orgs.get(org_id)
    assert org is not None
    return org.created_at


async def test_leaving_without_commit_rolls_back(backend: Backend) -> None:
    org = new_org()
    async with backend.new_uow() as uow:
        await uow.orgs.add(org)
        assert await uow.orgs.get(org.id) == org  # the unit of work sees its own writes

    async with backend.new_uow() as uow:
        assert await uow.orgs.get(org.id) is None


async def test_an_exception_rolls_back(backend: Backend) -> None:
    org = new_org()

    async def fail_midway() -> None:
        async with backend.new_uow() as uow:
            await uow.orgs.add(org)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail_midway()

    async with backend.new_uow() as uow:
        assert await uow.orgs.get(org.id) is None


async def test_writes_after_a_commit_need_another_commit(backend: Backend) -> None:
    committed, dropped = new_org(), new_org()
    async with backend.new_uow() as uow:
        await uow.orgs.add(committed)
        await uow.commit()
        await uow.orgs.add(dropped)

    async with backend.new_uow() as uow:
        assert await uow.orgs.get(committed.id) == committed
        assert await uow.orgs.get(dropped.id) is None


async def test_a_unit_of_work_can_be_entered_again_after_exit(backend: Backend) -> None:
    first, second = new_org(), new_org()
    uow = backend.new_uow()
    async with uow:
        await uow.orgs.add(first)
        await uow.commit()
    async with uow:
        await uow.orgs.add(second)
        await uow.commit()

    async with backend.new_uow() as check:
        assert await check.orgs.get(second.id) == second


async def test_duplicate_slug_is_a_conflict_and_the_work_goes_on(backend: Backend) -> None:
    taken = new_org()
    await create(backend, taken)
    same_slug, fine = new_org(slug=taken.slug), new_org()

    async with backend.new_uow() as uow:
        with pytest.raises(Conflict):
            await uow.orgs.add(same_slug)
        await uow.orgs.add(fine)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.orgs.get(same_slug.id) is None
        assert await uow.orgs.get(fine.id) == fine


async def test_duplicate_ids_are_conflicts(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    credential = new_credential(app, NOW)
    await create(backend, org, (app,), (credential,))

    async with backend.new_uow() as uow:
        with pytest.raises(Conflict):
            await uow.orgs.add(new_org(id=org.id))
        with pytest.raises(Conflict):
            await uow.apps.add(new_app(org, id=app.id))
        with pytest.raises(Conflict):  # the same token twice
            await uow.credentials.add(
                Credential(f"crd_{uid()}", app.id, credential[0].token_hash, NOW), "enc:x"
            )


async def test_adding_an_app_to_a_missing_org_is_a_bug_not_a_domain_error(
    backend: Backend,
) -> None:
    async with backend.new_uow() as uow:
        with pytest.raises((ValueError, sa_exc.IntegrityError)):
            await uow.apps.add(new_app(new_org()))


async def test_set_plan_and_set_environment(backend: Backend) -> None:
    org = new_org(Plan.FREE)
    app = new_app(org, STAGING)
    await create(backend, org, (app,))

    async with backend.new_uow() as uow:
        await uow.orgs.set_plan(org.id, Plan.ENTERPRISE, 2_000_000, 500)
        await uow.apps.set_environment(app.id, PRODUCTION)
        await uow.commit()

    async with backend.new_uow() as uow:
        changed = await uow.orgs.get(org.id)
        promoted = await uow.apps.get(app.id)
    assert changed is not None
    assert promoted is not None
    assert (changed.plan, changed.custom_events_per_month, changed.custom_retention_days) == (
        Plan.ENTERPRISE,
        2_000_000,
        500,
    )
    assert promoted.environment is PRODUCTION
    found = await backend.directory.find_ingest_app(org.id, app.id)
    assert found is not None
    assert (found.plan, found.environment) == (Plan.ENTERPRISE, PRODUCTION)


async def test_lists_are_ordered(backend: Backend) -> None:
    org = new_org()
    later = new_app(org, created_at=NOW - timedelta(days=1))
    earlier = new_app(org, created_at=NOW - timedelta(days=2))
    old = new_credential(later, NOW - timedelta(hours=2))
    new = new_credential(later, NOW - timedelta(hours=1))
    await create(backend, org, (later, earlier), (old, new))

    async with backend.new_uow() as uow:
        assert await uow.apps.list_for_org(org.id) == [earlier, later]  # oldest first
        assert await uow.credentials.list_for_app(later.id) == [new[0], old[0]]  # newest first
        assert await uow.credentials.list_for_app(earlier.id) == []


async def test_expire_and_revoke_credentials(backend: Backend) -> None:
    org = new_org()
    app = new_app(org)
    rotated, revoked = new_credential(app, NOW), new_credential(app, NOW - timedelta(hours=1))
    await create(backend, org, (app,), (rotated, revoked))
    grace_end = NOW + timedelta(hours=24)

    async with backend.new_uow() as uow:
        await uow.credentials.expire(rotated[0].id, grace_end)
        await uow.credentials.revoke(revoked[0].id, NOW)
        await uow.commit()

    async with backend.new_uow() as uow:
        listed = await uow.credentials.list_for_app(app.id)
    assert [(c.expires_at, c.revoked_at) for c in listed] == [(grace_end, None), (None, NOW)]
    found = await backend.directory.find_ingest_app(org.id, app.id)
    assert found is not None
    assert found.secrets == (LiveSecret(rotated[0].token_hash, rotated[1], grace_end),)


# --- an unreachable database ----------------------------------------------------------------


@pytest.fixture(params=["fake", "sqlite", "postgres"])
async def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock(NOW)
    if request.param == "fake":
        yield fake_backend(FakeDatabase(unavailable=True), clock)
        return
    # SQLite cannot open a directory as its database file; nothing listens on port 1.
    url = f"sqlite+aiosqlite:///{tmp_path}" if request.param == "sqlite" else CLOSED_PORT_URL
    engine = create_engine(url)
    try:
        yield sql_backend(request.param, engine, clock)
    finally:
        await engine.dispose()


async def test_an_unreachable_database_is_service_unavailable(unreachable: Backend) -> None:
    org = new_org()
    app = ingest_app(org, new_app(org))
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "store": lambda: unreachable.store.store(app, batch(1), NOW),
        "events_this_month": lambda: unreachable.store.events_this_month(org_scope(org), MONTH),
        "count_dnt": lambda: unreachable.store.count_dnt(app, NOW.date()),
        "monthly_usage": lambda: unreachable.store.monthly_usage(MONTH),
        "find_ingest_app": lambda: unreachable.directory.find_ingest_app(org.id, app.app_id),
        "unit of work": lambda: _enter(unreachable.new_uow()),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            await call()
        assert raised.value.dependency == "database", name
        assert time.monotonic() - started < 5, f"{name} took too long to fail"


async def _enter(uow: TenancyUnitOfWork) -> None:
    async with uow:
        pass


# --- SQL only: rows, error translation, migrations ------------------------------------------------


async def test_sql_rows_carry_the_derived_columns(sql_engine: AsyncEngine) -> None:
    store = SqlEventStore(sql_engine)
    org = new_org()
    app = new_app(org)
    stored = event(
        event={
            "type": "command_execution",
            "data": {
                "command": "deploy",
                "subcommand": "prod",
                "success": False,
                "duration_ms": 2**40,
                "exit_code": 2**40,
            },
        },
        environment={"os": "macos", "os_version": "14.1", "arch": "aarch64", "ci": True},
    )
    received = datetime(2026, 12, 4, 16, 0, 0, 1, tzinfo=UTC)

    await store.store(ingest_app(org, app), [stored], received)

    async with sql_engine.connect() as conn:
        row = (await conn.execute(select(events).where(events.c.app_id == app.id))).one()
    assert row.event_id == stored.event_id
    assert row.timestamp == datetime(2026, 12, 4, 15, 0, 0, 123456, tzinfo=UTC)
    assert row.timestamp.utcoffset() == timedelta(0)
    assert row.received_at == received
    assert (row.org_id, row.event_type, row.event_category) == (org.id, "command_execution", None)
    assert (row.command, row.subcommand, row.success) == ("deploy", "prod", False)
    assert (row.duration_ms, row.exit_code, row.feature) == (2**40, None, None)
    assert (row.os, row.os_version, row.arch, row.ci, row.shell) == (
        "macos",
        "14.1",
        "aarch64",
        True,
        None,
    )
    assert (row.service_name, row.service_language, row.sdk_version) == (
        "harness-app",
        "rust",
        "telemetry-kit-rust/0.3.0",
    )


async def test_sql_stores_nul_characters_as_replacement_characters(
    sql_engine: AsyncEngine,
) -> None:
    # Postgres refuses NUL in text and jsonb; one such event must not fail its whole batch.
    org = new_org()
    app = new_app(org)
    tainted = event(
        user_id="client_a\x00b",
        event={"type": "command_execution", "data": {"command": "x\x00"}},
        note="\\u0000 is text here, not an escape",
    )
    clean = event()

    assert await SqlEventStore(sql_engine).store(ingest_app(org, app), [tainted, clean], NOW) == 2

    async with sql_engine.connect() as conn:
        query = select(events.c.user_id, events.c.command, events.c.raw)
        row = (await conn.execute(query.where(events.c.event_id == tainted.event_id))).one()
    assert (row.user_id, row.command) == ("client_a\ufffdb", "x\ufffd")
    assert row.raw["user_id"] == "client_a\ufffdb"
    assert row.raw["event"]["data"]["command"] == "x\ufffd"
    assert row.raw["note"] == "\\u0000 is text here, not an escape"


async def test_sql_stores_json_for_an_event_built_without_wire_text(
    sql_engine: AsyncEngine,
) -> None:
    org = new_org()
    app = new_app(org)
    built = msgspec.structs.replace(event(), raw=b"")

    assert await SqlEventStore(sql_engine).store(ingest_app(org, app), [built], NOW) == 1

    async with sql_engine.connect() as conn:
        query = select(events.c.raw).where(events.c.app_id == app.id)
        raw = (await conn.execute(query)).scalar_one()
    assert raw["event_id"] == built.event_id
    assert raw["event"]["data"] == built.event_data
    assert raw["timestamp"] == "2026-12-04T15:00:00.123456Z"


async def test_sql_bugs_are_not_disguised_as_unavailability(sql_engine: AsyncEngine) -> None:
    async with sql_engine.connect() as conn:
        with pytest.raises(sa_exc.DBAPIError) as raised, database_errors():
            await conn.execute(text("SELEC 1"))
    assert not isinstance(raised.value, ServiceUnavailable)


async def test_naive_datetimes_are_refused(sql_engine: AsyncEngine) -> None:
    org = new_org(created_at=datetime(2026, 1, 1))  # naive: the point of the test
    async with SqlTenancyUnitOfWork(sql_engine) as uow:
        with pytest.raises(sa_exc.StatementError, match="naive datetime"):
            await uow.orgs.add(org)


async def test_migrated_schema_matches_the_metadata(sql_engine: AsyncEngine) -> None:
    def differences(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        return list(compare_metadata(context, metadata))

    async with sql_engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_upgrade_can_be_called_from_async_code(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'fresh.db'}"
    upgrade(url)  # the migration runs its own event loop, in another thread

    assert "events" in await _table_names(url)


def test_sqlite_migrations_go_down_to_base_and_up_again(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'migrated.db'}"
    expected = {t.name for t in metadata.sorted_tables} | {"alembic_version"}
    upgrade(url)
    assert asyncio.run(_table_names(url)) == expected

    # Through alembic's own command line, as an operator would run it.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(REPO_ROOT / "alembic.ini"),
            "downgrade",
            "base",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "TKCLOUD_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )
    assert asyncio.run(_table_names(url)) == {"alembic_version"}

    upgrade(url)
    assert asyncio.run(_table_names(url)) == expected


async def _table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_a_failed_sqlite_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'atomic.db'}"
    upgrade(url)
    migrations = tmp_path / "migrations"
    shutil.copytree(REPO_ROOT / "migrations", migrations)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    (migrations / "versions" / "9999_broken.py").write_text(
        "import sqlalchemy as sa\n"
        "from alembic import op\n"
        "revision = 'broken'\n"
        f"down_revision = {head!r}\n"
        "def upgrade():\n"
        "    op.create_table('probe', sa.Column('id', sa.Integer, primary_key=True))\n"
        "    raise RuntimeError('half way')\n"
    )
    monkeypatch.setenv("TKCLOUD_MIGRATIONS_DIR", str(migrations))

    with pytest.raises(RuntimeError, match="half way"):
        upgrade(url)

    assert "probe" not in asyncio.run(_table_names(url))
