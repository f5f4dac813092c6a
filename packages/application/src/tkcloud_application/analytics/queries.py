"""The analytics use cases: one method per dashboard endpoint, read-only.

Each method checks access before it looks at its arguments, so another tenant's app answers
NotFound whatever the query, exactly as a missing one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.analytics import AnalyticsReader
from tkcloud_application.ports.system import Clock
from tkcloud_domain.analytics import (
    ActiveUsers,
    Change,
    Cohort,
    CommandStats,
    Count,
    Dimension,
    FailingCommand,
    Filters,
    Point,
    TotalsReport,
    Window,
    buckets,
    timezone,
    window,
)
from tkcloud_domain.errors import ValidationFailed
from tkcloud_domain.identity import Action, Principal

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class AnalyticsQuery:
    """The caller's question as given: validated by the use case, after access is checked."""

    period: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    tz: str | None = None
    filters: Filters = field(default_factory=Filters)
    limit: int = DEFAULT_LIMIT


class AppAnalytics:
    def __init__(self, access: Access, reader: AnalyticsReader, clock: Clock) -> None:
        self._access = access
        self._reader = reader
        self._clock = clock

    async def _window(self, principal: Principal, app_id: str, query: AnalyticsQuery) -> Window:
        await self._access.require_app(principal, app_id, Action.ANALYTICS_READ)
        timezone(query.tz)  # a bad zone is refused even where buckets do not need one
        return window(self._clock.now(), query.period, query.start, query.end)

    async def totals(
        self, principal: Principal, app_id: str, query: AnalyticsQuery
    ) -> TotalsReport:
        span = await self._window(principal, app_id, query)
        now = await self._reader.totals(app_id, span, query.filters)
        before = await self._reader.totals(app_id, span.previous, query.filters)
        return TotalsReport(
            events=Change(now.events, before.events),
            users=Change(now.users, before.users),
            sessions=Change(now.sessions, before.sessions),
        )

    async def series(self, principal: Principal, app_id: str, query: AnalyticsQuery) -> list[Point]:
        """Every bucket of the window, empty ones as 0, each labelled in the caller's zone."""
        span = await self._window(principal, app_id, query)
        tz = timezone(query.tz)
        found = {p.bucket: p for p in await self._reader.series(app_id, span, query.filters, tz)}
        return [
            Point(start.astimezone(tz), found[start].events, found[start].users)
            if start in found
            else Point(start.astimezone(tz), 0, 0)
            for start in buckets(span, tz)
        ]

    async def active_users(
        self, principal: Principal, app_id: str, query: AnalyticsQuery
    ) -> ActiveUsers:
        span = await self._window(principal, app_id, query)
        return await self._reader.active_users(app_id, span, query.filters)

    async def top_commands(
        self, principal: Principal, app_id: str, query: AnalyticsQuery
    ) -> list[CommandStats]:
        span = await self._window(principal, app_id, query)
        return await self._reader.top_commands(app_id, span, query.filters, _limit(query))

    async def top_features(
        self, principal: Principal, app_id: str, query: AnalyticsQuery
    ) -> list[Count]:
        span = await self._window(principal, app_id, query)
        return await self._reader.top_features(app_id, span, query.filters, _limit(query))

    async def breakdown(
        self, principal: Principal, app_id: str, dimension: str, query: AnalyticsQuery
    ) -> list[Count]:
        span = await self._window(principal, app_id, query)
        try:
            by = Dimension(dimension)
        except ValueError:
            names = ", ".join(d.value for d in Dimension)
            raise ValidationFailed(f"dimension: expected one of {names}") from None
        return await self._reader.breakdown(app_id, span, query.filters, by, _limit(query))

    async def retention(
        self, principal: Principal, app_id: str, query: AnalyticsQuery
    ) -> list[Cohort]:
        span = await self._window(principal, app_id, query)
        tz = timezone(query.tz)
        cohorts = await self._reader.retention(app_id, span, query.filters, tz)
        return [Cohort(c.week.astimezone(tz), c.users, c.retained) for c in cohorts]

    async def failing_commands(
        self, principal: Principal, app_id: str, query: AnalyticsQuery
    ) -> list[FailingCommand]:
        span = await self._window(principal, app_id, query)
        return await self._reader.failing_commands(app_id, span, query.filters, _limit(query))

    async def dnt_requests(self, principal: Principal, app_id: str, query: AnalyticsQuery) -> int:
        """DNT requests carry no event, so the filters do not apply to them."""
        span = await self._window(principal, app_id, query)
        return await self._reader.dnt_requests(app_id, span)


def _limit(query: AnalyticsQuery) -> int:
    if not 1 <= query.limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit: expected 1 to {MAX_LIMIT}")
    return query.limit
