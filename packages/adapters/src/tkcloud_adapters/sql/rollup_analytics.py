"""`AnalyticsReader` from the rollups (tkcloud_domain.rollups): answers that read a few thousand
rollup rows however many events the app has.

The rollups answer a question whose window starts and ends on whole UTC hours, whose buckets
(local days, hours, weeks of the caller's time zone) do too, and which has at most one filter.
Every period window qualifies (`window()` ends periods on the hour); a `from`/`to` off the
hour, a zone that is not a whole number of hours from UTC (Asia/Kolkata), or two filters at once
are answered from the raw events by `SqlAnalyticsReader`, more slowly but exactly.

Two answers differ from the raw events' by design: duration percentiles are within 2.5 % (log
histograms) of those of the whole UTC days the window touches, and "sessions" counts the
sessions that started in the window (a session that began before it is not counted again).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Date,
    Executable,
    FromClause,
    Integer,
    Table,
    and_,
    case,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from tkcloud_adapters.sql.analytics import TOP_EXIT_CODES, SqlAnalyticsReader, week_starts
from tkcloud_adapters.sql.errors import database_errors
from tkcloud_adapters.sql.rollups import SqlRollups
from tkcloud_adapters.sql.schema import (
    rollup_counts,
    rollup_durations,
    rollup_first_seen,
    rollup_user_days,
)
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
    buckets,
    week_start,
)
from tkcloud_domain.rollups import (
    day_masks,
    day_window,
    histogram_spans,
    is_whole_hour,
    key_of,
    percentile,
    slice_of,
    split,
    value_of,
)

# Batches an analytics read folds before it answers, and how long it waits for a fold running
# elsewhere; past either it answers from the rollups as they are (the background fold goes on).
READ_FOLD_BATCHES = 50
READ_FOLD_WAIT_SECONDS = 1.0

Range = tuple[int, datetime, datetime]  # (index, start, end), whole hours

_CUSTOM_PLANS = text("SET LOCAL plan_cache_mode = force_custom_plan")


class RollupAnalyticsReader:
    """Implements `AnalyticsReader`."""

    def __init__(self, engine: AsyncEngine, rollups: SqlRollups, raw: SqlAnalyticsReader) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._rollups = rollups
        self._raw = raw

    async def _slice(self, app_id: str, window: Window, filters: Filters) -> str | None:
        """The slice that answers, after folding the app's queued batches; None: ask raw."""
        given = [
            (name, value)
            for name, value in (
                ("event_type", filters.event_type),
                ("service_version", filters.service_version),
                ("os", filters.os),
            )
            if value is not None
        ]
        if len(given) > 1 or not (is_whole_hour(window.start) and is_whole_hour(window.end)):
            return None
        await self._rollups.catch_up(
            app_id, max_batches=READ_FOLD_BATCHES, wait=READ_FOLD_WAIT_SECONDS
        )
        return slice_of(*given[0]) if given else ""

    async def _all(self, query: Executable) -> Sequence[Any]:
        with database_errors():
            async with self._engine.connect() as conn:
                if self._postgres:
                    # asyncpg prepares each statement once per connection, and from its sixth
                    # run Postgres may keep a generic plan, blind to the window and to the
                    # arrays' lengths: at 1 M events that took retention from 38 to 58 ms.
                    await conn.execute(_CUSTOM_PLANS)
                rows: Sequence[Any] = (await conn.execute(query)).all()
                return rows

    # --- the answers ---------------------------------------------------------------------------

    async def totals(self, app_id: str, window: Window, filters: Filters) -> Totals:
        name = await self._slice(app_id, window, filters)
        if name is None:
            return await self._raw.totals(app_id, window, filters)
        sums = await self._sums(app_id, name, ("total", "sessions"), window)
        users = await self._users(app_id, name, [(0, window.start, window.end)])
        return Totals(
            events=sums.get(("total", ""), _ZERO)[0],
            users=users.get(0, 0),
            sessions=sums.get(("sessions", ""), _ZERO)[0],
        )

    async def series(
        self, app_id: str, window: Window, filters: Filters, tz: ZoneInfo
    ) -> list[Point]:
        starts = buckets(window, tz)
        name = await self._slice(app_id, window, filters)
        if name is None or not all(is_whole_hour(s) for s in starts):
            return await self._raw.series(app_id, window, filters, tz)
        hourly = select(rollup_counts.c.at, rollup_counts.c.events).where(
            *_counts_of(app_id, name, "total"),
            rollup_counts.c.grain == "h",
            rollup_counts.c.at >= window.start,
            rollup_counts.c.at < window.end,
        )
        counts: dict[datetime, int] = defaultdict(int)
        for hour, events in await self._all(hourly):
            counts[bucket_start(hour, tz, window.hourly)] += int(events)
        ranges = [r for r in _clipped(starts, window) if counts.get(starts[r[0]])]
        users = await self._users(app_id, name, ranges)
        return [Point(starts[i], counts[starts[i]], users.get(i, 0)) for i, _, _ in ranges]

    async def active_users(self, app_id: str, window: Window, filters: Filters) -> ActiveUsers:
        name = await self._slice(app_id, window, filters)
        if name is None:
            return await self._raw.active_users(app_id, window, filters)
        end = window.end
        spans = [(i, end - timedelta(days=days), end) for i, days in enumerate((1, 7, 30))]
        users = await self._users(app_id, name, spans)
        return ActiveUsers(dau=users.get(0, 0), wau=users.get(1, 0), mau=users.get(2, 0))

    async def top_commands(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[CommandStats]:
        name = await self._slice(app_id, window, filters)
        if name is None:
            return await self._raw.top_commands(app_id, window, filters, limit)
        sums = await self._sums(app_id, name, ("command",), window)
        named = [(str(value_of(k)), v) for (_, k), v in sums.items() if k != key_of(None)]
        top = sorted(named, key=lambda item: (-item[1][0], item[0]))[:limit]
        keys = [key_of(command) for command, _ in top]
        histograms = await self._histograms(app_id, name, window, keys)
        codes = await self._exit_codes(app_id, name, "exit", window, keys)
        stats = []
        for command, (events, reported, successes, _) in top:
            histogram = histograms.get(key_of(command), [])
            stats.append(
                CommandStats(
                    command=command,
                    count=events,
                    success_rate=successes / reported if reported else None,
                    p50_ms=percentile(histogram, 0.5),
                    p95_ms=percentile(histogram, 0.95),
                    exit_codes=codes.get(key_of(command), []),
                )
            )
        return stats

    async def top_features(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[Count]:
        name = await self._slice(app_id, window, filters)
        if name is None:
            return await self._raw.top_features(app_id, window, filters, limit)
        sums = await self._sums(app_id, name, ("feature",), window)
        return _top({value_of(k): v[0] for (_, k), v in sums.items()}, limit)

    async def breakdown(
        self, app_id: str, window: Window, filters: Filters, dimension: Dimension, limit: int
    ) -> list[Count]:
        name = await self._slice(app_id, window, filters)
        if name is None:
            return await self._raw.breakdown(app_id, window, filters, dimension, limit)
        sums = await self._sums(app_id, name, (dimension.value,), window)
        counts: dict[str | None, int] = {}
        for (_, key), values in sums.items():
            value = value_of(key)
            if isinstance(value, bool):
                value = "true" if value else "false"
            counts[value] = values[0]
        return _top(counts, limit)

    async def retention(
        self, app_id: str, window: Window, filters: Filters, tz: ZoneInfo
    ) -> list[Cohort]:
        last_week = week_start(window.end - timedelta(microseconds=1), tz)
        weeks = week_starts(week_start(window.start, tz), last_week, tz)
        name = await self._slice(app_id, window, filters)
        if name is None or not all(is_whole_hour(w) for w in weeks):
            return await self._raw.retention(app_id, window, filters, tz)
        spans = _clipped(weeks, window)
        first = rollup_first_seen
        cohort = case(
            *((and_(first.c.first_seen >= a, first.c.first_seen < b), i) for i, a, b in spans)
        )
        newcomers = (
            select(first.c.key, cohort.label("cohort"))
            .where(
                first.c.app_id == app_id,
                first.c.kind == "user",
                first.c.slice == name,
                first.c.first_seen >= window.start,
                first.c.first_seen < window.end,
            )
            .subquery()
        )
        # Who was active in which week first (one row per user and week), then their cohorts:
        # joined the other way round, the DISTINCT would run over a row per user and day.
        weekly = self._active(app_id, name, spans)
        query = (
            select(newcomers.c.cohort, weekly.c.idx, func.count())
            .select_from(weekly.join(newcomers, newcomers.c.key == weekly.c.user_key))
            .group_by(newcomers.c.cohort, weekly.c.idx)
        )
        active: dict[int, dict[int, int]] = defaultdict(dict)
        for cohort_index, week_index, users in await self._all(query):
            active[int(cohort_index)][int(week_index)] = users
        return [
            Cohort(
                week=weeks[index],
                users=active[index].get(index, 0),  # week 0 holds every newcomer
                retained=[active[index].get(i, 0) for i in range(index, len(weeks))],
            )
            for index in sorted(active)
        ]

    async def failing_commands(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[FailingCommand]:
        name = await self._slice(app_id, window, filters)
        if name is None:
            return await self._raw.failing_commands(app_id, window, filters, limit)
        sums = await self._sums(app_id, name, ("command",), window)
        failures = {k: v[3] for (_, k), v in sums.items() if v[3]}
        top = sorted(failures, key=lambda k: (-failures[k], k == key_of(None), value_of(k) or ""))
        top = top[:limit]
        codes = await self._exit_codes(app_id, name, "failed_exit", window, top)
        return [
            FailingCommand(_str_or_none(value_of(k)), failures[k], codes.get(k, [])) for k in top
        ]

    async def dnt_requests(self, app_id: str, window: Window) -> int:
        return await self._raw.dnt_requests(app_id, window)  # dnt_daily is a rollup already

    # --- reading the rollup tables -------------------------------------------------------------

    async def _sums(
        self, app_id: str, name: str, kinds: Sequence[str], window: Window
    ) -> dict[tuple[str, str], tuple[int, int, int, int]]:
        """(kind, key) -> summed events, reported, successes, failures over the window."""
        t = rollup_counts
        query = (
            select(
                t.c.kind,
                t.c.key,
                func.sum(t.c.events),
                func.sum(t.c.reported),
                func.sum(t.c.successes),
                func.sum(t.c.failures),
            )
            .where(
                t.c.app_id == app_id,
                t.c.slice == name,
                t.c.kind.in_(kinds),
                _during(t, window),
            )
            .group_by(t.c.kind, t.c.key)
        )
        return {
            (kind, key): (int(a), int(b), int(c), int(d))  # Postgres sums bigints as numeric
            for kind, key, a, b, c, d in await self._all(query)
            if a or kind == "sessions"
        }

    async def _exit_codes(
        self, app_id: str, name: str, kind: str, window: Window, keys: Sequence[str]
    ) -> dict[str, list[Count]]:
        if not keys:
            return {}
        t = rollup_counts
        total = func.sum(t.c.events)
        query = (
            select(t.c.key, t.c.subkey, total)
            .where(
                t.c.app_id == app_id,
                t.c.slice == name,
                t.c.kind == kind,
                t.c.key.in_(keys),
                _during(t, window),
            )
            .group_by(t.c.key, t.c.subkey)
        )
        found: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for key, code, events in await self._all(query):
            found[key].append((int(events), int(code)))
        return {
            key: [Count(str(code), n) for n, code in sorted(pairs, key=lambda p: (-p[0], p[1]))][
                :TOP_EXIT_CODES
            ]
            for key, pairs in found.items()
        }

    async def _histograms(
        self, app_id: str, name: str, window: Window, keys: Sequence[str]
    ) -> dict[str, list[tuple[int, int]]]:
        if not keys:
            return {}
        t = rollup_durations
        # The whole UTC days the window touches (durations have no hour rows), a range of the
        # primary key per grain: a UNION ALL of them, as an OR of them is read as a scan of
        # every row of the slice.
        spans = union_all(
            *(
                select(t.c.command, t.c.bucket, t.c.events).where(
                    t.c.app_id == app_id,
                    t.c.slice == name,
                    t.c.grain == grain,
                    t.c.at >= first,
                    t.c.at < last,
                    t.c.command.in_(keys),
                )
                for grain, first, last in histogram_spans(window.start, window.end)
            )
        ).subquery()
        query = select(spans.c.command, spans.c.bucket, func.sum(spans.c.events)).group_by(
            spans.c.command, spans.c.bucket
        )
        found: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for command, bucket, events in await self._all(query):
            found[command].append((bucket, int(events)))
        return found

    async def _users(self, app_id: str, name: str, ranges: Sequence[Range]) -> dict[int, int]:
        """Distinct users active in each range (index -> users; ranges without any left out).

        A range of 24 hours ending on the hour (a local day, the last 24 hours) reads its
        day window counter (`RollupDelta.day_window_changes`); any other range counts the
        distinct users whose hour masks meet it."""
        users: dict[int, int] = {}
        windows: dict[tuple[datetime, str], int] = {}
        others = []
        for index, start, end in ranges:
            window = day_window(start, end)
            if window is None:
                others.append((index, start, end))
            else:
                windows[(window[0], str(window[1]))] = index
        if windows:
            t = rollup_counts
            query = select(t.c.at, t.c.key, t.c.events).where(
                *_counts_of(app_id, name, "day_users"),
                t.c.grain == "d",
                t.c.at >= min(day for day, _ in windows),
                t.c.at <= max(day for day, _ in windows),
                t.c.key.in_(sorted({hour for _, hour in windows})),
            )
            for day, hour, count in await self._all(query):
                found = windows.get((day, hour))
                if found is not None and count:
                    users[found] = int(count)
        if others:
            active = self._active(app_id, name, others)
            query = select(active.c.idx, func.count()).group_by(active.c.idx)
            users.update({int(index): n for index, n in await self._all(query)})
        return users

    def _active(self, app_id: str, name: str, ranges: Sequence[Range]) -> FromClause:
        """(idx, user_key) once for each user active in each range. DISTINCT in a subquery:
        Postgres can hash it, where count(DISTINCT) always sorts."""
        days = rollup_user_days
        relation, (first, last) = self._masks_relation(ranges)
        return (
            select(relation.c.idx, days.c.user_key)
            .select_from(days.join(relation, _meets(relation)))
            .where(
                days.c.app_id == app_id,
                days.c.slice == name,
                days.c.day >= first,
                days.c.day <= last,
            )
            .distinct()
            .subquery()
        )

    def _masks_relation(self, ranges: Sequence[Range]) -> tuple[FromClause, tuple[date, date]]:
        """A relation (idx, day, mask): the UTC days each range touches with the mask of its
        hours in them; and the first and last day of all."""
        rows = [(index, day, mask) for index, a, b in ranges for day, mask in day_masks(a, b)]
        bounds = (min(r[1] for r in rows), max(r[1] for r in rows))
        if self._postgres:
            unnested = (
                func.unnest(
                    literal([r[0] for r in rows], ARRAY(Integer)),
                    literal([r[1] for r in rows], ARRAY(Date)),
                    literal([r[2] for r in rows], ARRAY(Integer)),
                )
                .table_valued("idx", "day", "mask")
                .render_derived(name="masks")
            )
            return unnested, bounds
        # SQLite: a JSON array of [idx, "YYYY-MM-DD", mask] rows (dates compare as text there).
        encoded = json.dumps([[i, d.isoformat(), m] for i, d, m in rows])
        each = func.json_each(literal(encoded)).table_valued("value").alias("each_mask")
        relation = select(
            func.json_extract(each.c.value, "$[0]").label("idx"),
            func.json_extract(each.c.value, "$[1]").label("day"),
            func.json_extract(each.c.value, "$[2]").label("mask"),
        ).subquery("masks")
        return relation, bounds


_ZERO = (0, 0, 0, 0)


def _clipped(starts: Sequence[datetime], window: Window) -> list[Range]:
    """Each bucket (its start, up to the next one's) cut to the window, with its index."""
    ends = [*starts[1:], window.end]
    return [
        (index, max(start, window.start), min(end, window.end))
        for index, (start, end) in enumerate(zip(starts, ends, strict=True))
    ]


def _counts_of(app_id: str, name: str, kind: str) -> list[ColumnElement[bool]]:
    t = rollup_counts
    return [t.c.app_id == app_id, t.c.slice == name, t.c.kind == kind]


def _during(table: Table, window: Window) -> ColumnElement[bool]:
    """Day rows for the window's whole UTC days, hour rows for the rest."""
    hours, days = split(window.start, window.end)
    parts = [
        and_(table.c.grain == "h", table.c.at >= start, table.c.at < end) for start, end in hours
    ]
    if days is not None:
        first, last = (datetime.combine(d, time(), tzinfo=UTC) for d in days)
        parts.append(and_(table.c.grain == "d", table.c.at >= first, table.c.at < last))
    return or_(*parts)


def _meets(relation: FromClause) -> ColumnElement[bool]:
    days = rollup_user_days
    return and_(days.c.day == relation.c.day, days.c.hours.op("&")(relation.c.mask) != 0)


def _top(counts: dict[Any, int], limit: int) -> list[Count]:
    """Most first; ties by value, "not reported" (None) after the values, as the raw reader."""
    ordered = sorted(
        ((k, n) for k, n in counts.items() if n),
        key=lambda kn: (-kn[1], kn[0] is None, kn[0] or ""),
    )
    return [Count(_str_or_none(k), n) for k, n in ordered[:limit]]


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
