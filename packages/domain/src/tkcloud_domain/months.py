"""Calendar helpers: quota months are calendar months in UTC."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def month_key(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


def start_of_month(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def start_of_next_month(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    if utc.month == 12:
        return datetime(utc.year + 1, 1, 1, tzinfo=UTC)
    return datetime(utc.year, utc.month + 1, 1, tzinfo=UTC)


def seconds_until_next_month(moment: datetime) -> int:
    return max(1, math.ceil((start_of_next_month(moment) - moment).total_seconds()))
