"""The events explorer and the export (EventExplorer over SqlEventReader), on a migrated SQLite
file and on a fresh Postgres database of this module's own.

Every test makes orgs and apps of its own, so the tests share the two databases.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import own_database
from tests.fakes.system import FakeClock
from tests.support.sdk import sdk_event
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.explorer import ArrowParquetEncoder, SqlEventReader
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_application.analytics.explorer import (
    EXPORT_COLUMNS,
    EventExplorer,
    ExportFormat,
    format_time,
)
from tkcloud_application.identity.access import Access
from tkcloud_application.ports.explorer import EventFilters, StoredEvent
from tkcloud_domain.errors import Forbidden, NotFound, ValidationFailed
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.identity import ApiKey, ApiKeyScope, KeyPrincipal
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import App, Environment, IngestApp, Org

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
T0 = NOW - timedelta(days=3)


# --- backends ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with own_database(request.param, tmp_path_factory.mktemp("explorer"), "explorer") as url:
        yield url


class RecordingReader(SqlEventReader):
    """Remembers the size of every batch the export pulled from the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.batch_sizes: list[int] = []

    async def stream(
        self, app_id: str, start: datetime, end: datetime, *, batch_size: int
    ) -> AsyncIterator[list[StoredEvent]]:
        async for batch in super().stream(app_id, start, end, batch_size=batch_size):
            self.batch_sizes.append(len(batch))
            yield batch


@dataclass
class World:
    engine: AsyncEngine
    reader: RecordingReader
    store: SqlEventStore

    def explorer(self, batch_size: int = 1000) -> EventExplorer:
        def uow() -> SqlTenancyUnitOfWork:
            return SqlTenancyUnitOfWork(self.engine)

        return EventExplorer(
            Access(uow),
            self.reader,
            ArrowParquetEncoder(),
            uow,
            FakeClock(NOW),
            batch_size=batch_size,
        )

    async def tenant(self, plan: Plan = Plan.PRO) -> Tenant:
        key = uuid.uuid4().hex[:12]
        org = Org(f"org_{key}", "Acme", f"acme-{key}", plan, "eu", NOW - timedelta(days=30))
        app = App(f"app_{key}", org.id, "cli", Environment.PRODUCTION, True, org.created_at)
        async with SqlTenancyUnitOfWork(self.engine) as uow:
            await uow.orgs.add(org)
            await uow.apps.add(app)
            await uow.commit()
        api_key = ApiKey(
            f"key_{key}", org.id, "reader", (ApiKeyScope.ANALYTICS_READ,), "x", "tk_ak", None, NOW
        )
        return Tenant(self, org, app, KeyPrincipal(api_key))


@dataclass
class Tenant:
    world: World
    org: Org
    app: App
    principal: KeyPrincipal

    async def send(self, wire_events: list[dict[str, Any]]) -> None:
        ingest = IngestApp(
            self.org.id,
            self.app.id,
            Environment.PRODUCTION,
            True,
            self.org.plan,
            self.org.limits,
            (),
        )
        parsed = [_parse(wire) for wire in wire_events]
        for i in range(0, len(parsed), 1000):
            await self.world.store.store(ingest, parsed[i : i + 1000], NOW)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    engine = create_engine(database_url)
    try:
        yield World(engine, RecordingReader(engine), SqlEventStore(engine))
    finally:
        await engine.dispose()


def _parse(wire: dict[str, Any]) -> EventSchema:
    parsed = parse_event(json.dumps(wire).encode(), 0, now=NOW, oldest=None)
    assert isinstance(parsed, EventSchema), parsed
    return parsed


def wire(moment: datetime, **overrides: Any) -> dict[str, Any]:
    return sdk_event(moment, **overrides)


def typed(event_type: str, **data: Any) -> dict[str, Any]:
    return {"type": event_type, "category": "usage", "data": data}


def order_key(event: dict[str, Any]) -> tuple[str, str]:
    # sdk_event writes fixed-width UTC timestamps, so the text sorts like the instant.
    return event["timestamp"], event["event_id"]


async def read_all(export: AsyncIterable[bytes]) -> list[bytes]:
    return [chunk async for chunk in export]


# --- explorer ----------------------------------------------------------------------------------


