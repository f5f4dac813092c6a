"""Every analytics answer against a small hand-computed fixture, on SQLite and on Postgres.

The events go in through the real `SqlEventStore.store`, with a duplicate inside a batch and one
resent in a later batch (stored once: the first write wins), late events (happened days before
they arrived), events at 23:30 UTC (the next day in Europe/Berlin, and one the next week), an
event of another app, and a period with no events at all.

Timeline (UTC; "B" = Berlin, UTC+1 in winter). W = [12-03, 12-10), its previous [11-26, 12-03):
  P0 frank 11-20 10:00 build ok 100 ms              (before both, inside MAU)
  P1 alice 11-28 10:00 build ok 100                 (previous period)
  P2 bob   11-30 10:00 test fail 200 exit 1         (previous period)
  E1 alice 12-03 09:00 build ok 100 exit 0 s3
  E2 alice 12-03 23:30 build ok 300 exit 0 s3       (B: 12-04)
  E3 carol 12-04 10:00 test fail 500 exit 1 s4      macos, 2.0.0
  E4 carol 12-04 11:00 test fail 700 exit 2 s4      macos, 2.0.0
  E5 dave  12-05 12:00 feature_usage export s5
  E6 dave  12-06 23:30 build (no success) 900 s5    (Sunday; B: Monday 12-07)
  E7 bob   12-08 08:00 deploy ok 1000 exit 0 s6     ci, aarch64, zsh
  E8 bob   12-08 08:30 test fail 400 exit 1 s6
  E9 alice 12-09 22:00 feature_usage export s7      environment: os only
  E10 erin 12-09 23:30 build ok 200 exit 0 s8       sdk 0.4.0 (B: Thursday 12-10)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import own_database
from tests.fakes.system import FakeClock
from tests.support.sdk import sdk_event
from tkcloud_adapters.sql.analytics import SqlAnalyticsReader
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.rollup_analytics import RollupAnalyticsReader
from tkcloud_adapters.sql.rollups import SqlRollups
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_application.analytics import AnalyticsQuery, AppAnalytics
from tkcloud_application.identity.access import Access
from tkcloud_application.ports.analytics import AnalyticsReader
from tkcloud_domain.analytics import (
    ActiveUsers,
    Change,
    Cohort,
    CommandStats,
    Count,
    FailingCommand,
    Filters,
    Point,
    TotalsReport,
    Window,
    timezone,
    window,
)
from tkcloud_domain.errors import NotFound, ValidationFailed
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.identity import OperatorPrincipal
from tkcloud_domain.plans import Plan
from tkcloud_domain.rollups import ALPHA
from tkcloud_domain.tenancy import App, Environment, IngestApp, Org

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
OPERATOR = OperatorPrincipal()
ORG_ID, APP_ID, OTHER_APP_ID = "org_analytics", "app_analytics", "app_other"
SDK = "telemetry-kit-rust/0.3.0"

W = AnalyticsQuery(start=datetime(2026, 12, 3, tzinfo=UTC), end=datetime(2026, 12, 10, tzinfo=UTC))
EMPTY = AnalyticsQuery(
    start=datetime(2026, 10, 1, tzinfo=UTC), end=datetime(2026, 10, 8, tzinfo=UTC)
)


def at(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def command(
    name: str | None, success: bool | None, duration: int | None, exit_code: int | None
) -> dict[str, Any]:
    data: dict[str, Any] = {"command": name, "duration_ms": duration, "exit_code": exit_code}
    if success is not None:
        data["success"] = success
    return {k: v for k, v in data.items() if v is not None}


def wire(
    moment: datetime,
    user: str,
    session: str,
    data: dict[str, Any],
    *,
    event_type: str = "command_execution",
    os: str = "linux",
    version: str = "1.2.3",
    environment: dict[str, Any] | None = None,
    sdk: str = SDK,
    event_id: str | None = None,
) -> dict[str, Any]:
    event = sdk_event(
        moment,
        user_id=f"client_{user}",
        session_id=session,
        service={"name": "harness-app", "version": version, "language": "rust"},
        environment=environment or {"os": os, "arch": "x86_64", "ci": False, "shell": "bash"},
        event={"type": event_type, "category": "usage", "data": data},
        metadata={"sdk_version": sdk, "batch_size": 1},
    )
    if event_id is not None:
        event["event_id"] = event_id
    return event


def parsed(events: list[dict[str, Any]]) -> list[EventSchema]:
    result = []
    for index, event in enumerate(events):
        schema = parse_event(json.dumps(event).encode(), index, now=NOW, oldest=None)
        assert isinstance(schema, EventSchema), schema
        result.append(schema)
    return result


E1_ID, E3_ID = "11111111-1111-4111-8111-111111111111", "33333333-3333-4333-8333-333333333333"


async def load_fixture(engine: AsyncEngine) -> None:
    org = Org(ORG_ID, "Acme", "acme-analytics", Plan.PRO, "eu", NOW - timedelta(days=60))
    app = App(APP_ID, ORG_ID, "cli", Environment.PRODUCTION, True, NOW - timedelta(days=60))
    async with SqlTenancyUnitOfWork(engine) as uow:
        await uow.orgs.add(org)
        await uow.apps.add(app)
        await uow.commit()
    target = IngestApp(ORG_ID, APP_ID, Environment.PRODUCTION, True, Plan.PRO, org.limits, ())
    other = IngestApp(ORG_ID, OTHER_APP_ID, Environment.PRODUCTION, True, Plan.PRO, org.limits, ())
    store = SqlEventStore(engine)
    e1 = wire(at(3, 9), "alice", "s3", command("build", True, 100, 0), event_id=E1_ID)
    first_batch = [
        e1,
        e1,  # the same event twice in one batch
        wire(at(3, 23, 30), "alice", "s3", command("build", True, 300, 0)),
        wire(
            at(4, 10),
            "carol",
            "s4",
            command("test", False, 500, 1),
            os="macos",
            version="2.0.0",
            event_id=E3_ID,
        ),
        wire(at(4, 11), "carol", "s4", command("test", False, 700, 2), os="macos", version="2.0.0"),
        wire(at(5, 12), "dave", "s5", {"feature": "export"}, event_type="feature_usage"),
        wire(at(6, 23, 30), "dave", "s5", command("build", None, 900, None)),
        wire(
            at(8, 8),
            "bob",
            "s6",
            command("deploy", True, 1000, 0),
            environment={"os": "linux", "arch": "aarch64", "ci": True, "shell": "zsh"},
        ),
        wire(at(8, 8, 30), "bob", "s6", command("test", False, 400, 1)),
        wire(
            at(9, 22),
            "alice",
            "s7",
            {"feature": "export"},
            event_type="feature_usage",
            environment={"os": "linux"},
        ),
        wire(at(9, 23, 30), "erin", "s8", command("build", True, 200, 0), sdk="tk-rust/0.4.0"),
    ]
    assert await store.store(target, parsed(first_batch), NOW) == 10
    # Late events, days after they happened, and a resent E3 whose (changed) copy is ignored.
    late_batch = [
        wire(at(20, 10, month=11), "frank", "s0", command("build", True, 100, 0)),
        wire(at(28, 10, month=11), "alice", "s1", command("build", True, 100, 0)),
        wire(at(30, 10, month=11), "bob", "s2", command("test", False, 200, 1)),
        wire(at(4, 10), "carol", "s4", command("zzz", True, 1, 9), event_id=E3_ID),
    ]
    assert await store.store(target, parsed(late_batch), NOW + timedelta(minutes=5)) == 3
    # Another app's event, by a user of this one, in the window: never counted here.
    noise = [wire(at(5, 12), "carol", "s4", command("build", True, 100, 0))]
    assert await store.store(other, parsed(noise), NOW) == 1
    for day, requests in ((date(2026, 12, 2), 5), (date(2026, 12, 3), 2), (date(2026, 12, 9), 3)):
        for _ in range(requests):
            await store.count_dnt(target, day)
    await store.count_dnt(target, date(2026, 12, 10))
    await store.count_dnt(other, date(2026, 12, 5))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    # A database of this module alone: the fixed data must not meet other tests' events.
    with own_database(request.param, tmp_path_factory.mktemp("analytics"), "analytics") as url:
        yield url


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        await load_fixture(engine)
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture(params=["rollups", "raw"])
def analytics(request: pytest.FixtureRequest, engine: AsyncEngine) -> AppAnalytics:
    """The service's reader (rollups, which fold the queued batches on the first read) and
    the raw reader it falls back on: both must give every answer below."""
    raw = SqlAnalyticsReader(engine)
    reader: AnalyticsReader = raw
    if request.param == "rollups":
        reader = RollupAnalyticsReader(engine, SqlRollups(engine), raw)
    return AppAnalytics(Access(lambda: SqlTenancyUnitOfWork(engine)), reader, FakeClock(NOW))


def query(base: AnalyticsQuery, **changes: Any) -> AnalyticsQuery:
    return AnalyticsQuery(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


# --- totals ------------------------------------------------------------------------------------


async def test_totals_with_change(analytics: AppAnalytics) -> None:
    assert await analytics.totals(OPERATOR, APP_ID, W) == TotalsReport(
        events=Change(10, 2), users=Change(5, 2), sessions=Change(6, 2)
    )
    report = await analytics.totals(OPERATOR, APP_ID, W)
    assert (report.events.fraction, report.users.fraction, report.sessions.fraction) == (
        4.0,
        1.5,
        2.0,
    )


async def test_totals_filtered_and_empty(analytics: AppAnalytics) -> None:
    macos = await analytics.totals(OPERATOR, APP_ID, query(W, filters=Filters(os="macos")))
    assert macos == TotalsReport(Change(2, 0), Change(1, 0), Change(1, 0))
    assert macos.events.fraction is None
    features = query(W, filters=Filters(event_type="feature_usage"))
    assert await analytics.totals(OPERATOR, APP_ID, features) == TotalsReport(
        Change(2, 0), Change(2, 0), Change(2, 0)
    )
    assert await analytics.totals(OPERATOR, APP_ID, EMPTY) == TotalsReport(
        Change(0, 0), Change(0, 0), Change(0, 0)
    )


# --- time series -------------------------------------------------------------------------------


async def test_daily_series_in_berlin(analytics: AppAnalytics) -> None:
    points = await analytics.series(OPERATOR, APP_ID, query(W, tz="Europe/Berlin"))
    expected = [(3, 1, 1), (4, 3, 2), (5, 1, 1), (6, 0, 0), (7, 1, 1), (8, 2, 1), (9, 1, 1)]
    expected.append((10, 1, 1))  # E10 at 23:30 UTC on the 9th is the 10th in Berlin
    assert points == [Point(datetime(2026, 12, d, tzinfo=BERLIN), e, u) for d, e, u in expected]


async def test_daily_series_in_utc(analytics: AppAnalytics) -> None:
    points = await analytics.series(OPERATOR, APP_ID, W)
    expected = [(3, 2, 1), (4, 2, 1), (5, 1, 1), (6, 1, 1), (7, 0, 0), (8, 2, 1), (9, 2, 2)]
    assert points == [Point(datetime(2026, 12, d, tzinfo=UTC), e, u) for d, e, u in expected]


TWO_DAYS = AnalyticsQuery(start=at(8, 0), end=at(10, 0))


async def test_hourly_series_in_berlin(analytics: AppAnalytics) -> None:
    points = await analytics.series(OPERATOR, APP_ID, query(TWO_DAYS, tz="Europe/Berlin"))
    assert len(points) == 48
    assert [p.bucket for p in points] == [at(8, 0) + timedelta(hours=h) for h in range(48)]
    assert all(p.bucket.tzinfo is BERLIN for p in points)
    busy = {p.bucket: (p.events, p.users) for p in points if p.events}
    assert busy == {at(8, 8): (2, 1), at(9, 22): (1, 1), at(9, 23): (1, 1)}


async def test_hourly_series_in_a_half_hour_zone(analytics: AppAnalytics) -> None:
    # Kolkata is UTC+5:30: local hours start at :30 UTC, so E7 (08:00) and E8 (08:30) part.
    points = await analytics.series(OPERATOR, APP_ID, query(TWO_DAYS, tz="Asia/Kolkata"))
    assert [p.bucket for p in points] == [at(7, 23, 30) + timedelta(hours=h) for h in range(49)]
    busy = {p.bucket: (p.events, p.users) for p in points if p.events}
    assert busy == {
        at(8, 7, 30): (1, 1),
        at(8, 8, 30): (1, 1),
        at(9, 21, 30): (1, 1),
        at(9, 23, 30): (1, 1),
    }


async def test_series_of_an_empty_period(analytics: AppAnalytics) -> None:
    points = await analytics.series(OPERATOR, APP_ID, EMPTY)
    assert points == [Point(datetime(2026, 10, d, tzinfo=UTC), 0, 0) for d in range(1, 8)]


# --- active users ------------------------------------------------------------------------------


async def test_active_users_and_stickiness(analytics: AppAnalytics) -> None:
    # At 12-10 00:00: day = alice (E9), erin; week = alice, carol, dave, bob, erin; 30 days
    # adds frank (11-20).
    active = await analytics.active_users(OPERATOR, APP_ID, W)
    assert active == ActiveUsers(dau=2, wau=5, mau=6)
    assert active.stickiness == pytest.approx(2 / 6)
    macos = await analytics.active_users(OPERATOR, APP_ID, query(W, filters=Filters(os="macos")))
    assert macos == ActiveUsers(0, 1, 1)
    empty = await analytics.active_users(OPERATOR, APP_ID, EMPTY)
    assert empty == ActiveUsers(0, 0, 0)
    assert empty.stickiness is None


# --- commands and features ---------------------------------------------------------------------


def approx(value: float) -> float:
    """pytest.approx typed as the float it stands for: the rollups' percentiles are within 2.5 %
    (tkcloud_domain.rollups.ALPHA) of the exact ones."""
    return pytest.approx(value, rel=ALPHA)  # type: ignore[return-value]


async def test_top_commands(analytics: AppAnalytics) -> None:
    commands = await analytics.top_commands(OPERATOR, APP_ID, W)
    # build: durations 100, 200, 300, 900 (E6 reported no success, so 3 of 3 succeeded);
    # p50 = 250, p95 at rank 2.85 = 300 + 0.85 * 600. test: 400, 500, 700; p95 = 500 + 0.9 * 200.
    assert commands == [
        CommandStats("build", 4, 1.0, approx(250.0), approx(810.0), [Count("0", 3)]),
        CommandStats("test", 3, 0.0, approx(500.0), approx(680.0), [Count("1", 2), Count("2", 1)]),
        CommandStats("deploy", 1, 1.0, approx(1000.0), approx(1000.0), [Count("0", 1)]),
    ]
    top_one = await analytics.top_commands(OPERATOR, APP_ID, query(W, limit=1))
    assert [c.command for c in top_one] == ["build"]
    features = query(W, filters=Filters(event_type="feature_usage"))
    assert await analytics.top_commands(OPERATOR, APP_ID, features) == []
    assert await analytics.top_commands(OPERATOR, APP_ID, EMPTY) == []


async def test_top_features(analytics: AppAnalytics) -> None:
    assert await analytics.top_features(OPERATOR, APP_ID, W) == [Count("export", 2)]
    macos = query(W, filters=Filters(os="macos"))
    assert await analytics.top_features(OPERATOR, APP_ID, macos) == []
    assert await analytics.top_features(OPERATOR, APP_ID, EMPTY) == []


async def test_failing_commands(analytics: AppAnalytics) -> None:
    assert await analytics.failing_commands(OPERATOR, APP_ID, W) == [
        FailingCommand("test", 3, [Count("1", 2), Count("2", 1)])
    ]
    v2 = query(W, filters=Filters(service_version="2.0.0"))
    assert await analytics.failing_commands(OPERATOR, APP_ID, v2) == [
        FailingCommand("test", 2, [Count("1", 1), Count("2", 1)])
    ]
    assert await analytics.failing_commands(OPERATOR, APP_ID, EMPTY) == []


# --- breakdowns --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        ("os", [("linux", 8), ("macos", 2)]),
        ("arch", [("x86_64", 8), ("aarch64", 1), (None, 1)]),
        ("ci", [("false", 8), ("true", 1), (None, 1)]),
        ("shell", [("bash", 8), ("zsh", 1), (None, 1)]),
        ("service_version", [("1.2.3", 8), ("2.0.0", 2)]),
        ("sdk_version", [(SDK, 9), ("tk-rust/0.4.0", 1)]),
    ],
)
async def test_breakdowns(
    analytics: AppAnalytics, dimension: str, expected: list[tuple[str | None, int]]
) -> None:
    counts = await analytics.breakdown(OPERATOR, APP_ID, dimension, W)
    assert counts == [Count(key, count) for key, count in expected]
    assert await analytics.breakdown(OPERATOR, APP_ID, dimension, EMPTY) == []


async def test_breakdown_filtered_and_unknown_dimension(analytics: AppAnalytics) -> None:
    v123 = query(W, filters=Filters(service_version="1.2.3"))
    assert await analytics.breakdown(OPERATOR, APP_ID, "os", v123) == [Count("linux", 8)]
    with pytest.raises(ValidationFailed):
        await analytics.breakdown(OPERATOR, APP_ID, "user_id", W)


# --- retention ---------------------------------------------------------------------------------


def monday(day: int, month: int, tz: tzinfo = BERLIN) -> datetime:
    return datetime(2026, month, day, tzinfo=tz)


async def test_retention_in_berlin(analytics: AppAnalytics) -> None:
    # New in W (first seen ever): carol (12-04), dave (12-05), erin (12-10 in Berlin).
    # Dave's E6 (Sunday 23:30 UTC) is Monday in Berlin: he returns in week 1.
    cohorts = await analytics.retention(OPERATOR, APP_ID, query(W, tz="Europe/Berlin"))
    assert cohorts == [Cohort(monday(30, 11), 2, [2, 1]), Cohort(monday(7, 12), 1, [1])]
    assert all(c.week.tzinfo is BERLIN for c in cohorts)


async def test_retention_in_utc(analytics: AppAnalytics) -> None:
    cohorts = await analytics.retention(OPERATOR, APP_ID, W)
    assert cohorts == [Cohort(monday(30, 11, UTC), 2, [2, 0]), Cohort(monday(7, 12, UTC), 1, [1])]


async def test_retention_filtered_and_empty(analytics: AppAnalytics) -> None:
    macos = query(W, tz="Europe/Berlin", filters=Filters(os="macos"))
    assert await analytics.retention(OPERATOR, APP_ID, macos) == [Cohort(monday(30, 11), 1, [1, 0])]
    # Under the filter alice is first seen on 12-09: "first seen" follows the filters.
    features = query(W, tz="Europe/Berlin", filters=Filters(event_type="feature_usage"))
    assert await analytics.retention(OPERATOR, APP_ID, features) == [
        Cohort(monday(30, 11), 1, [1, 0]),
        Cohort(monday(7, 12), 1, [1]),
    ]
    assert await analytics.retention(OPERATOR, APP_ID, EMPTY) == []


# --- DNT ---------------------------------------------------------------------------------------


async def test_dnt_requests(analytics: AppAnalytics) -> None:
    # Days 12-03 to 12-09: 2 + 3; the 12-02 and 12-10 requests and the other app's are outside.
    assert await analytics.dnt_requests(OPERATOR, APP_ID, W) == 5
    # The filters do not apply: a DNT request carries no event.
    macos = query(W, filters=Filters(os="macos"))
    assert await analytics.dnt_requests(OPERATOR, APP_ID, macos) == 5
    assert await analytics.dnt_requests(OPERATOR, APP_ID, EMPTY) == 0


# --- access and validation ---------------------------------------------------------------------


async def test_unknown_app_is_not_found_before_the_query_is_validated(
    analytics: AppAnalytics,
) -> None:
    with pytest.raises(NotFound):
        await analytics.totals(OPERATOR, "app_missing", AnalyticsQuery(period="1y"))
    with pytest.raises(ValidationFailed):
        await analytics.totals(OPERATOR, APP_ID, AnalyticsQuery(period="1y"))
    with pytest.raises(ValidationFailed):
        await analytics.series(OPERATOR, APP_ID, query(W, tz="Mars/Olympus"))
    with pytest.raises(ValidationFailed):
        await analytics.top_commands(OPERATOR, APP_ID, query(W, limit=0))


async def test_default_period_is_the_last_seven_days(analytics: AppAnalytics) -> None:
    # NOW is 12-10 12:00: [12-03 12:00, 12-10 12:00) drops E1 (12-03 09:00).
    report = await analytics.totals(OPERATOR, APP_ID, AnalyticsQuery())
    assert report.events.current == 9


def test_window_validation() -> None:
    start, end = at(1, 0), at(2, 0)
    assert window(NOW, None, None, None) == Window(NOW - timedelta(days=7), NOW)
    assert window(NOW, "24h", None, None) == Window(NOW - timedelta(hours=24), NOW)
    assert window(NOW, None, start, end) == Window(start, end)
    assert Window(start, end).previous == Window(start - timedelta(days=1), start)
    assert Window(start, end).hourly
    assert not Window(start, start + timedelta(days=2, microseconds=1)).hourly
    for args, message in [
        (("1y", None, None), "period"),
        ((None, start, None), "from and to"),
        ((None, None, end), "from and to"),
        ((None, end, start), "before"),
        ((None, start, start), "before"),
        ((None, start, start + timedelta(days=800)), "two years"),
    ]:
        with pytest.raises(ValidationFailed, match=message):
            window(NOW, *args)


def test_timezone_validation() -> None:
    assert timezone(None) == ZoneInfo("UTC")
    assert timezone("Europe/Berlin") is BERLIN
    assert timezone("") == ZoneInfo("UTC")  # an empty parameter means "not given"
    for name in ("Mars/Olympus", "../etc/passwd"):
        with pytest.raises(ValidationFailed, match="tz"):
            timezone(name)
