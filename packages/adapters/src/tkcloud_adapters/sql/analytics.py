"""`AnalyticsReader` on SQL: one app's events, aggregated by the database where it can.

Counts, distinct counts, top-N and exit codes are plain SQL on both backends. Two things are not:
buckets in a time zone (and weeks) and continuous percentiles. Postgres does them in SQL
(date_trunc(field, timestamptz, zone) and percentile_cont). SQLite has neither, so there the
reader fetches only the columns it needs for the window and finishes in Python, with the same
bucket functions as the domain. Embedded mode (SQLite) targets small data sets: those paths
scale with the number of events in the window.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Executable, and_, case, false, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.schema import dnt_daily, events
from tkcloud_domain.analytics import (
    ActiveUsers,
    Cohort,
    CommandStats,
    Count,
    Dimension,
    FailingCommand,
    Filters,
    Point,
    Totals,
    Window,
    bucket_start,
    week_start,
)

TOP_EXIT_CODES = 3
_PERCENTILES = (0.5, 0.95)


class SqlAnalyticsReader:
    """Implements `AnalyticsReader`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def _all(self, query: Executable) -> Sequence[Any]:
        with database_errors():
            async with self._engine.connect() as conn:
                rows: Sequence[Any] = (await conn.execute(query)).all()
                return rows

    async def totals(self, app_id: str, window: Window, filters: Filters) -> Totals:
        query = select(
            func.count(),
            func.count(events.c.user_id.distinct()),
            func.count(events.c.session_id.distinct()),
        ).where(*_scope(app_id, window, filters))
        (row,) = await self._all(query)
        return Totals(events=row[0], users=row[1], sessions=row[2])

    async def series(
        self, app_id: str, window: Window, filters: Filters, tz: ZoneInfo
    ) -> list[Point]:
        where = _scope(app_id, window, filters)
        if not self._postgres:
            rows = await self._all(select(events.c.timestamp, events.c.user_id).where(*where))
            counts: dict[datetime, int] = defaultdict(int)
            users: dict[datetime, set[str]] = defaultdict(set)
            for moment, user_id in rows:
                key = bucket_start(moment, tz, window.hourly)
                counts[key] += 1
                users[key].add(user_id)
            return [Point(key, counts[key], len(users[key])) for key in sorted(counts)]
        # Grouped over a subquery: a GROUP BY repeating date_trunc would carry bind parameters
        # of its own, which Postgres cannot prove equal to the SELECT's.
        rows_in = (
            select(
                _pg_trunc("hour" if window.hourly else "day", tz).label("bucket"), events.c.user_id
            )
            .where(*where)
            .subquery()
        )
        query = (
            select(rows_in.c.bucket, func.count(), func.count(rows_in.c.user_id.distinct()))
            .group_by(rows_in.c.bucket)
            .order_by(rows_in.c.bucket)
        )
        return [Point(row[0], row[1], row[2]) for row in await self._all(query)]

    async def active_users(self, app_id: str, window: Window, filters: Filters) -> ActiveUsers:
        end = window.end
        month = Window(end - timedelta(days=30), end)

        def within(days: int) -> ColumnElement[int]:
            since = events.c.timestamp >= end - timedelta(days=days)
            return func.count(case((since, events.c.user_id)).distinct())

        query = select(within(1), within(7), within(30)).where(*_scope(app_id, month, filters))
        (row,) = await self._all(query)
        return ActiveUsers(dau=row[0], wau=row[1], mau=row[2])

    async def top_commands(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[CommandStats]:
        where = [*_scope(app_id, window, filters), events.c.command.is_not(None)]
        count = func.count()
        columns: list[Any] = [
            events.c.command,
            count,
            func.count(events.c.success),
            func.count(case((events.c.success.is_(True), 1))),
        ]
        if self._postgres:
            columns += [
                func.percentile_cont(p).within_group(events.c.duration_ms) for p in _PERCENTILES
            ]
        query = (
            select(*columns)
            .where(*where)
            .group_by(events.c.command)
            .order_by(count.desc(), events.c.command)
            .limit(limit)
        )
        rows = await self._all(query)
        names = [row[0] for row in rows]
        if self._postgres:
            percentiles = {row[0]: (row[4], row[5]) for row in rows}
        else:
            percentiles = await self._percentiles(where, names)
        codes = await self._exit_codes(where, names)
        return [
            CommandStats(
                command=command,
                count=total,
                success_rate=successes / reported if reported else None,
                p50_ms=percentiles[command][0],
                p95_ms=percentiles[command][1],
                exit_codes=codes.get(command, []),
            )
            for command, total, reported, successes, *_ in rows
        ]

    async def _percentiles(
        self, where: list[ColumnElement[bool]], commands: list[str]
    ) -> dict[str, tuple[float | None, float | None]]:
        durations: dict[str, list[int]] = {name: [] for name in commands}
        if commands:
            query = select(events.c.command, events.c.duration_ms).where(
                *where, events.c.command.in_(commands), events.c.duration_ms.is_not(None)
            )
            for command, duration in await self._all(query):
                durations[command].append(duration)
        result: dict[str, tuple[float | None, float | None]] = {}
        for command, values in durations.items():
            values.sort()
            result[command] = (_percentile(values, 0.5), _percentile(values, 0.95))
        return result

    async def _exit_codes(
        self, where: list[ColumnElement[bool]], commands: Iterable[str | None]
    ) -> dict[str | None, list[Count]]:
        """The most common exit codes of each command (None: events without a command)."""
        names = list(commands)
        if not names:
            return {}
        named = [name for name in names if name is not None]
        which = or_(
            events.c.command.in_(named), events.c.command.is_(None) if None in names else false()
        )
        count = func.count()
        query = (
            select(events.c.command, events.c.exit_code, count)
            .where(*where, which, events.c.exit_code.is_not(None))
            .group_by(events.c.command, events.c.exit_code)
            .order_by(events.c.command, count.desc(), events.c.exit_code)
        )
        codes: dict[str | None, list[Count]] = defaultdict(list)
        for command, exit_code, total in await self._all(query):
            if len(codes[command]) < TOP_EXIT_CODES:
                codes[command].append(Count(str(exit_code), total))
        return codes

    async def top_features(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[Count]:
        return await self._top(
            events.c.feature,
            [*_scope(app_id, window, filters), events.c.feature.is_not(None)],
            limit,
        )

    async def breakdown(
        self, app_id: str, window: Window, filters: Filters, dimension: Dimension, limit: int
    ) -> list[Count]:
        column = events.c[dimension.value]
        counts = await self._top(column, _scope(app_id, window, filters), limit)
        if dimension is Dimension.CI:
            return [Count(_ci_key(c.key), c.count) for c in counts]
        return counts

    async def _top(
        self, column: ColumnElement[Any], where: list[ColumnElement[bool]], limit: int
    ) -> list[Count]:
        count = func.count()
        # Ordering by the key breaks ties the same way on both backends (NULL sorts apart).
        query = (
            select(column, count)
            .where(*where)
            .group_by(column)
            .order_by(count.desc(), column.is_(None), column)
            .limit(limit)
        )
        return [Count(row[0], row[1]) for row in await self._all(query)]

    async def retention(
        self, app_id: str, window: Window, filters: Filters, tz: ZoneInfo
    ) -> list[Cohort]:
        # First seen over all time: a user active before the window is not new in it.
        first = func.min(events.c.timestamp)
        newcomers = (
            select(events.c.user_id, first.label("first_seen"))
            .where(events.c.app_id == app_id, *_filters(filters))
            .group_by(events.c.user_id)
            .having(and_(first >= window.start, first < window.end))
            .subquery()
        )
        in_window = [*_scope(app_id, window, filters)]
        active: dict[datetime, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
        if self._postgres:
            weekly = (
                select(
                    _pg_trunc("week", tz, newcomers.c.first_seen).label("cohort"),
                    _pg_trunc("week", tz).label("week"),
                    events.c.user_id,
                )
                .select_from(events.join(newcomers, events.c.user_id == newcomers.c.user_id))
                .where(*in_window)
                .subquery()
            )
            query = select(
                weekly.c.cohort, weekly.c.week, func.count(weekly.c.user_id.distinct())
            ).group_by(weekly.c.cohort, weekly.c.week)
            for cohort_week, active_week, users in await self._all(query):
                active[cohort_week][active_week] = users
        else:
            query = (
                select(events.c.user_id, newcomers.c.first_seen, events.c.timestamp)
                .select_from(events.join(newcomers, events.c.user_id == newcomers.c.user_id))
                .where(*in_window)
            )
            seen: dict[tuple[datetime, datetime], set[str]] = defaultdict(set)
            for user_id, first_seen, moment in await self._all(query):
                seen[(week_start(first_seen, tz), week_start(moment, tz))].add(user_id)
            for (cohort_week, active_week), user_ids in seen.items():
                active[cohort_week][active_week] = len(user_ids)
        last_week = week_start(window.end - timedelta(microseconds=1), tz)
        cohorts = []
        for cohort_week in sorted(active):
            weeks = week_starts(cohort_week, last_week, tz)
            cohorts.append(
                Cohort(
                    week=cohort_week,
                    # Week 0 holds every newcomer: their first event is in it.
                    users=active[cohort_week][weeks[0]],
                    retained=[active[cohort_week].get(w, 0) for w in weeks],
                )
            )
        return cohorts

    async def failing_commands(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[FailingCommand]:
        where = [*_scope(app_id, window, filters), events.c.success.is_(False)]
        failures = await self._top(events.c.command, where, limit)
        codes = await self._exit_codes(where, [f.key for f in failures])
        return [FailingCommand(f.key, f.count, codes.get(f.key, [])) for f in failures]

    async def dnt_requests(self, app_id: str, window: Window) -> int:
        last_day = (window.end - timedelta(microseconds=1)).date()
        query = select(func.coalesce(func.sum(dnt_daily.c.requests), 0)).where(
            dnt_daily.c.app_id == app_id,
            dnt_daily.c.day >= window.start.date(),
            dnt_daily.c.day <= last_day,
        )
        (row,) = await self._all(query)
        return int(row[0])  # Postgres sums bigints as numeric


def _filters(filters: Filters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.service_version is not None:
        where.append(events.c.service_version == filters.service_version)
    if filters.os is not None:
        where.append(events.c.os == filters.os)
    if filters.event_type is not None:
        where.append(events.c.event_type == filters.event_type)
    return where


def _scope(app_id: str, window: Window, filters: Filters) -> list[ColumnElement[bool]]:
    return [
        events.c.app_id == app_id,
        events.c.timestamp >= window.start,
        events.c.timestamp < window.end,
        *_filters(filters),
    ]


def _pg_trunc(field: str, tz: ZoneInfo, column: Any = None) -> ColumnElement[datetime]:
    """date_trunc(field, timestamptz, zone): the instant the local hour/day/week (Monday)
    starts, with DST handled by Postgres. Returned as timestamptz, so it is an instant again."""
    target = events.c.timestamp if column is None else column
    return func.date_trunc(literal(field), target, literal(tz.key), type_=events.c.timestamp.type)


def _percentile(ordered: list[int], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks, as Postgres' percentile_cont."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def week_starts(first: datetime, last: datetime, tz: ZoneInfo) -> list[datetime]:
    """Week starts from `first` to `last` inclusive; stepped in local days (DST weeks differ)."""
    weeks = [first]
    while weeks[-1] < last:
        weeks.append(week_start(weeks[-1] + timedelta(days=7, hours=12), tz))
    return weeks


def _ci_key(value: Any) -> str | None:
    # SQLite hands booleans back as 0/1 in a GROUP BY over the raw column.
    if value is None:
        return None
    return "true" if value else "false"