async def test_pages_go_newest_first_across_equal_timestamps(world: World) -> None:
    tenant = await world.tenant()
    tied_a, tied_b = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    sent = (
        [wire(tied_a) for _ in range(12)]
        + [wire(tied_b) for _ in range(10)]
        + [wire(T0 + timedelta(minutes=i)) for i in range(8)]
    )
    await tenant.send(sent)
    expected = [e["event_id"] for e in sorted(sent, key=order_key, reverse=True)]
    explorer = world.explorer()

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        items, cursor = await explorer.page(tenant.principal, tenant.app.id, 7, cursor)
        seen += [item.event_id for item in items]
        pages += 1
        if pages == 1:
            # Arrives while the user pages: newer than the cursor, so it never shows up later.
            await tenant.send([wire(NOW - timedelta(minutes=1))])
        if cursor is None:
            break

    assert seen == expected  # no duplicates, no gaps, in order
    assert pages == 5  # 30 events by 7: the last page holds 2 and says it is the last


async def test_a_full_last_page_has_no_next_cursor(world: World) -> None:
    tenant = await world.tenant()
    await tenant.send([wire(T0 + timedelta(seconds=i)) for i in range(4)])
    explorer = world.explorer()

    first, cursor = await explorer.page(tenant.principal, tenant.app.id, 2)
    second, last = await explorer.page(tenant.principal, tenant.app.id, 2, cursor)

    assert len(first) == len(second) == 2
    assert last is None
    assert await explorer.page(tenant.principal, tenant.app.id, 2, None, EventFilters(os="x")) == (
        [],
        None,
    )


async def test_filters_match_exactly_and_combine(world: World) -> None:
    tenant = await world.tenant()
    other_user = "client_" + "ef" * 32
    await tenant.send(
        [
            wire(T0, event={"type": "feature_usage", "category": "usage", "data": {}}),
            wire(T0, service={"name": "harness-app", "version": "2.0.0"}),
            wire(T0, environment={"os": "macos", "arch": "aarch64"}),
            wire(T0, user_id=other_user),
            wire(T0, environment={"os": "macos"}, user_id=other_user),
        ]
    )
    explorer = world.explorer()

    async def matching(filters: EventFilters) -> list[StoredEvent]:
        items, _ = await explorer.page(tenant.principal, tenant.app.id, 50, None, filters)
        return items

    assert [e.event_type for e in await matching(EventFilters(event_type="feature_usage"))] == [
        "feature_usage"
    ]
    assert [e.service_version for e in await matching(EventFilters(service_version="2.0.0"))] == [
        "2.0.0"
    ]
    assert {e.os for e in await matching(EventFilters(os="macos"))} == {"macos"}
    assert len(await matching(EventFilters(os="macos"))) == 2
    assert len(await matching(EventFilters(user_id=other_user))) == 2
    both = await matching(EventFilters(os="macos", user_id=other_user))
    assert [(e.os, e.user_id) for e in both] == [("macos", other_user)]
    assert len(await matching(EventFilters())) == 5


async def test_get_returns_the_event_with_its_json(world: World) -> None:
    tenant = await world.tenant()
    sent = wire(T0, extra_field={"nested": [1, 2, 3]})
    await tenant.send([sent])

    event = await world.explorer().get(tenant.principal, tenant.app.id, sent["event_id"].upper())

    assert event.event_id == sent["event_id"]
    assert event.timestamp == T0  # nanoseconds truncated to the microsecond
    assert (event.command, event.success, event.duration_ms, event.exit_code) == (
        "build",
        True,
        1000,
        0,
    )
    assert json.loads(event.raw) == sent


async def test_another_apps_event_is_not_found(world: World) -> None:
    tenant, sibling_org = await world.tenant(), await world.tenant()
    foreign = wire(T0)
    await sibling_org.send([foreign])
    explorer = world.explorer()

    assert await world.reader.get(tenant.app.id, foreign["event_id"]) is None
    for event_id in (foreign["event_id"], str(uuid.uuid4()), "not-a-uuid"):
        with pytest.raises(NotFound):
            await explorer.get(tenant.principal, tenant.app.id, event_id)
    # A key of one org reads nothing of another's app: the app itself is "not found".
    with pytest.raises(NotFound):
        await explorer.get(tenant.principal, sibling_org.app.id, foreign["event_id"])
    with pytest.raises(NotFound):
        await explorer.page(tenant.principal, sibling_org.app.id)
    with pytest.raises(NotFound):
        await explorer.export(tenant.principal, sibling_org.app.id, "csv")


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGEgY3Vyc29y", "MjAyNi0xMi0wNFQxNTowMDowMHxub3QtYS11dWlk", "x" * 5],
)
async def test_a_bad_cursor_or_limit_is_refused(world: World, cursor: str) -> None:
    tenant = await world.tenant()
    explorer = world.explorer()

    if cursor:  # the empty cursor means "from the start"
        with pytest.raises(ValidationFailed):
            await explorer.page(tenant.principal, tenant.app.id, 10, cursor)
    for limit in (0, 201):
        with pytest.raises(ValidationFailed):
            await explorer.page(tenant.principal, tenant.app.id, limit)


