"""The rollups against a full recomputation, after random ingestion (property tests).

Hypothesis draws batches of events from a small world, so that duplicates (inside a batch and
across batches, with changed content), late events, sessions that start earlier than first seen
and users on several os and versions are common. The batches go through the real event store,
with folds of random size in between. Then, on SQLite and on Postgres:

- the rollups equal those `rebuild` computes from the stored events in one go;
- every analytics answer from the rollups equals the raw reader's (percentiles within 2.5 % on
  windows of whole days, sessions counted as sessions started in the window), unfiltered and
  under each filter.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import own_database
from tests.support.sdk import sdk_event
from tkcloud_adapters.sql.analytics import SqlAnalyticsReader
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.migrate import downgrade, upgrade
from tkcloud_adapters.sql.rollup_analytics import RollupAnalyticsReader
from tkcloud_adapters.sql.rollups import SqlRollups
from tkcloud_adapters.sql.schema import (
    ROLLUP_TABLES,
    events,
    rollup_counts,
    rollup_durations,
    rollup_first_seen,
    rollup_queue,
    rollup_user_days,
)
from tkcloud_domain.analytics import Dimension, Filters, Window
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.plans import PLAN_LIMITS, Plan
from tkcloud_domain.rollups import ALPHA
from tkcloud_domain.tenancy import Environment, IngestApp

START = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday
NOW = START + timedelta(days=12)
MINUTES = 10 * 24 * 60
EVENT_IDS = [str(uuid.UUID(int=n, version=4)) for n in range(1, 40)]
COUNTERS = ("events", "reported", "successes", "failures", "hours")

WINDOWS = [
    Window(START, START + timedelta(days=10)),
    Window(START + timedelta(days=2, hours=5), START + timedelta(days=7, hours=13)),
    Window(START + timedelta(days=3, hours=22), START + timedelta(days=4, hours=3)),
    # Whole days around a whole week: duration histograms read at both grains.
    Window(START - timedelta(days=2), START + timedelta(days=9)),
]
FILTERS = [
    Filters(),
    Filters(os="linux"),
    Filters(service_version="2.0"),
    Filters(event_type="feature_usage"),
]
ZONES = [ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/Los_Angeles")]


@st.composite
def wire_events(draw: st.DrawFn) -> dict[str, Any]:
    moment = START + timedelta(minutes=draw(st.integers(0, MINUTES - 1)))
    if draw(st.booleans()):
        data: dict[str, Any] = {"command": draw(st.sampled_from(["build", "test", "deploy"]))}
        for name, values in (
            ("success", st.booleans()),
            ("duration_ms", st.integers(0, 5000)),
            ("exit_code", st.integers(0, 3)),
        ):
            if draw(st.booleans()):
                data[name] = draw(values)
        event_type = "command_execution"
    else:
        data = {"feature": draw(st.sampled_from(["export", "login"]))}
        event_type = "feature_usage"
    os = draw(st.sampled_from(["linux", "macos", None]))
    environment: dict[str, Any] = {"os": os} if os else {}
    if draw(st.booleans()):
        environment |= {"arch": "x86_64", "ci": draw(st.booleans()), "shell": "bash"}
    event = sdk_event(
        moment,
        event_id=draw(st.sampled_from(EVENT_IDS)),
        user_id=f"client_{draw(st.sampled_from('abcd'))}",
        service={"name": "cli", "version": draw(st.sampled_from(["1.0", "2.0"]))},
        environment=environment,
        event={"type": event_type, "data": data},
    )
    session = draw(st.sampled_from(["s1", "s2", "s3", "s4", None]))
    if session is None:
        del event["session_id"]
    else:
        event["session_id"] = session
    return event


# Each batch with the number of queued batches folded right after it is stored.
batches = st.lists(
    st.tuples(st.lists(wire_events(), min_size=1, max_size=6), st.integers(0, 2)),
    min_size=1,
    max_size=8,
)


def parsed(wire: list[dict[str, Any]]) -> list[EventSchema]:
    result = []
    for index, event in enumerate(wire):
        schema = parse_event(json.dumps(event).encode(), index, now=NOW, oldest=None)
        assert isinstance(schema, EventSchema), schema
        result.append(schema)
    return result


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with own_database(request.param, tmp_path_factory.mktemp("rollups"), "rollups") as url:
        yield url


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=batches)
def test_rollups_equal_a_full_recomputation(
    database_url: str, batches: list[tuple[list[dict[str, Any]], int]]
) -> None:
    asyncio.run(_scenario(database_url, batches))


async def _scenario(url: str, batches: list[tuple[list[dict[str, Any]], int]]) -> None:
    engine = create_engine(url)
    try:
        app_id = f"app_{uuid.uuid4().hex}"  # a fresh app per example: no cleanup needed
        app = IngestApp(
            "org_p", app_id, Environment.PRODUCTION, True, Plan.PRO, PLAN_LIMITS[Plan.PRO], ()
        )
        store, rollups = SqlEventStore(engine), SqlRollups(engine)
        for number, (wire, folds) in enumerate(batches):
            await store.store(app, parsed(wire), NOW + timedelta(minutes=number))
            if folds:
                await rollups.catch_up(app_id, max_batches=folds)
        await rollups.catch_up(app_id)
        assert await rollups.pending(app_id) == 0
        incremental = await _rollup_rows(engine, app_id)
        stored = await rollups.rebuild(app_id)
        assert stored == await _count(engine, app_id)
        assert await _rollup_rows(engine, app_id) == incremental
        await _answers_agree(engine, rollups, app_id)
    finally:
        await engine.dispose()


async def _rollup_rows(engine: AsyncEngine, app_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every rollup row of the app, sorted; rows whose counters are all 0 (left where a
    session's start moved to an earlier hour) are no different from absent ones."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as conn:
        for table in ROLLUP_TABLES:
            counters = [c.name for c in table.columns if c.name in COUNTERS]
            found = (await conn.execute(select(table).where(table.c.app_id == app_id))).all()
            rows[table.name] = sorted(
                tuple(row)
                for row in found
                if not counters or any(row._mapping[c] for c in counters)
            )
    return rows


async def _count(engine: AsyncEngine, app_id: str) -> int:
    async with engine.connect() as conn:
        query = select(events.c.event_id).where(events.c.app_id == app_id)
        return len((await conn.execute(query)).all())


async def _answers_agree(engine: AsyncEngine, rollups: SqlRollups, app_id: str) -> None:
    raw = SqlAnalyticsReader(engine)
    rolled = RollupAnalyticsReader(engine, rollups, raw)
    for window in WINDOWS:
        whole_days = window.start.hour == window.end.hour == 0
        for filters in FILTERS:
            args = (app_id, window, filters)
            mine, theirs = await rolled.totals(*args), await raw.totals(*args)
            assert (mine.events, mine.users) == (theirs.events, theirs.users)
            assert mine.sessions == await _sessions_started(engine, app_id, window, filters)
            for tz in ZONES:
                assert await rolled.series(*args, tz) == await raw.series(*args, tz)
                assert await rolled.retention(*args, tz) == await raw.retention(*args, tz)
            assert await rolled.active_users(*args) == await raw.active_users(*args)
            assert await rolled.top_features(*args, 100) == await raw.top_features(*args, 100)
            assert await rolled.failing_commands(*args, 100) == await raw.failing_commands(
                *args, 100
            )
            for dimension in Dimension:
                assert await rolled.breakdown(*args, dimension, 100) == await raw.breakdown(
                    *args, dimension, 100
                )
            mine_commands = await rolled.top_commands(*args, 100)
            raw_commands = await raw.top_commands(*args, 100)
            assert len(mine_commands) == len(raw_commands)
            for a, b in zip(mine_commands, raw_commands, strict=True):
                assert (a.command, a.count, a.success_rate, a.exit_codes) == (
                    b.command,
                    b.count,
                    b.success_rate,
                    b.exit_codes,
                )
                if not whole_days:
                    continue  # the rollups' percentiles are those of the whole days touched
                for x, y in ((a.p50_ms, b.p50_ms), (a.p95_ms, b.p95_ms)):
                    assert (x is None) == (y is None)
                    if x is not None and y is not None:
                        assert x == pytest.approx(y, rel=ALPHA, abs=1e-9)
    async with engine.connect() as conn:
        queued = select(rollup_queue.c.id).where(rollup_queue.c.app_id == app_id)
        assert (await conn.execute(queued)).all() == []


async def _sessions_started(
    engine: AsyncEngine, app_id: str, window: Window, filters: Filters
) -> int:
    """Sessions whose first event (under the filters) lies in the window."""
    query = select(events.c.session_id, events.c.timestamp).where(
        events.c.app_id == app_id, events.c.session_id.is_not(None)
    )
    for name in ("os", "service_version", "event_type"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(events.c[name] == value)
    first: dict[str, datetime] = {}
    async with engine.connect() as conn:
        for session, moment in (await conn.execute(query)).all():
            first[session] = min(moment, first.get(session, moment))
    return sum(window.start <= moment < window.end for moment in first.values())


# --- the week grain of duration histograms, and the retention purge ----------------------------

# Commands on both sides of week boundaries: Sundays late, Mondays early, over three weeks.
SPREAD = [
    START - timedelta(days=7, minutes=5),  # Sunday 2026-11-15 23:55
    START - timedelta(days=7),  # Monday 2026-11-16 00:00
    START - timedelta(minutes=1),  # Sunday 2026-11-22 23:59
    START + timedelta(hours=1),
    START + timedelta(days=3, hours=4),
    START + timedelta(days=3, hours=9),
    START + timedelta(days=7, hours=2),  # Monday 2026-11-30
]


def commands_over_weeks() -> list[EventSchema]:
    wire = [
        sdk_event(
            moment,
            user_id=f"client_{index % 3}",
            session_id=f"sess_{index // 3}",
            event={
                "type": "command_execution",
                "data": {"command": "build", "duration_ms": 100 * (index + 1), "success": True},
            },
        )
        for index, moment in enumerate(SPREAD)
    ]
    return parsed(wire)


async def _durations(engine: AsyncEngine, app_id: str, grain: str) -> list[tuple[Any, ...]]:
    t = rollup_durations
    query = select(t.c.slice, t.c.at, t.c.command, t.c.bucket, t.c.events).where(
        t.c.app_id == app_id, t.c.grain == grain
    )
    async with engine.connect() as conn:
        return sorted(tuple(row) for row in (await conn.execute(query)).all())


async def _day_users(engine: AsyncEngine, app_id: str) -> list[tuple[Any, ...]]:
    t = rollup_counts
    query = select(t.c.slice, t.c.at, t.c.key, t.c.events).where(
        t.c.app_id == app_id, t.c.kind == "day_users", t.c.events != 0
    )
    async with engine.connect() as conn:
        return sorted(tuple(row) for row in (await conn.execute(query)).all())


async def test_migrations_0007_and_0008_add_up_what_folds_keep(migratable_url: str) -> None:
    engine = create_engine(migratable_url)
    try:
        app = IngestApp(
            "org_w", "app_w", Environment.PRODUCTION, True, Plan.PRO, PLAN_LIMITS[Plan.PRO], ()
        )
        store, rollups = SqlEventStore(engine), SqlRollups(engine)
        events = commands_over_weeks()
        for half in (events[::2], events[1::2]):  # two folds: the second adds to the first
            await store.store(app, half, NOW)
            await rollups.catch_up("app_w")
        weekly, day_users = (
            await _durations(engine, "app_w", "w"),
            await _day_users(engine, "app_w"),
        )
        weeks = sorted({at for _, at, _, _, _ in weekly})
        assert weeks == [
            START - timedelta(days=14),
            START - timedelta(days=7),
            START,
            START + timedelta(days=7),
        ]
        # The 24 hours up to Monday 16 Nov 01:00 UTC: client_0 at 23:55 and client_1 at 00:00.
        assert ("", START - timedelta(days=7), "1", 2) in day_users
        # Up to midnight (hour 24 of Sunday 15 Nov): client_0 alone.
        assert ("", START - timedelta(days=8), "24", 1) in day_users

        await asyncio.to_thread(downgrade, migratable_url, "0006")
        assert await _durations(engine, "app_w", "w") == []
        assert await _day_users(engine, "app_w") == []
        await asyncio.to_thread(upgrade, migratable_url)

        assert await _durations(engine, "app_w", "w") == weekly
        assert await _day_users(engine, "app_w") == day_users
    finally:
        await engine.dispose()


async def test_the_retention_purge_drops_rows_once_their_last_hour_is_gone(
    migratable_url: str,
) -> None:
    engine = create_engine(migratable_url)
    try:
        app = IngestApp(
            "org_p", "app_p", Environment.PRODUCTION, True, Plan.PRO, PLAN_LIMITS[Plan.PRO], ()
        )
        rollups = SqlRollups(engine)
        await SqlEventStore(engine).store(app, commands_over_weeks(), NOW)
        await rollups.catch_up("app_p")
        horizon = START + timedelta(days=3, hours=5)  # Thursday 05:00
        midnight = START + timedelta(days=3)

        await rollups.purge("app_p", horizon)

        async with engine.connect() as conn:
            for table in (rollup_counts, rollup_durations):
                query = (
                    select(table.c.grain, func.min(table.c.at))
                    .where(table.c.app_id == "app_p")
                    .group_by(table.c.grain)
                )
                oldest = dict((await conn.execute(query)).all())
                assert oldest["d"] == midnight  # the day of the horizon keeps its day row
                if "h" in oldest:
                    assert oldest["h"] >= horizon
                if table is rollup_durations:
                    assert "h" not in oldest
                    assert oldest["w"] == START  # the week of the horizon stays whole
            days = select(func.min(rollup_user_days.c.day)).where(
                rollup_user_days.c.app_id == "app_p"
            )
            assert (await conn.execute(days)).scalar_one() == midnight.date()
            first_seen = rollup_first_seen
            kinds = (
                select(first_seen.c.kind, func.min(first_seen.c.first_seen))
                .where(first_seen.c.app_id == "app_p")
                .group_by(first_seen.c.kind)
            )
            oldest_seen = dict((await conn.execute(kinds)).all())
        assert oldest_seen["user"] == SPREAD[0]  # a user seen before the horizon is not new
        assert oldest_seen["session"] == SPREAD[6]  # the sessions begun before it are gone
        # Hours after the horizon are all still there.
        rolled = RollupAnalyticsReader(engine, rollups, SqlAnalyticsReader(engine))
        after = Window(START + timedelta(days=3, hours=6), NOW)
        totals = await rolled.totals("app_p", after, Filters())
        assert totals.events == sum(after.start <= m < after.end for m in SPREAD)
    finally:
        await engine.dispose()
