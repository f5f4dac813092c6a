"""The rollups' pure parts: windows as hour and day rows, hour masks, duration histograms."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkcloud_domain.analytics import window
from tkcloud_domain.rollups import (
    ALL_HOURS,
    ALPHA,
    RollupDelta,
    bucket_value,
    day_masks,
    day_window,
    duration_bucket,
    histogram_spans,
    identity_key,
    in_day_window,
    percentile,
    split,
    week_of,
)


def at(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, tzinfo=UTC)


def test_split_reads_whole_days_at_the_day_grain() -> None:
    assert split(at(3, 12), at(10, 12)) == (
        [(at(3, 12), at(4)), (at(10), at(10, 12))],
        (date(2026, 12, 4), date(2026, 12, 10)),
    )
    assert split(at(3), at(5)) == ([], (date(2026, 12, 3), date(2026, 12, 5)))
    # Within one day, or across one midnight without a whole day: hours only.
    assert split(at(3, 5), at(3, 9)) == ([(at(3, 5), at(3, 9))], None)
    assert split(at(3, 22), at(4, 3)) == ([(at(3, 22), at(4, 3))], None)


def test_day_masks() -> None:
    assert day_masks(at(3, 22), at(4, 2)) == [
        (date(2026, 12, 3), 0b11 << 22),
        (date(2026, 12, 4), 0b11),
    ]
    assert day_masks(at(3), at(5)) == [
        (date(2026, 12, 3), ALL_HOURS),
        (date(2026, 12, 4), ALL_HOURS),
    ]
    assert day_masks(at(3, 5), at(3, 6)) == [(date(2026, 12, 3), 1 << 5)]


def test_periods_end_with_the_hour_in_progress() -> None:
    now = datetime(2026, 12, 10, 12, 34, 56, tzinfo=UTC)
    assert window(now, "30d", None, None).end == at(10, 13)
    assert window(now, "30d", None, None).start == at(10, 13) - timedelta(days=30)
    assert window(at(10, 12), "24h", None, None).end == at(10, 12)  # already on the hour


@given(st.integers(1, 10**9))
def test_a_duration_s_bucket_stands_for_it_within_alpha(duration: int) -> None:
    assert bucket_value(duration_bucket(duration)) == pytest.approx(duration, rel=ALPHA)
    assert duration_bucket(duration) <= duration_bucket(duration + 1)  # monotone


def test_zero_and_negative_durations_share_bucket_zero() -> None:
    assert duration_bucket(0) == duration_bucket(-5) == 0
    assert bucket_value(0) == 0.0


@given(st.lists(st.integers(0, 100_000), min_size=1, max_size=60), st.sampled_from([0.5, 0.95]))
def test_histogram_percentiles_are_within_alpha_of_exact_ones(values: list[int], q: float) -> None:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    exact = ordered[low] + (ordered[high] - ordered[low]) * (position - low)
    histogram: dict[int, int] = {}
    for value in values:
        histogram[duration_bucket(value)] = histogram.get(duration_bucket(value), 0) + 1
    estimate = percentile(histogram.items(), q)
    assert estimate == pytest.approx(exact, rel=ALPHA, abs=1e-9)
    assert percentile([], q) is None


def test_identity_keys_are_stable_non_negative_bigints() -> None:
    key = identity_key("client_abc")
    assert key == identity_key("client_abc") != identity_key("client_abd")
    assert 0 <= key < 2**63


def test_week_of_is_the_monday_at_midnight_utc() -> None:
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    assert week_of(monday) == monday
    assert week_of(monday + timedelta(days=6, hours=23, minutes=59)) == monday
    assert week_of(monday - timedelta(microseconds=1)) == monday - timedelta(days=7)
    berlin = datetime(2026, 11, 30, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # Sunday 23:30 UTC
    assert week_of(berlin) == monday


def test_histogram_spans_read_whole_weeks_and_the_days_around_them() -> None:
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    day, week = timedelta(days=1), timedelta(days=7)
    # 90 days ending on a Friday at 14:00: leading days, 12 whole weeks, trailing days.
    end = monday + 12 * week + 4 * day + timedelta(hours=14)
    start = end - 90 * day
    spans = histogram_spans(start, end)
    assert spans == [
        ("d", start.replace(hour=0), monday),
        ("w", monday, monday + 12 * week),
        ("d", monday + 12 * week, monday + 12 * week + 5 * day),
    ]
    # Together the spans are exactly the whole UTC days the window touches, once each.
    covered = [a + n * day for g, a, b in spans for n in range((b - a) // day)]
    assert covered == [start.replace(hour=0) + n * day for n in range(91)]
    # No whole week: days only; a window of whole weeks: weeks only.
    assert histogram_spans(monday + day, monday + 3 * day) == [
        ("d", monday + day, monday + 3 * day)
    ]
    assert histogram_spans(monday, monday + 2 * week) == [("w", monday, monday + 2 * week)]
    assert histogram_spans(monday + timedelta(hours=3), monday + timedelta(hours=4)) == [
        ("d", monday, monday + day)
    ]


def test_a_day_window_is_24_hours_ending_on_the_hour() -> None:
    assert day_window(at(1, 23) - timedelta(days=1), at(1, 23)) == (at(1), 23)
    assert day_window(at(1), at(2)) == (at(1), 24)  # a UTC day ends at hour 24 of itself
    assert day_window(at(1), at(1, 23)) is None  # 23 hours: a day that DST shortened
    half_past = datetime(2026, 12, 2, 4, 30, tzinfo=UTC)
    assert day_window(half_past - timedelta(days=1), half_past) is None


def test_day_window_membership() -> None:
    assert in_day_window(1 << 23, 0, 23)  # 23:00 of the day before, in the window to 23:00
    assert not in_day_window(1 << 22, 0, 23)
    assert in_day_window(0, 1 << 22, 23)
    assert not in_day_window(0, 1 << 23, 23)
    assert in_day_window(0, 1 << 23, 24)
    assert not in_day_window(ALL_HOURS, 0, 24)


def test_day_window_changes_count_each_user_once_per_window() -> None:
    user = identity_key("u")
    delta = RollupDelta()
    delta.user_hours[("", date(2026, 12, 2), user)] = 1 << 0  # 00:00 on 2 Dec
    # Stored already: the same user at 23:00 on 1 Dec.
    stored = {("", date(2026, 12, 1), user): 1 << 23}
    changes = dict(delta.day_window_changes(stored))
    # Windows ending on 2 Dec at hours 1..23 had the user already (23:00 on 1 Dec); the one
    # ending at hour 24 (2 Dec itself) did not. Windows ending on 3 Dec reach back only to
    # 2 Dec 01:00 and later: 00:00 is in none of them.
    assert changes == {("", "day_users", "d", at(2), "24", ""): 1}
    # The same hour again changes nothing.
    stored[("", date(2026, 12, 2), user)] = 1
    assert list(delta.day_window_changes(stored)) == []
