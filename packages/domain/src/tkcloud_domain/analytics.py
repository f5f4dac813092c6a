"""What the dashboard asks of an app's events: the window, the filters, the answers' shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tkcloud_domain.errors import ValidationFailed
from tkcloud_domain.rollups import HOUR, hour_of

PERIODS = {
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
MAX_RANGE = timedelta(days=731)


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in UTC, plus the equally long window just before it (for "change")."""

    start: datetime
    end: datetime

    @property
    def previous(self) -> Window:
        return Window(self.start - (self.end - self.start), self.start)

    @property
    def hourly(self) -> bool:
        """Buckets of an hour for windows up to two days, of a day beyond."""
        return self.end - self.start <= timedelta(days=2)


def window(
    now: datetime, period: str | None, start: datetime | None, end: datetime | None
) -> Window:
    if start is not None or end is not None:
        if start is None or end is None:
            raise ValidationFailed("from and to: give both, or a period")
        if start.tzinfo is None or end.tzinfo is None:
            raise ValidationFailed("from and to: give a time zone offset (RFC 3339)")
        if not start < end:
            raise ValidationFailed("from: must be before to")
        if end - start > MAX_RANGE:
            raise ValidationFailed("from/to: at most two years apart")
        return Window(start, end)
    length = PERIODS.get(period or "7d")
    if length is None:
        raise ValidationFailed(f"period: expected one of {', '.join(PERIODS)}")
    # A period ends with the hour in progress: its buckets are whole hours and days, and the
    # rollups (kept per hour) answer it exactly.
    end = hour_of(now)
    if end < now:
        end += HOUR
    return Window(end - length, end)


def timezone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"tz: unknown IANA time zone {name!r}") from None


@dataclass(frozen=True, slots=True)
class Filters:
    service_version: str | None = None
    os: str | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    events: int
    users: int
    sessions: int


@dataclass(frozen=True, slots=True)
class Point:
    bucket: datetime  # start of the hour or day, in the caller's time zone
    events: int
    users: int


@dataclass(frozen=True, slots=True)
class Count:
    key: str | None
    count: int


@dataclass(frozen=True, slots=True)
class CommandStats:
    command: str
    count: int
    success_rate: float | None  # over events that reported success
    p50_ms: float | None
    p95_ms: float | None
    exit_codes: list[Count] = field(default_factory=list)  # most common first


@dataclass(frozen=True, slots=True)
class Cohort:
    week: datetime  # Monday 00:00 of the first-seen week, in the caller's time zone
    users: int
    retained: list[int]  # users active in week 0, 1, 2, ... after first seen


class Dimension(StrEnum):
    """The columns a breakdown may group by (the only ones: the name becomes a column)."""

    OS = "os"
    ARCH = "arch"
    CI = "ci"
    SHELL = "shell"
    SERVICE_VERSION = "service_version"
    SDK_VERSION = "sdk_version"


@dataclass(frozen=True, slots=True)
class Change:
    current: int
    previous: int

    @property
    def fraction(self) -> float | None:
        """(current - previous) / previous; None when there is nothing to compare with."""
        if self.previous == 0:
            return None
        return (self.current - self.previous) / self.previous


@dataclass(frozen=True, slots=True)
class TotalsReport:
    events: Change
    users: Change
    sessions: Change


@dataclass(frozen=True, slots=True)
class ActiveUsers:
    """Distinct users over the day, 7 days and 30 days ending at the window's end."""

    dau: int
    wau: int
    mau: int

    @property
    def stickiness(self) -> float | None:
        return self.dau / self.mau if self.mau else None


@dataclass(frozen=True, slots=True)
class FailingCommand:
    command: str | None
    failures: int
    exit_codes: list[Count] = field(default_factory=list)  # most common first


# --- buckets: the day and hour boundaries of the caller's time zone -------------------------------


def bucket_start(moment: datetime, tz: ZoneInfo, hourly: bool) -> datetime:
    """The UTC instant at which `moment`'s local hour (or day) begins in `tz`.

    Truncating the local wall time keeps `fold`, so the repeated hour when clocks go back is a
    bucket of its own, as Postgres' date_trunc(field, timestamptz, zone) makes it.
    """
    local = moment.astimezone(tz)
    if hourly:
        local = local.replace(minute=0, second=0, microsecond=0)
    else:
        local = datetime.combine(local.date(), time(), tzinfo=tz)
    return local.astimezone(UTC)


def week_start(moment: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of Monday 00:00 (in `tz`) of `moment`'s week."""
    local_day = moment.astimezone(tz).date()
    monday = local_day - timedelta(days=local_day.weekday())
    return datetime.combine(monday, time(), tzinfo=tz).astimezone(UTC)


def buckets(span: Window, tz: ZoneInfo) -> list[datetime]:
    """Every bucket (UTC instants, ascending) that overlaps the window, empty ones included."""
    # Local days last 23 to 25 hours: 25 h past a day's start is always inside the next day.
    step = timedelta(hours=1) if span.hourly else timedelta(hours=25)
    found: list[datetime] = []
    start = bucket_start(span.start, tz, span.hourly)
    while start < span.end:
        found.append(start)
        start = bucket_start(start + step, tz, span.hourly)
    return found
