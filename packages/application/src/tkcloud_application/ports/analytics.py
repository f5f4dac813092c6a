"""What the analytics use cases read: answers about one app's stored events, already scoped.

Every method reads only `app_id`'s events whose `timestamp` (the time the event happened, not the
time it arrived) lies in the window, so late events count in the period they belong to. The
filters apply to every method; DNT requests are counted apart and have none.
"""

from __future__ import annotations

from typing import Protocol
from zoneinfo import ZoneInfo

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
)


class AnalyticsReader(Protocol):
    async def totals(self, app_id: str, window: Window, filters: Filters) -> Totals:
        """Events, distinct users and distinct (non-null) sessions."""
        ...

    async def series(
        self, app_id: str, window: Window, filters: Filters, tz: ZoneInfo
    ) -> list[Point]:
        """Events and distinct users per hour (window.hourly) or day of `tz`, ascending; only
        buckets with events, each `bucket` the UTC instant the bucket starts."""
        ...

    async def active_users(self, app_id: str, window: Window, filters: Filters) -> ActiveUsers:
        """Distinct users in the 1, 7 and 30 days before window.end (rolling, so no tz)."""
        ...

    async def top_commands(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[CommandStats]:
        """Most frequent non-null commands, most first (ties by name), with the success rate
        over events that reported success, p50/p95 of duration_ms (continuous percentiles) and
        the three most common exit codes."""
        ...

    async def top_features(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[Count]:
        """Most used non-null features, most first (ties by name)."""
        ...

    async def breakdown(
        self, app_id: str, window: Window, filters: Filters, dimension: Dimension, limit: int
    ) -> list[Count]:
        """Events per value of `dimension`, most first; None is "not reported". `ci` values are
        "true"/"false"."""
        ...

    async def retention(
        self, app_id: str, window: Window, filters: Filters, tz: ZoneInfo
    ) -> list[Cohort]:
        """Users first seen (ever, under the filters) in the window, by first-seen week of `tz`
        (weeks start Monday), each with the users active in week 0, 1, ... up to the week that
        holds the window's end. Cohort.week is the UTC instant the week starts."""
        ...

    async def failing_commands(
        self, app_id: str, window: Window, filters: Filters, limit: int
    ) -> list[FailingCommand]:
        """Commands of events with success = false, most failures first, with their three most
        common exit codes."""
        ...

    async def dnt_requests(self, app_id: str, window: Window) -> int:
        """DNT requests on the UTC days that overlap the window (they are counted per day)."""
        ...