# --- export ------------------------------------------------------------------------------------

START, END = T0, T0 + timedelta(days=1)
TIE_FIRST, TIE_SECOND = (
    "10000000-0000-4000-8000-000000000000",
    "20000000-0000-4000-8000-000000000000",
)


async def send_export_fixture(tenant: Tenant) -> list[dict[str, Any]]:
    """Five events inside [START, END), two of them at the same time, and two just outside."""
    inside = [
        wire(START),
        # A tie, ordered by event id.
        wire(START + timedelta(hours=1), session_id=None, event_id=TIE_FIRST),
        wire(
            START + timedelta(hours=1),
            event=typed("feature_usage", feature="sync"),
            event_id=TIE_SECOND,
        ),
        wire(
            START + timedelta(hours=2),
            environment={"os": "windows", "ci": True},
            event=typed("command_execution", command="deploy", success=False, exit_code=3),
        ),
        wire(END - timedelta(microseconds=1), user_id="client_" + "12" * 32),
    ]
    outside = [wire(START - timedelta(microseconds=1)), wire(END)]
    await tenant.send(inside + outside)
    return sorted(inside, key=order_key)


async def test_csv_export_round_trips(world: World) -> None:
    tenant = await world.tenant(Plan.FREE)
    sent = await send_export_fixture(tenant)

    export = await world.explorer(batch_size=2).export(
        tenant.principal, tenant.app.id, "csv", START, END
    )
    chunks = await read_all(export)

    assert export.media_type.startswith("text/csv")
    assert export.filename.endswith(".csv")
    assert len(chunks) == 1 + 3  # the header, then batches of 2, 2 and 1
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert [r["event_id"] for r in rows] == [e["event_id"] for e in sent]
    assert [json.loads(r["raw"]) for r in rows] == sent
    assert rows[0]["timestamp"] == format_time(START)
    assert rows[0]["received_at"] == format_time(NOW)
    assert rows[1]["session_id"] == ""
    assert (rows[2]["event_type"], rows[2]["feature"], rows[2]["command"]) == (
        "feature_usage",
        "sync",
        "",
    )
    deploy = rows[3]
    assert (deploy["os"], deploy["ci"], deploy["command"], deploy["success"]) == (
        "windows",
        "true",
        "deploy",
        "false",
    )
    assert (deploy["exit_code"], deploy["duration_ms"]) == ("3", "")


async def test_json_export_is_one_event_per_line(world: World) -> None:
    tenant = await world.tenant(Plan.FREE)
    sent = await send_export_fixture(tenant)

    export = await world.explorer(batch_size=3).export(
        tenant.principal, tenant.app.id, ExportFormat.JSON, START, END
    )
    body = b"".join(await read_all(export)).decode()

    assert export.media_type == "application/x-ndjson"
    assert body.endswith("\n")
    assert [json.loads(line) for line in body.splitlines()] == sent


async def test_parquet_export_round_trips(world: World) -> None:
    tenant = await world.tenant(Plan.PRO)
    sent = await send_export_fixture(tenant)

    export = await world.explorer(batch_size=2).export(
        tenant.principal, tenant.app.id, "parquet", START, END
    )
    chunks = await read_all(export)
    table = pq.read_table(io.BytesIO(b"".join(chunks)))

    assert export.filename.endswith(".parquet")
    assert len(chunks) == 3 + 1  # a row group per batch, then the footer
    assert table.num_rows == 5
    assert tuple(table.schema.names) == EXPORT_COLUMNS
    assert pq.ParquetFile(io.BytesIO(b"".join(chunks))).metadata.num_row_groups == 3
    columns = table.to_pydict()
    assert columns["event_id"] == [e["event_id"] for e in sent]
    assert [json.loads(raw) for raw in columns["raw"]] == sent
    assert columns["timestamp"][0] == START
    assert columns["session_id"][1] is None
    assert (columns["ci"][3], columns["success"][3], columns["exit_code"][3]) == (True, False, 3)


