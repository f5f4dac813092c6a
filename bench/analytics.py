"""Analytics benchmark: every dashboard analytics use case, timed on Postgres over many events.

    uv run python -m bench.analytics [--events N] [--other-tenants-events M] [--runs R]
                                     [--seed S] [--max-seconds-per-endpoint T] [--json] [--keep]

What it does, in order (bench/README.md, "Analytics", explains how to read the output):

1. makes a throwaway database, `CREATE DATABASE bench_a_<random>` next to the admin DSN, and
   migrates it (`tkcloud_adapters.sql.migrate.upgrade`, i.e. `tkcloud db upgrade`);
2. creates an org on the enterprise plan with one production app, and two other orgs with a few
   apps (domain `Org`/`App` through `SqlTenancyUnitOfWork`, as the integration tests do);
3. bulk-loads N synthetic events for the app, spread over the 90 days before "now" (and M for the
   other apps) with asyncpg's COPY in chunks of --chunk rows. The rows are what ingestion would
   store (a sample is checked against `parse_event` + the event store's row builder): about 2,000
   users with a long tail who join and leave over the period and upgrade the service with a lag,
   sessions, 10 commands with per-command success rates (~90 %) and lognormal durations, exit
   codes, features, error and custom events, os/arch/shell/ci/version mixes, a few late events.
   The rows go into the monthly partitions of their timestamps (made first, as the retention
   job makes them). The indexes of `events` and `event_keys` are dropped for the COPY and
   rebuilt after it (the same definitions, read back from the catalogue and checked), after
   `event_keys` is filled from the events (INSERT SELECT); then `usage_monthly` (by month of
   arrival, as ingestion counts) and `dnt_daily` are filled and the table is VACUUM ANALYZEd, as
   autovacuum would have done to an insert-only table. The load runs in a child process, so that
   its memory does not count in this process's peak RSS;
   then it builds the rollups as `tkcloud analytics rebuild` does (`SqlRollups.rebuild`) and
   VACUUM ANALYZEs them, as autovacuum would;
4. times each analytics use case through `AppAnalytics` (the service's reader,
   `RollupAnalyticsReader`, or with `--reader raw` the raw events' `SqlAnalyticsReader`; operator
   principal, real `Access` checks) for period=30d and 90d: R runs each, the first one discarded
   as warm-up; prints p50/p95/max in ms and marks every p95 over the 100 ms target. The clock is
   fixed at the load's "now", so that every run asks about the same window;
5. exports min(N, 1,000,000) of the app's newest events as Parquet through `EventExplorer` +
   `SqlEventReader` + `ArrowParquetEncoder` into /dev/null, and prints the time, the rows and
   bytes written, and this process's peak RSS (ru_maxrss) before and after;
6. always drops the database, even on Ctrl-C or SIGTERM (unless --keep: then it prints its
   URL, for EXPLAIN ANALYZE of a query at that size; drop it yourself).

Only 127.0.0.1 is spoken to. Each query is bounded by the service's own statement timeout (10 s)
and each endpoint by --max-seconds-per-endpoint. `--events 10000000` is the issue's target size.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import FrameType
from typing import Any

from bench.database import Postgres

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_P95_MS = 100.0
EXPORT_MAX_EVENTS = 1_000_000
DAYS = 90
BERLIN = "Europe/Berlin"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


# --- the database of the run ------------------------------------------------------------------


# --- the synthetic world ----------------------------------------------------------------------

MAIN_ORG, MAIN_APP = "org_bench", "app_bench"
# (org id, plan, [(app id, environment, share of the other tenants' events)])
OTHER_TENANTS = [
    ("org_bench", "enterprise", [("app_bench_staging", "staging", 0.2)]),
    (
        "org_other_a",
        "pro",
        [("app_other_a1", "production", 0.35), ("app_other_a2", "staging", 0.1)],
    ),
    ("org_other_b", "free", [("app_other_b1", "production", 0.35)]),
]

COLUMNS = (
    "org_id",
    "app_id",
    "event_id",
    "timestamp",
    "received_at",
    "schema_version",
    "event_type",
    "event_category",
    "user_id",
    "session_id",
    "service_name",
    "service_version",
    "service_language",
    "service_language_version",
    "os",
    "os_version",
    "arch",
    "ci",
    "shell",
    "sdk_version",
    "command",
    "subcommand",
    "success",
    "duration_ms",
    "exit_code",
    "feature",
    "raw",
)

# name, weight, success rate, median duration in ms
COMMANDS = [
    ("build", 30, 0.92, 4200),
    ("test", 22, 0.86, 9500),
    ("run", 15, 0.90, 1500),
    ("check", 10, 0.93, 2100),
    ("fmt", 7, 0.99, 300),
    ("deploy", 5, 0.81, 45000),
    ("init", 4, 0.97, 800),
    ("clean", 3, 0.995, 250),
    ("publish", 2, 0.78, 20000),
    ("login", 2, 0.88, 3000),
]
SUBCOMMANDS = {"test": ["unit", "integration", None], "run": ["dev", "prod", None]}
FEATURES = [
    "export",
    "watch_mode",
    "plugin_install",
    "remote_cache",
    "sync",
    "templates",
    "ai_suggest",
    "telemetry_settings",
]
FAILURE_CODES = [1] * 14 + [2] * 3 + [101] * 2 + [130]  # 70 % 1, 15 % 2, 10 % 101, 5 % 130
ERROR_KINDS = ["network", "config", "panic", "permission"]
# (first day, relative to the window's start, service version, SDK version)
RELEASES = [
    (-60, "1.0.4", "telemetry-kit-rust/0.2.1"),
    (8, "1.1.0", "telemetry-kit-rust/0.3.0"),
    (35, "1.2.0", "telemetry-kit-rust/0.3.0"),
    (61, "1.2.1", "telemetry-kit-rust/0.3.1"),
    (79, "1.3.0", "telemetry-kit-rust/0.4.0"),
]
# event kinds: (name, cumulative weight)
KINDS = ["command", "feature", "error", "custom"]
KIND_CUM = [80, 95, 98, 100]

_RAW = (
    '{"schema_version":"1.0.0","event_id":"%s","timestamp":"%s",'
    '"service":{"name":"%s","version":"%s","language":"rust","language_version":"1.83.0"},'
    '"user_id":"%s","session_id":"%s","environment":%s,'
    '"event":{"type":"%s","category":"%s","data":%s},'
    '"metadata":{"sdk_version":"%s","transmission_timestamp":"%s","batch_size":%d,'
    '"retry_count":0}}'
)


@dataclass(frozen=True, slots=True)
class User:
    index: int
    user_id: str
    os: str
    os_version: str
    arch: str
    shell: str
    ci: bool
    join_day: int  # first day active (0 = the window's first day; < 0: before the window)
    leave_day: int  # first day no longer active
    upgrade_lag: int  # days between a release and this user's upgrade
    environment_json: str


def make_users(rng: random.Random, count: int) -> list[User]:
    users = []
    for index in range(count):
        ci = rng.random() < 0.12
        os_name = rng.choices(["linux", "macos", "windows"], [55, 30, 15])[0]
        if ci:
            os_name = "linux" if rng.random() < 0.9 else "windows"
        if os_name == "linux":
            os_version = rng.choice(["6.1", "6.5", "6.8", "5.15"])
            arch = "x86_64" if rng.random() < 0.8 else "aarch64"
            shell = rng.choices(["bash", "zsh", "fish", "sh"], [60, 25, 10, 5])[0]
        elif os_name == "macos":
            os_version = rng.choice(["14.6", "15.1", "15.2", "13.7"])
            arch = "aarch64" if rng.random() < 0.8 else "x86_64"
            shell = rng.choices(["zsh", "bash", "fish"], [75, 15, 10])[0]
        else:
            os_version = rng.choice(["10.0.19045", "10.0.22631", "10.0.26100"])
            arch = "x86_64"
            shell = rng.choices(["powershell", "cmd", "bash"], [70, 20, 10])[0]
        prefix = "anon_" if rng.random() < 0.1 else "client_"
        user_id = prefix + f"{rng.getrandbits(256):064x}"
        join_day = -1 if rng.random() < 0.3 else rng.randrange(DAYS)
        stays = rng.random() < 0.45 or ci
        leave_day = DAYS if stays else join_day + 1 + int(rng.expovariate(1 / 25))
        environment = (
            f'{{"os":"{os_name}","os_version":"{os_version}","arch":"{arch}",'
            f'"ci":{"true" if ci else "false"},"shell":"{shell}"}}'
        )
        users.append(
            User(
                index,
                user_id,
                os_name,
                os_version,
                arch,
                shell,
                ci,
                join_day,
                min(DAYS, leave_day),
                int(rng.expovariate(1 / 6)),
                environment,
            )
        )
    return users


def hourly_counts(total: int, rng: random.Random) -> list[int]:
    """`total` events over DAYS * 24 hours: growth over the period, quieter weekends and nights
    (UTC), a little noise. Exact total."""
    weights = []
    for hour in range(DAYS * 24):
        day, hour_of_day = divmod(hour, 24)
        growth = 1 + 0.8 * day / DAYS
        weekday = date.fromordinal(day + 1).weekday()  # any fixed calendar: a 7-day rhythm
        weekly = 0.45 if weekday >= 5 else 1.0
        daily = 0.35 + 0.65 * max(0.0, math.sin(math.pi * (hour_of_day - 5) / 16))
        weights.append(growth * weekly * daily * rng.uniform(0.85, 1.15))
    scale = total / sum(weights)
    # Rounded running totals, differenced: the counts add up to `total` exactly.
    cumulative = [0]
    running = 0.0
    for weight in weights:
        running += weight * scale
        cumulative.append(round(running))
    cumulative[-1] = total
    return [cumulative[i + 1] - cumulative[i] for i in range(len(weights))]


def zipf_weights(count: int, exponent: float) -> list[float]:
    return [1 / (rank + 1) ** exponent for rank in range(count)]


class EventFactory:
    """Rows of the events table (COLUMNS order) for one app, oldest first."""

    def __init__(
        self,
        rng: random.Random,
        org_id: str,
        app_id: str,
        users: list[User],
        start: datetime,
        now: datetime,
        service_name: str = "harness-app",
    ) -> None:
        self.rng = rng
        self.org_id, self.app_id = org_id, app_id
        self.users = users
        self.start_ts, self.now_ts = start.timestamp(), now.timestamp()
        self.service_name = service_name
        self.weights = zipf_weights(len(users), 1.1)
        rng.shuffle(self.weights)  # heavy users are not all early joiners
        self.command_cum = list(_cumulative(w for _, w, _, _ in COMMANDS))
        self.feature_cum = list(_cumulative(zipf_weights(len(FEATURES), 1.0)))
        self.months: Counter[str] = Counter()  # events by month of arrival (usage_monthly)

    def _day_tables(self, day: int) -> tuple[list[tuple[User, str, str]], list[float]]:
        active = [u for u in self.users if u.join_day <= day < u.leave_day]
        if not active:  # never an empty day: the first user is always around
            active = self.users[:1]
        profiles, cum, running = [], [], 0.0
        for user in active:
            version_day = day - user.upgrade_lag
            release = next(r for r in reversed(RELEASES) if r[0] <= version_day)
            profiles.append((user, release[1], release[2]))
            running += self.weights[user.index]
            cum.append(running)
        return profiles, cum

    def rows(self, total: int) -> Iterator[tuple[Any, ...]]:
        rng = self.rng
        random_ = rng.random
        per_hour = hourly_counts(total, rng)
        current_day, profiles, cum = -1, [], []
        fromtimestamp = datetime.fromtimestamp
        for hour, count in enumerate(per_hour):
            if not count:
                continue
            day = hour // 24
            if day != current_day:
                current_day = day
                profiles, cum = self._day_tables(day)
            base = self.start_ts + hour * 3600
            offsets = sorted(random_() * 3600 for _ in range(count))
            picks = rng.choices(profiles, cum_weights=cum, k=count)
            kinds = rng.choices(KINDS, cum_weights=KIND_CUM, k=count)
            slot = (hour % 24) // 6
            for offset, (user, version, sdk), kind in zip(offsets, picks, kinds, strict=True):
                ts = base + offset
                moment = fromtimestamp(ts, UTC)
                late = random_() < 0.02
                delay = rng.uniform(3600, 4 * 86400) if late else rng.expovariate(1 / 3)
                received_ts = min(ts + delay, self.now_ts)
                received = fromtimestamp(received_ts, UTC)
                self.months[f"{received:%Y-%m}"] += 1
                event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                session_id = f"sess_{user.index:05x}{day:03d}{slot}{'ab' * 11}"
                command = subcommand = feature = None
                success: bool | None = None
                duration = exit_code = None
                if kind == "command":
                    name, _, rate, median = COMMANDS[
                        _pick(self.command_cum, random_() * self.command_cum[-1])
                    ]
                    command = name
                    subs = SUBCOMMANDS.get(name)
                    subcommand = subs[int(random_() * len(subs))] if subs else None
                    duration = int(rng.lognormvariate(math.log(median), 0.9))
                    if random_() < 0.02:  # an old SDK that did not report the outcome
                        subcommand = None  # nor a subcommand: the row must match its data
                        data = f'{{"command":"{name}","duration_ms":{duration}}}'
                    else:
                        success = random_() < rate
                        exit_code = 0 if success else FAILURE_CODES[int(random_() * 20)]
                        data = (
                            f'{{"command":"{name}",'
                            + (f'"subcommand":"{subcommand}",' if subcommand else "")
                            + f'"success":{"true" if success else "false"},'
                            f'"duration_ms":{duration},"exit_code":{exit_code}}}'
                        )
                    event_type, category = "command_execution", "usage"
                elif kind == "feature":
                    feature = FEATURES[_pick(self.feature_cum, random_() * self.feature_cum[-1])]
                    data = f'{{"feature":"{feature}","enabled":true}}'
                    event_type, category = "feature_usage", "usage"
                elif kind == "error":
                    error_kind = ERROR_KINDS[int(random_() * len(ERROR_KINDS))]
                    data = f'{{"error_kind":"{error_kind}","recoverable":true}}'
                    event_type, category = "error", "error"
                else:
                    data = '{"key":"output.color","changed":true}'
                    event_type, category = "config_change", "settings"
                stamp = f"{moment:%Y-%m-%dT%H:%M:%S.%fZ}"
                raw = _RAW % (
                    event_id,
                    stamp,
                    self.service_name,
                    version,
                    user.user_id,
                    session_id,
                    user.environment_json,
                    event_type,
                    category,
                    data,
                    sdk,
                    f"{received:%Y-%m-%dT%H:%M:%S.%fZ}",
                    1 + int(random_() * 50),
                )
                yield (
                    self.org_id,
                    self.app_id,
                    event_id,
                    moment,
                    received,
                    "1.0.0",
                    event_type,
                    category,
                    user.user_id,
                    session_id,
                    self.service_name,
                    version,
                    "rust",
                    "1.83.0",
                    user.os,
                    user.os_version,
                    user.arch,
                    user.ci,
                    user.shell,
                    sdk,
                    command,
                    subcommand,
                    success,
                    duration,
                    exit_code,
                    feature,
                    raw,
                )


def _cumulative(values: Any) -> Iterator[float]:
    running = 0.0
    for value in values:
        running += value
        yield running


def _pick(cumulative: list[float], point: float) -> int:
    for index, edge in enumerate(cumulative):
        if point < edge:
            return index
    return len(cumulative) - 1


def check_rows_like_ingestion(rows: Sequence[tuple[Any, ...]], now: datetime) -> None:
    """The synthetic rows must be what the event store would write for the same JSON."""
    from tkcloud_adapters.sql.event_store import _event_row
    from tkcloud_domain.events import EventSchema, parse_event
    from tkcloud_domain.plans import Plan, limits_for
    from tkcloud_domain.tenancy import Environment, IngestApp

    for row in rows:
        stored = dict(zip(COLUMNS, row, strict=True))
        app = IngestApp(
            stored["org_id"],
            stored["app_id"],
            Environment.PRODUCTION,
            True,
            Plan.ENTERPRISE,
            limits_for(Plan.ENTERPRISE),
            (),
        )
        event = parse_event(stored["raw"].encode(), 0, now=now, oldest=None)
        if not isinstance(event, EventSchema):
            raise RuntimeError(f"a synthetic event is invalid: {event}")
        expected = _event_row(app, event, stored["received_at"])
        if expected != stored:
            diff = {k: (stored[k], expected[k]) for k in COLUMNS if stored[k] != expected[k]}
            raise RuntimeError(f"a synthetic row differs from what ingestion stores: {diff}")


# --- the load (in a child process) ------------------------------------------------------------


async def setup_tenancy(url: str, now: datetime) -> None:
    from tkcloud_adapters.sql import partitions
    from tkcloud_adapters.sql.engine import create_engine
    from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
    from tkcloud_domain.plans import Plan
    from tkcloud_domain.tenancy import App, Environment, Org

    engine = create_engine(url)
    created = now - timedelta(days=200)
    try:
        # The monthly partitions of the loaded events, as the retention job would have made them
        # over those months (the migration made only the current month's and the next ones).
        month = partitions.Month.of(now - timedelta(days=DAYS))
        while month <= partitions.Month.of(now):
            await partitions.create_ahead(engine, month.start)
            month = month.next()
        async with SqlTenancyUnitOfWork(engine) as uow:
            await uow.orgs.add(Org(MAIN_ORG, "Bench", "bench", Plan.ENTERPRISE, "eu", created))
            await uow.apps.add(
                App(MAIN_APP, MAIN_ORG, "cli", Environment.PRODUCTION, True, created)
            )
            for org_id, plan, org_apps in OTHER_TENANTS:
                if org_id != MAIN_ORG:
                    org = Org(org_id, org_id, org_id.replace("_", "-"), Plan(plan), "eu", created)
                    await uow.orgs.add(org)
                for app_id, environment, _ in org_apps:
                    await uow.apps.add(
                        App(app_id, org_id, app_id, Environment(environment), True, created)
                    )
            await uow.commit()
    finally:
        await engine.dispose()


PARTITIONS_SIZE = (
    "SELECT pg_size_pretty(sum({size}(inhrelid))) FROM pg_inherits"
    " WHERE inhparent = 'events'::regclass"
)


async def drop_indexes(conn: Any, table: str) -> tuple[Any, list[Any]]:
    """Drop a table's primary key and indexes for a bulk load; returns their definitions, read
    back from the catalogue."""
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = 'public' AND tablename = $1 ORDER BY indexname",
        table,
    )
    primary = await conn.fetchrow(
        "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint"
        " WHERE conrelid = $1::regclass AND contype = 'p'",
        table,
    )
    await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{primary["conname"]}"')
    for index in indexes:
        if index["indexname"] != primary["conname"]:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
    return primary, list(indexes)


async def rebuild_indexes(conn: Any, table: str, primary: Any, indexes: list[Any]) -> None:
    await conn.execute(
        f'ALTER TABLE {table} ADD CONSTRAINT "{primary["conname"]}" {primary["definition"]}'
    )
    for index in indexes:
        if index["indexname"] != primary["conname"]:
            await conn.execute(index["indexdef"])
    after = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = 'public' AND tablename = $1 ORDER BY indexname",
        table,
    )
    if [tuple(r) for r in after] != [tuple(r) for r in indexes]:
        raise RuntimeError(f"the rebuilt indexes of {table} differ: {after} != {indexes}")


async def load(url: str, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    import asyncpg

    figures: dict[str, Any] = {}
    await setup_tenancy(url, now)
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        # On the partitioned table these are partitioned indexes: dropping and making one does
        # it on every partition.
        dropped = {table: await drop_indexes(conn, table) for table in ("events", "event_keys")}

        start = now - timedelta(days=DAYS)
        rng = random.Random(args.seed)
        copy_seconds = generate_seconds = 0.0
        loaded = 0
        usage: list[tuple[str, str, str, str, int]] = []
        plans = [(MAIN_ORG, MAIN_APP, "production", args.events, 2000)]
        for org_id, _, org_apps in OTHER_TENANTS:
            for app_id, environment, share in org_apps:
                count = round(args.other_tenants_events * share)
                plans.append((org_id, app_id, environment, count, 60))
        started = time.perf_counter()
        checked = False
        for org_id, app_id, environment, count, user_count in plans:
            if count <= 0:
                continue
            factory = EventFactory(rng, org_id, app_id, make_users(rng, user_count), start, now)
            rows = factory.rows(count)
            while True:
                t0 = time.perf_counter()
                chunk = [row for _, row in zip(range(args.chunk), rows, strict=False)]
                generate_seconds += time.perf_counter() - t0
                if not chunk:
                    break
                if not checked:
                    check_rows_like_ingestion(rng.sample(chunk, min(200, len(chunk))), now)
                    checked = True
                t0 = time.perf_counter()
                await conn.copy_records_to_table("events", records=chunk, columns=COLUMNS)
                copy_seconds += time.perf_counter() - t0
                loaded += len(chunk)
                if app_id == MAIN_APP:
                    log(f"loaded {loaded:,} of {args.events:,} events")
            usage += [(org_id, app_id, environment, m, n) for m, n in factory.months.items()]
        load_seconds = time.perf_counter() - started

        t0 = time.perf_counter()
        # Ingestion writes every event's deduplication key beside it.
        await conn.execute(
            'INSERT INTO event_keys (app_id, event_id, "timestamp")'
            ' SELECT app_id, event_id, "timestamp" FROM events'
        )
        keys_seconds = time.perf_counter() - t0

        t0 = time.perf_counter()
        for table, (primary, indexes) in dropped.items():
            await rebuild_indexes(conn, table, primary, indexes)
        index_seconds = time.perf_counter() - t0

        await conn.copy_records_to_table(
            "usage_monthly",
            records=usage,
            columns=["org_id", "app_id", "environment", "month", "events"],
        )
        dnt = [
            (MAIN_APP, (start + timedelta(days=d)).date(), rng.randint(0, 40))
            for d in range(DAYS + 1)
        ]
        await conn.copy_records_to_table(
            "dnt_daily", records=dnt, columns=["app_id", "day", "requests"]
        )
        t0 = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) events, event_keys")
        await conn.execute("ANALYZE usage_monthly; ANALYZE dnt_daily; ANALYZE orgs; ANALYZE apps")
        vacuum_seconds = time.perf_counter() - t0

        # The rollups, as `tkcloud analytics rebuild` makes them (ingestion would have folded
        # them batch by batch; the property tests show both give the same rows).
        t0 = time.perf_counter()
        rebuilt = await rebuild_rollups(url, [p[1] for p in plans if p[3] > 0])
        rebuild_seconds = time.perf_counter() - t0
        # As autovacuum would soon: the rebuild's one transaction rewrote each week's histogram
        # rows once per day of the week, and left the old versions behind.
        await conn.execute(
            "VACUUM (ANALYZE) rollup_counts, rollup_durations, rollup_user_days, rollup_first_seen"
        )
        rollup_sizes = {
            table: await conn.fetchval(f"SELECT pg_size_pretty(pg_total_relation_size('{table}'))")
            for table in ROLLUP_TABLE_NAMES
        }
        rollup_rows = {
            # The names are this module's constants, not input.
            table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE app_id = $1", MAIN_APP)  # noqa: S608
            for table in ROLLUP_TABLE_NAMES
        }

        stored = await conn.fetchval("SELECT count(*) FROM events")
        in_app = await conn.fetchval("SELECT count(*) FROM events WHERE app_id = $1", MAIN_APP)
        counted = await conn.fetchval("SELECT sum(events) FROM usage_monthly")
        if not stored == loaded == counted or in_app != args.events:
            raise RuntimeError(f"loaded {loaded}, stored {stored}, usage {counted}, app {in_app}")
        figures = {
            "rows": loaded,
            "app_rows": in_app,
            "users": await conn.fetchval(
                "SELECT count(DISTINCT user_id) FROM events WHERE app_id = $1", MAIN_APP
            ),
            "generate_seconds": round(generate_seconds, 1),
            "copy_seconds": round(copy_seconds, 1),
            "load_seconds": round(load_seconds, 1),
            "rows_per_second": round(loaded / load_seconds),
            "keys_seconds": round(keys_seconds, 1),
            "index_seconds": round(index_seconds, 1),
            "vacuum_analyze_seconds": round(vacuum_seconds, 1),
            # A partitioned table has no storage of its own: its partitions have.
            "table_size": await conn.fetchval(PARTITIONS_SIZE.format(size="pg_table_size")),
            "indexes_size": await conn.fetchval(PARTITIONS_SIZE.format(size="pg_indexes_size")),
            "partitions": await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass"
            ),
            "keys_size": await conn.fetchval(
                "SELECT pg_size_pretty(pg_total_relation_size('event_keys'))"
            ),
            "usage_months": sorted({m: n for o, a, _, m, n in usage if a == MAIN_APP}.items()),
            "rebuild_seconds": round(rebuild_seconds, 1),
            "rebuilt_events": rebuilt,
            "rollup_sizes": rollup_sizes,
            "rollup_rows": rollup_rows,
        }
    finally:
        await conn.close()
    return figures


ROLLUP_TABLE_NAMES = ("rollup_counts", "rollup_durations", "rollup_user_days", "rollup_first_seen")


async def rebuild_rollups(url: str, app_ids: list[str]) -> int:
    from tkcloud_adapters.sql.engine import create_engine
    from tkcloud_adapters.sql.rollups import SqlRollups

    engine = create_engine(url)
    try:
        rollups = SqlRollups(engine)
        total = 0
        for app_id in app_ids:
            started = time.perf_counter()
            events = await rollups.rebuild(app_id)
            log(f"rollups of {app_id}: {events:,} events in {time.perf_counter() - started:.1f} s")
            total += events
        return total
    finally:
        await engine.dispose()


def _load_in_child(
    url: str, args: argparse.Namespace, now: datetime, pipe: multiprocessing.connection.Connection
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us; it cleans up
    try:
        pipe.send(("ok", asyncio.run(load(url, args, now))))
    except BaseException as exc:  # reported to the parent, which fails the run
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        pipe.close()


def run_load(url: str, args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_load_in_child, args=(url, args, now, send), daemon=True)
    child.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", f"the load process died (exit code {child.exitcode})"
    finally:
        if child.is_alive():
            child.join(timeout=5)
        if child.is_alive():
            child.terminate()  # only our own child, by its pid
            child.join()
    if status != "ok":
        raise RuntimeError(f"load failed: {payload}")
    return dict(payload)


# --- the timings -------------------------------------------------------------------------------


@dataclass
class Timing:
    endpoint: str
    period: str
    runs_ms: list[float]
    discarded_ms: float | None
    error: str | None = None
    answer: str = ""

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.runs_ms)
        p95 = percentile(ordered, 95)
        return {
            "endpoint": self.endpoint,
            "period": self.period,
            "runs": len(ordered),
            "warmup_ms": _round(self.discarded_ms),
            "p50_ms": _round(percentile(ordered, 50)),
            "p95_ms": _round(p95),
            "max_ms": _round(ordered[-1] if ordered else None),
            "over_target": bool(self.error) or (ordered != [] and p95 > TARGET_P95_MS),
            "error": self.error,
            "answer": self.answer,
        }


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 1)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0-100), as bench.ingest computes it."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


def describe(answer: Any) -> str:
    """A short proof that the call answered something real."""
    if isinstance(answer, list):
        head = answer[0] if answer else None
        first = ""
        if head is not None:
            label = getattr(head, "command", None) or getattr(head, "key", None)
            first = f", first {label}" if label is not None else ""
        return f"{len(answer)} rows{first}"
    if hasattr(answer, "events") and hasattr(answer.events, "current"):
        return f"{answer.events.current:,} events, {answer.users.current:,} users"
    if hasattr(answer, "mau"):
        return f"DAU {answer.dau} WAU {answer.wau} MAU {answer.mau}"
    return str(answer)


async def time_endpoints(url: str, args: argparse.Namespace, now: datetime) -> list[Timing]:
    from tkcloud_adapters.sql.analytics import SqlAnalyticsReader
    from tkcloud_adapters.sql.engine import create_engine
    from tkcloud_adapters.sql.rollup_analytics import RollupAnalyticsReader
    from tkcloud_adapters.sql.rollups import SqlRollups
    from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
    from tkcloud_application.analytics.queries import AnalyticsQuery, AppAnalytics
    from tkcloud_application.identity.access import Access
    from tkcloud_domain.identity import OperatorPrincipal

    engine = create_engine(url)
    operator = OperatorPrincipal()
    reader: Any = SqlAnalyticsReader(engine)
    if args.reader == "rollups":  # the service's reader
        reader = RollupAnalyticsReader(engine, SqlRollups(engine), reader)
    analytics = AppAnalytics(
        Access(functools.partial(SqlTenancyUnitOfWork, engine)), reader, FixedClock(now)
    )
    endpoints: list[tuple[str, Callable[[AnalyticsQuery], Awaitable[Any]]]] = [
        ("totals", lambda q: analytics.totals(operator, MAIN_APP, q)),
        ("series", lambda q: analytics.series(operator, MAIN_APP, q)),
        ("active_users", lambda q: analytics.active_users(operator, MAIN_APP, q)),
        ("top_commands", lambda q: analytics.top_commands(operator, MAIN_APP, q)),
        ("top_features", lambda q: analytics.top_features(operator, MAIN_APP, q)),
        ("breakdown os", lambda q: analytics.breakdown(operator, MAIN_APP, "os", q)),
        (
            "breakdown service_version",
            lambda q: analytics.breakdown(operator, MAIN_APP, "service_version", q),
        ),
        ("retention", lambda q: analytics.retention(operator, MAIN_APP, q)),
        ("failing_commands", lambda q: analytics.failing_commands(operator, MAIN_APP, q)),
        ("dnt_requests", lambda q: analytics.dnt_requests(operator, MAIN_APP, q)),
    ]
    timings = []
    try:
        for period in ("30d", "90d"):
            query = AnalyticsQuery(period=period, tz=BERLIN)
            for name, call in endpoints:
                timing = Timing(name, period, [], None)
                budget = time.monotonic() + args.max_seconds_per_endpoint
                for run in range(args.runs):
                    started = time.perf_counter()
                    try:
                        answer = await call(query)
                    except Exception as exc:  # a timeout (503) is a figure too: reported
                        timing.error = f"{type(exc).__name__}: {str(exc)[:120]}"
                        break
                    elapsed = (time.perf_counter() - started) * 1000
                    if run == 0:
                        timing.discarded_ms = elapsed
                        timing.answer = describe(answer)
                    else:
                        timing.runs_ms.append(elapsed)
                    if time.monotonic() > budget:
                        break
                log(f"{period} {name}: " + json.dumps(timing.summary()["p95_ms"]) + " ms p95")
                timings.append(timing)
    finally:
        await engine.dispose()
    return timings


# --- the export --------------------------------------------------------------------------------


class CountingReader:
    """The real SqlEventReader, counting the events the export streams."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.events = 0
        self.batches = 0

    async def page(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.page(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        return await self.inner.get(*args, **kwargs)

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async for batch in self.inner.stream(*args, **kwargs):
            self.events += len(batch)
            self.batches += 1
            yield batch


def rss_mib() -> float:
    """This process's current resident set (VmRSS), MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def time_export(url: str, events: int, now: datetime) -> dict[str, Any]:
    import asyncpg

    from tkcloud_adapters.sql.engine import create_engine
    from tkcloud_adapters.sql.explorer import ArrowParquetEncoder, SqlEventReader
    from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
    from tkcloud_application.analytics.explorer import EventExplorer
    from tkcloud_application.identity.access import Access
    from tkcloud_domain.identity import OperatorPrincipal

    wanted = min(events, EXPORT_MAX_EVENTS)
    conn = await asyncpg.connect(url, timeout=10)
    try:  # the newest `wanted` events: from the timestamp of the wanted-th newest one
        start = await conn.fetchval(
            "SELECT timestamp FROM events WHERE app_id = $1"
            " ORDER BY timestamp DESC OFFSET $2 LIMIT 1",
            MAIN_APP,
            wanted - 1,
        )
        end = now + timedelta(seconds=1)
        expected = await conn.fetchval(
            "SELECT count(*) FROM events WHERE app_id = $1 AND timestamp >= $2 AND timestamp < $3",
            MAIN_APP,
            start,
            end,
        )
    finally:
        await conn.close()

    engine = create_engine(url)
    uow = functools.partial(SqlTenancyUnitOfWork, engine)
    reader = CountingReader(SqlEventReader(engine))
    explorer = EventExplorer(Access(uow), reader, ArrowParquetEncoder(), uow, FixedClock(now))
    try:
        rss_before, peak_before = rss_mib(), peak_rss_mib()
        highest = rss_before
        written = chunks = 0
        started = time.perf_counter()
        export = await explorer.export(OperatorPrincipal(), MAIN_APP, "parquet", start, end)
        sink = os.open(os.devnull, os.O_WRONLY)
        try:
            async for chunk in export:
                os.write(sink, chunk)
                written += len(chunk)
                chunks += 1
                if chunks % 50 == 0:
                    highest = max(highest, rss_mib())
        finally:
            os.close(sink)
        seconds = time.perf_counter() - started
        highest = max(highest, rss_mib())
        peak_after = peak_rss_mib()
    finally:
        await engine.dispose()
    if reader.events != expected:
        raise RuntimeError(f"the export streamed {reader.events} events, expected {expected}")
    return {
        "events": reader.events,
        "batches": reader.batches,
        "seconds": round(seconds, 1),
        "events_per_second": round(reader.events / seconds),
        "bytes": written,
        "rss_mib_before": round(rss_before, 1),
        "rss_mib_highest_sampled": round(highest, 1),
        "peak_rss_mib_before": round(peak_before, 1),
        "peak_rss_mib_after": round(peak_after, 1),
    }


# --- the run -----------------------------------------------------------------------------------


def postgres_settings(url: str) -> dict[str, str]:
    async def fetch() -> dict[str, str]:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            names = [
                "server_version",
                "shared_buffers",
                "work_mem",
                "effective_cache_size",
                "max_parallel_workers_per_gather",
                "jit",
            ]
            return {name: await conn.fetchval(f"SHOW {name}") for name in names}
        finally:
            await conn.close()

    return asyncio.run(fetch())


def code_version() -> str:
    """The commit measured, and whether the service's code differed from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "packages", "migrations"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + uncommitted changes" if changed else "")


def render(f: dict[str, Any]) -> str:
    load_, export, pg = f["load"], f["export"], f["postgres"]
    lines = [
        f"tkcloud analytics benchmark - {f['when']} - {f['machine']['platform']}, "
        f"{f['machine']['cpus']} CPUs, Python {f['machine']['python']}, code {f['code']}",
        f"command    {f['command']}",
        f"postgres   {pg['server_version'].split()[0]}, shared_buffers {pg['shared_buffers']}, "
        f"work_mem {pg['work_mem']}, effective_cache_size {pg['effective_cache_size']}, "
        f"parallel workers/gather {pg['max_parallel_workers_per_gather']}, jit {pg['jit']}",
        f"data       {load_['app_rows']:,} events for the app ({load_['users']:,} users) over "
        f"{DAYS} days + {load_['rows'] - load_['app_rows']:,} for {f['other_apps']} other apps; "
        f"events table {load_['table_size']} + indexes {load_['indexes_size']} in "
        f"{load_['partitions']} partitions; event_keys {load_['keys_size']}",
        f"load       {load_['rows']:,} rows in {load_['load_seconds']:.1f} s = "
        f"{load_['rows_per_second']:,} rows/s (generate {load_['generate_seconds']:.1f} s, "
        f"COPY {load_['copy_seconds']:.1f} s); event_keys {load_['keys_seconds']:.1f} s; "
        f"index rebuild {load_['index_seconds']:.1f} s; "
        f"VACUUM ANALYZE {load_['vacuum_analyze_seconds']:.1f} s",
        f"rollups    rebuilt from {load_['rebuilt_events']:,} events in "
        f"{load_['rebuild_seconds']:.1f} s; the app's rows "
        + ", ".join(
            f"{t} {load_['rollup_rows'][t]:,} ({load_['rollup_sizes'][t]} all apps)"
            for t in ROLLUP_TABLE_NAMES
        ),
        f"load avg   {f['loadavg']} before timing (other work shares this machine)",
        f"timings    AppAnalytics over the {f['reader']} reader, operator principal, tz {BERLIN}; "
        f"{f['runs']} runs each, first discarded; ms; target p95 < {TARGET_P95_MS:g} ms",
        f"{'endpoint':<27}{'period':>6}{'warm-up':>10}{'p50':>9}{'p95':>9}{'max':>9}  "
        f"{'target':<7}answer",
    ]
    for t in f["timings"]:

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:,.1f}"

        mark = "MISS" if t["over_target"] else "ok"
        answer = t["error"] or t["answer"]
        lines.append(
            f"{t['endpoint']:<27}{t['period']:>6}{ms(t['warmup_ms']):>10}{ms(t['p50_ms']):>9}"
            f"{ms(t['p95_ms']):>9}{ms(t['max_ms']):>9}  {mark:<7}{answer}"
        )
    missed = [f"{t['endpoint']} {t['period']}" for t in f["timings"] if t["over_target"]]
    lines.append(
        f"over target {len(missed)} of {len(f['timings'])}: " + (", ".join(missed) or "none")
    )
    lines += [
        f"export     parquet of the newest {export['events']:,} events "
        f"({export['batches']:,} batches) in {export['seconds']:.1f} s = "
        f"{export['events_per_second']:,} events/s, "
        f"{export['bytes'] / 2**20:,.1f} MiB written to /dev/null",
        f"memory     peak RSS (ru_maxrss) {export['peak_rss_mib_before']:.1f} MiB before the "
        f"export, {export['peak_rss_mib_after']:.1f} MiB after; current RSS "
        f"{export['rss_mib_before']:.1f} MiB before, highest sampled during "
        f"{export['rss_mib_highest_sampled']:.1f} MiB (the load ran in a child process)",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.analytics",
        description="Time every analytics use case on Postgres over N synthetic events.",
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events of the app (1,000,000)"
    )
    parser.add_argument(
        "--other-tenants-events", type=int, default=5_000, help="for other apps (5,000)"
    )
    parser.add_argument("--runs", type=int, default=21, help="per endpoint, first discarded (21)")
    parser.add_argument(
        "--reader",
        choices=["rollups", "raw"],
        default="rollups",
        help="the service's reader (rollups), or the raw events' one it falls back on",
    )
    parser.add_argument("--chunk", type=int, default=100_000, help="rows per COPY (100,000)")
    parser.add_argument("--seed", type=int, default=20261204, help="of the synthetic data")
    parser.add_argument(
        "--max-seconds-per-endpoint",
        type=float,
        default=60,
        help="stop repeating a slow endpoint after (60)",
    )
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get("TKCLOUD_BENCH_POSTGRES_DSN", DEFAULT_ADMIN_DSN),
        help="admin DSN; the bench creates and drops a database next to it",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the database afterwards (to EXPLAIN a query on it); drop it yourself",
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.other_tenants_events < 0 or args.chunk < 1:
        parser.error("--events and --chunk must be positive, --other-tenants-events >= 0")
    if args.runs < 2:
        parser.error("--runs: at least 2 (the first is discarded)")
    return args


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # run the same clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    postgres = Postgres(args.postgres_dsn, prefix="bench_a")
    try:
        from tkcloud_adapters.sql.migrate import upgrade

        log(f"creating and migrating database {postgres.name}")
        postgres.create()
        upgrade(postgres.url)
        now = datetime.now(UTC).replace(microsecond=0)
        log(f"loading {args.events:,} + {args.other_tenants_events:,} events (child process)")
        loaded = run_load(postgres.url, args, now)
        settings = postgres_settings(postgres.url)
        loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
        log(f"timing the analytics use cases ({args.runs} runs each)")
        timings = asyncio.run(time_endpoints(postgres.url, args, now))
        log(f"exporting min({args.events:,}, {EXPORT_MAX_EVENTS:,}) events as Parquet")
        export = asyncio.run(time_export(postgres.url, args.events, now))
        figures = {
            "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["uv run python -m bench.analytics", *sys.argv[1:]]),
            "code": code_version(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(terse=True),
            },
            "postgres": settings,
            "loadavg": loadavg,
            "runs": args.runs,
            "reader": args.reader,
            "other_apps": sum(len(apps) for _, _, apps in OTHER_TENANTS),
            "load": loaded,
            "timings": [t.summary() for t in timings],
            "export": export,
        }
        print(json.dumps(figures, indent=2) if args.json else render(figures), flush=True)
        return 0
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except (RuntimeError, OSError) as exc:
        log(f"failed: {exc}")
        return 2
    finally:
        if args.keep:
            log(f"kept database {postgres.name}: {postgres.url}")
        else:
            with contextlib.suppress(Exception):
                postgres.drop()
                log(f"dropped database {postgres.name}")


if __name__ == "__main__":
    raise SystemExit(main())
