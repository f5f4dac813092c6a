"""Analytics of one app: readable by its org's members and observers, API keys, and (through
/api/v1/public/{slug}/…) a share link of that app."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter, SkipValidation

from tkcloud_application.analytics.queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    AnalyticsQuery,
    AppAnalytics,
)
from tkcloud_domain.analytics import (
    ActiveUsers,
    Change,
    Cohort,
    CommandStats,
    Count,
    FailingCommand,
    Filters,
    Point,
)
from tkcloud_domain.identity import Principal

Caller = NamedDependency[SkipValidation[Principal]]
Analytics = NamedDependency[SkipValidation[AppAnalytics]]
Query = NamedDependency[SkipValidation[AnalyticsQuery]]
Target = NamedDependency[SkipValidation[str]]  # the app: from the path, or a share link


def provide_query(
    period: Annotated[str | None, QueryParameter(name="period")] = None,
    start: Annotated[datetime | None, QueryParameter(name="from")] = None,
    end: Annotated[datetime | None, QueryParameter(name="to")] = None,
    tz: Annotated[str | None, QueryParameter(name="tz")] = None,
    service_version: Annotated[str | None, QueryParameter(name="service_version")] = None,
    os: Annotated[str | None, QueryParameter(name="os")] = None,
    event_type: Annotated[str | None, QueryParameter(name="event_type")] = None,
    limit: Annotated[int, QueryParameter(name="limit", ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> AnalyticsQuery:
    """`period=24h|7d|30d|90d` or `from`/`to` (RFC 3339), `tz` (IANA), filters, `limit`."""
    return AnalyticsQuery(period, start, end, tz, Filters(service_version, os, event_type), limit)


def target_from_path(app_id: FromPath[str]) -> str:
    return app_id


class ChangeOut(msgspec.Struct):
    current: int
    previous: int
    change: float | None  # (current - previous) / previous; null when previous is 0

    @classmethod
    def of(cls, c: Change) -> ChangeOut:
        return cls(c.current, c.previous, c.fraction)


class TotalsOut(msgspec.Struct):
    events: ChangeOut
    users: ChangeOut
    sessions: ChangeOut


class ActiveUsersOut(msgspec.Struct):
    dau: int
    wau: int
    mau: int
    stickiness: float | None  # DAU / MAU

    @classmethod
    def of(cls, a: ActiveUsers) -> ActiveUsersOut:
        return cls(a.dau, a.wau, a.mau, a.stickiness)


class DntOut(msgspec.Struct):
    dnt_requests: int


class AnalyticsController(Controller):
    path = "/api/v1/apps/{app_id:str}/analytics"
    tags = ["analytics"]
    dependencies = {
        "analytics_query": Provide(provide_query, sync_to_thread=False),
        "target_app": Provide(target_from_path, sync_to_thread=False),
    }

    @get("/totals", summary="Events, unique users and sessions, with change vs the previous period")
    async def totals(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> TotalsOut:
        t = await analytics.totals(principal, target_app, analytics_query)
        return TotalsOut(ChangeOut.of(t.events), ChangeOut.of(t.users), ChangeOut.of(t.sessions))

    @get("/series", summary="Events and unique users per hour (<= 2 days) or day, in `tz`")
    async def series(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> list[Point]:
        return await analytics.series(principal, target_app, analytics_query)

    @get("/active-users", summary="DAU, WAU, MAU at the end of the window, and stickiness")
    async def active_users(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> ActiveUsersOut:
        return ActiveUsersOut.of(
            await analytics.active_users(principal, target_app, analytics_query)
        )

    @get("/commands", summary="Top commands: count, success rate, p50/p95 duration, exit codes")
    async def commands(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> list[CommandStats]:
        return await analytics.top_commands(principal, target_app, analytics_query)

    @get("/features", summary="Top features")
    async def features(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> list[Count]:
        return await analytics.top_features(principal, target_app, analytics_query)

    @get(
        "/breakdown/{dimension:str}",
        summary="Counts by os, arch, ci, shell, service_version or sdk_version",
    )
    async def breakdown(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target,
        dimension: FromPath[str],
    ) -> list[Count]:  # fmt: skip
        return await analytics.breakdown(principal, target_app, dimension, analytics_query)

    @get("/retention", summary="Weekly retention cohorts by first-seen week")
    async def retention(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> list[Cohort]:
        return await analytics.retention(principal, target_app, analytics_query)

    @get("/failing-commands", summary="Commands with success=false and their commonest exit codes")
    async def failing_commands(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> list[FailingCommand]:
        return await analytics.failing_commands(principal, target_app, analytics_query)

    @get("/dnt", summary="Requests answered 204 for DNT: 1 in the window")
    async def dnt(
        self, principal: Caller, analytics: Analytics, analytics_query: Query, target_app: Target
    ) -> DntOut:
        return DntOut(await analytics.dnt_requests(principal, target_app, analytics_query))