async def test_an_empty_range_exports_just_the_frame(world: World) -> None:
    tenant = await world.tenant(Plan.BUSINESS)
    explorer = world.explorer()

    csv_body = await read_all(await explorer.export(tenant.principal, tenant.app.id, "csv"))
    ndjson = await read_all(await explorer.export(tenant.principal, tenant.app.id, "json"))
    parquet = await read_all(await explorer.export(tenant.principal, tenant.app.id, "parquet"))

    assert b"".join(csv_body).decode().strip() == ",".join(EXPORT_COLUMNS)
    assert ndjson == []
    assert pq.read_table(io.BytesIO(b"".join(parquet))).num_rows == 0


async def test_parquet_is_refused_on_free(world: World) -> None:
    tenant = await world.tenant(Plan.FREE)
    explorer = world.explorer()

    with pytest.raises(Forbidden, match="Free plan") as refused:
        await explorer.export(tenant.principal, tenant.app.id, "parquet", START, END)
    assert refused.value.details == {"plan": "free", "format": "parquet"}
    assert world.reader.batch_sizes == []  # refused before any query of events


async def test_export_arguments_are_validated(world: World) -> None:
    tenant = await world.tenant()
    explorer = world.explorer()
    naive = datetime(2026, 12, 1)  # no time zone: the point of the test

    bad: list[tuple[str, datetime | None, datetime | None]] = [
        ("xml", START, END),
        ("CSV ", START, END),
        ("csv", END, START),
        ("csv", START, START),
        ("csv", END - timedelta(days=732), END),
        ("csv", naive, END),
        ("csv", START, naive),
    ]
    for fmt, start, end in bad:
        with pytest.raises(ValidationFailed):
            await explorer.export(tenant.principal, tenant.app.id, fmt, start, end)
    # Two years exactly is allowed, and so are the defaults (the last 30 days).
    await explorer.export(tenant.principal, tenant.app.id, "csv", END - timedelta(days=731), END)
    default = await explorer.export(tenant.principal, tenant.app.id, "csv")
    assert (default.start, default.end) == (NOW - timedelta(days=30), NOW)


async def test_a_large_export_streams_in_bounded_chunks(world: World) -> None:
    total, batch = 20_000, 1_000
    tenant = await world.tenant(Plan.ENTERPRISE)
    # Four events per millisecond: batch boundaries fall inside runs of equal timestamps.
    sent = [wire(START + timedelta(milliseconds=i // 4)) for i in range(total)]
    await tenant.send(sent)
    explorer = world.explorer(batch_size=batch)
    expected_ids = [e["event_id"] for e in sorted(sent, key=order_key)]

    for fmt in ExportFormat:
        world.reader.batch_sizes.clear()
        export = await explorer.export(tenant.principal, tenant.app.id, fmt, START, END)
        largest, size, chunks = 0, 0, 0
        body = io.BytesIO()
        async for chunk in export:
            largest, size, chunks = max(largest, len(chunk)), size + len(chunk), chunks + 1
            body.write(chunk)

        # Never more than one batch in flight: the database gave 20 batches of 1,000, and each
        # chunk handed on is about one batch's worth, a small part of the whole.
        assert world.reader.batch_sizes == [batch] * (total // batch), fmt
        assert chunks >= total // batch, fmt
        assert largest < 2 * size / (total // batch), fmt
        assert largest < 1_500_000, fmt

        if fmt is ExportFormat.JSON:
            ids = [json.loads(line)["event_id"] for line in body.getvalue().splitlines()]
        elif fmt is ExportFormat.CSV:
            ids = [r["event_id"] for r in csv.DictReader(io.StringIO(body.getvalue().decode()))]
        else:
            ids = pq.read_table(io.BytesIO(body.getvalue())).column("event_id").to_pylist()
        assert ids == expected_ids, fmt  # every event once, in order, across the ties


async def test_stream_resumes_after_ties_larger_than_a_batch(world: World) -> None:
    tenant = await world.tenant()
    sent = [wire(START) for _ in range(7)] + [wire(START + timedelta(seconds=1))]
    await tenant.send(sent)

    batches = [b async for b in world.reader.stream(tenant.app.id, START, END, batch_size=3)]

    assert [len(b) for b in batches] == [3, 3, 2]
    assert [e.event_id for b in batches for e in b] == [
        e["event_id"] for e in sorted(sent, key=order_key)
    ]
