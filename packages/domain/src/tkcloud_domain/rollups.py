"""Rollups: what the analytics answers are computed from instead of raw events.

A batch of stored events folds into a `RollupDelta`; deltas add up (counters add, hour masks
OR, first-seen instants take the minimum), so folding events batch by batch, in any order and
any grouping, gives the same rollups as folding them all at once. That is what makes them
correct under late events (an event adds to the hour it happened in, whenever it arrives) and
rebuildable from the stored events at any time. Duplicates never reach a delta: only events the
store actually inserted are folded.

Every event is folded into up to four *slices*: all events (""), and the events of its
event_type, of its service_version and of its os ("os=linux"). A question with at most one
filter reads exactly one slice; one with several filters is answered from the raw events.

Time is kept at two grains, UTC hours ("h") and UTC days ("d"): a window that starts and ends on
whole hours reads day rows for its whole days and hour rows for the rest.

Distinct users are exact: one row per user, UTC day and slice holds the 24-bit mask of the hours
the user was active, so any hour-aligned bucket (a local day, a week, a rolling 30 days) counts
the users whose masks meet it. That costs a row per user and day in the window, so the users of
each *day window* (the 24 hours ending on an hour, which every local day of a whole-hour time
zone is) are also counted as events are folded (`day_window_changes`): a daily series reads a
counter per day. Users and sessions are keyed by a 63-bit hash of their id (a
collision between two of an app's users is about as likely as 1 in 10^10 with 400,000 users).
Duration percentiles come from log-scale histograms (relative accuracy 2.5 %, `duration_bucket`)
kept per UTC day ("d") and per week ("w", Monday to Monday, UTC), not per hour (an hour grain would
multiply their rows by 24): a window's percentiles are those of the whole UTC days it touches,
read as whole weeks where it can (`histogram_spans`), so that 90 days sum 13 weeks' rows, not 90
days'.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WEEK = timedelta(weeks=1)
ALL_HOURS = (1 << 24) - 1

# Durations are histogrammed in buckets [GAMMA^(i-1), GAMMA^i): every duration in a bucket is
# within ALPHA of the bucket's representative value, so a percentile interpolated between
# representatives is within ALPHA of the one interpolated between the exact durations.
GAMMA = 1.05
ALPHA = (GAMMA - 1) / (GAMMA + 1)  # 0.0244
_LOG_GAMMA = math.log(GAMMA)


@dataclass(frozen=True, slots=True)
class RolledEvent:
    """The columns of a stored event that the rollups read."""

    timestamp: datetime
    user_id: str
    session_id: str | None
    event_type: str
    service_version: str
    os: str | None
    arch: str | None
    ci: bool | None
    shell: str | None
    sdk_version: str | None
    command: str | None
    success: bool | None
    duration_ms: int | None
    exit_code: int | None
    feature: str | None


def slice_of(name: str, value: str) -> str:
    return f"{name}={value}"


def key_of(value: str | bool | None) -> str:
    """A counter key: the JSON of the value, so None ("not reported") stays apart from any
    string and booleans from their names."""
    return json.dumps(value)


def value_of(key: str) -> str | bool | None:
    value: str | bool | None = json.loads(key)
    return value


def identity_key(identifier: str) -> int:
    """A user's or session's 63-bit key (non-negative: a signed BIGINT on every backend)."""
    digest = hashlib.blake2b(identifier.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def duration_bucket(duration_ms: int) -> int:
    """The histogram bucket of a duration: 0 for 0 ms (and below), else ceil(log_GAMMA(d))."""
    if duration_ms <= 0:
        return 0
    return max(1, math.ceil(math.log(duration_ms) / _LOG_GAMMA - 1e-9))


def bucket_value(bucket: int) -> float:
    """The representative duration of a bucket (DDSketch's): within ALPHA of all its values."""
    if bucket <= 0:
        return 0.0
    return 2 * GAMMA**bucket / (GAMMA + 1)


def percentile(histogram: Iterable[tuple[int, int]], fraction: float) -> float | None:
    """percentile_cont over a histogram of (bucket, count), each value its representative."""
    ordered = sorted((b, c) for b, c in histogram if c > 0)
    total = sum(c for _, c in ordered)
    if total == 0:
        return None
    position = fraction * (total - 1)
    low_rank, high_rank = math.floor(position), math.ceil(position)
    low = high = 0.0
    seen = 0
    for bucket, count in ordered:
        if seen <= low_rank < seen + count:
            low = bucket_value(bucket)
        if seen <= high_rank < seen + count:
            high = bucket_value(bucket)
            break
        seen += count
    return low + (high - low) * (position - low_rank)


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def week_of(moment: datetime) -> datetime:
    """The start of the UTC week (Monday 00:00 UTC) that holds `moment`."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def is_whole_hour(moment: datetime) -> bool:
    return moment.astimezone(UTC) == hour_of(moment)


# Counter row key: (slice, kind, grain, at, key, subkey); values: events, reported, successes,
# failures (reported: events that said whether they succeeded).
CountKey = tuple[str, str, str, datetime, str, str]
DurationKey = tuple[str, str, datetime, str, int]  # slice, grain, at, command key, bucket
UserDayKey = tuple[str, date, int]  # slice, day, user key
FirstSeenKey = tuple[str, str, int]  # kind ("user" | "session"), slice, key


@dataclass
class RollupDelta:
    """What some events add to one app's rollups. Session starts are not in `counts` until the
    store knows each session's earlier first-seen instant (`session_start_moves`)."""

    counts: defaultdict[CountKey, list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0, 0, 0])
    )
    durations: Counter[DurationKey] = field(default_factory=Counter)
    user_hours: defaultdict[UserDayKey, int] = field(default_factory=lambda: defaultdict(int))
    first_seen: dict[FirstSeenKey, datetime] = field(default_factory=dict)
    events: int = 0

    def add_all(self, events: Iterable[RolledEvent]) -> RollupDelta:
        # Two passes: each event adds to counters keyed by its hour and filter columns (event
        # type, version, os) plus what is counted; then each such counter, far fewer than
        # events, is added to its slices and grains.
        counted: Counter[tuple[Any, ...]] = Counter()
        durations: Counter[tuple[Any, ...]] = Counter()
        hours: defaultdict[tuple[Any, ...], int] = defaultdict(int)
        seen: dict[tuple[Any, ...], datetime] = {}
        for e in events:
            self.events += 1
            moment = e.timestamp.astimezone(UTC)
            hour = moment.replace(minute=0, second=0, microsecond=0)
            head = (hour, e.event_type, e.service_version, e.os)
            success = e.success
            counted[(*head, "total", None, "", success)] += 1
            counted[(*head, "command", e.command, "", success)] += 1
            counted[(*head, "os", e.os, "", None)] += 1
            counted[(*head, "arch", e.arch, "", None)] += 1
            counted[(*head, "ci", e.ci, "", None)] += 1
            counted[(*head, "shell", e.shell, "", None)] += 1
            counted[(*head, "service_version", e.service_version, "", None)] += 1
            counted[(*head, "sdk_version", e.sdk_version, "", None)] += 1
            if e.feature is not None:
                counted[(*head, "feature", e.feature, "", None)] += 1
            if e.exit_code is not None:
                counted[(*head, "exit", e.command, str(e.exit_code), None)] += 1
                if success is False:
                    counted[(*head, "failed_exit", e.command, str(e.exit_code), None)] += 1
            if e.duration_ms is not None and e.command is not None:
                durations[(*head, e.command, duration_bucket(e.duration_ms))] += 1
            user = (e.event_type, e.service_version, e.os, "user", e.user_id)
            hours[(hour.date(), *user)] |= 1 << hour.hour
            for who in (user, (*user[:3], "session", e.session_id)):
                if who[4] is not None and (who not in seen or moment < seen[who]):
                    seen[who] = moment
        for (hour, event_type, version, os, kind, value, subkey, success), n in counted.items():
            key = "" if kind == "total" else key_of(value)
            reported = n if success is not None else 0
            successes = n if success is True else 0
            failures = n if success is False else 0
            for name in _slices(event_type, version, os):
                for grain, at in _grains(hour):
                    row = self.counts[(name, kind, grain, at, key, subkey)]
                    row[0] += n
                    row[1] += reported
                    row[2] += successes
                    row[3] += failures
        for (hour, event_type, version, os, command, bucket), n in durations.items():
            command_key = key_of(command)
            day = hour.replace(hour=0)
            week = week_of(day)
            for name in _slices(event_type, version, os):
                self.durations[(name, "d", day, command_key, bucket)] += n
                self.durations[(name, "w", week, command_key, bucket)] += n
        for (day, event_type, version, os, _, user_id), mask in hours.items():
            user_key = identity_key(user_id)
            for name in _slices(event_type, version, os):
                self.user_hours[(name, day, user_key)] |= mask
        for (event_type, version, os, kind, identifier), moment in seen.items():
            hashed = identity_key(identifier)
            for name in _slices(event_type, version, os):
                self._seen((kind, name, hashed), moment)
        return self

    def _seen(self, key: FirstSeenKey, moment: datetime) -> None:
        known = self.first_seen.get(key)
        if known is None or moment < known:
            self.first_seen[key] = moment

    def session_start_moves(
        self, known: dict[tuple[str, int], datetime]
    ) -> Iterator[tuple[CountKey, int]]:
        """The session-start counter changes, given the sessions' first-seen instants already
        stored (slice, key): +1 where a session is new, and moved where it started earlier."""
        for (kind, name, key), moment in self.first_seen.items():
            if kind != "session":
                continue
            before = known.get((name, key))
            if before is not None and before <= moment:
                continue
            if before is not None:
                for grain, at in _grains(hour_of(before)):
                    yield (name, "sessions", grain, at, "", ""), -1
            for grain, at in _grains(hour_of(moment)):
                yield (name, "sessions", grain, at, "", ""), 1

    def day_window_changes(self, stored: dict[UserDayKey, int]) -> Iterator[tuple[CountKey, int]]:
        """+1 to a day window's user counter for each user this delta makes active in it for
        the first time, given the hour masks stored before it (`stored`: those of the delta's
        user-days and of the days either side; absent is 0).

        A *day window* is the 24 hours ending on hour `h` (1..24) of UTC day `d`:
        [d + h - 24 h, d + h). A local day of a whole-hour time zone is one (Berlin's 1 Dec
        starts at 23:00 UTC on 30 Nov, so it is the window ending at hour 23 of 1 Dec), so a
        daily series reads its users from these counters instead of counting distinct users."""
        after = dict(stored)
        for key, hours in self.user_hours.items():
            after[key] = stored.get(key, 0) | hours
        windows = set()
        for name, day, user in self.user_hours:
            windows.add((name, day, user))
            windows.add((name, day + DAY, user))
        for name, day, user in windows:
            earlier, on = (name, day - DAY, user), (name, day, user)
            old = stored.get(earlier, 0), stored.get(on, 0)
            new = after.get(earlier, 0), after.get(on, 0)
            if old == new:
                continue
            for hour in range(1, 25):
                if in_day_window(*new, hour) and not in_day_window(*old, hour):
                    yield (name, "day_users", "d", _midnight(day), str(hour), ""), 1


def in_day_window(before: int, on: int, hour: int) -> bool:
    """Whether a user active in the UTC hours `before` (a mask, of day d - 1) and `on` (of day
    d) was active in the day window ending at `hour` (1..24) of day d."""
    return (before >> hour) != 0 or (on & ((1 << hour) - 1)) != 0


def day_window(start: datetime, end: datetime) -> tuple[datetime, int] | None:
    """The day window [start, end) is, as (midnight of its day, its last hour 1..24); None if
    it is not 24 hours ending on a whole UTC hour."""
    if end - start != DAY or not is_whole_hour(end):
        return None
    end = end.astimezone(UTC)
    if end.hour == 0:
        return end - DAY, 24
    return end.replace(hour=0), end.hour


def _slices(event_type: str, service_version: str, os: str | None) -> list[str]:
    names = ["", slice_of("event_type", event_type), slice_of("service_version", service_version)]
    if os is not None:
        names.append(slice_of("os", os))
    return names


def _grains(hour: datetime) -> tuple[tuple[str, datetime], tuple[str, datetime]]:
    return ("h", hour), ("d", hour.replace(hour=0))


# --- reading: windows and buckets as hour masks --------------------------------------------------


def split(
    start: datetime, end: datetime
) -> tuple[list[tuple[datetime, datetime]], tuple[date, date] | None]:
    """[start, end) (whole hours) as the hour ranges to read at the hour grain, and the whole
    UTC days [first, last) to read at the day grain (None: no whole day)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first = start if start.hour == 0 else _midnight(start.date() + DAY)
    last = _midnight(end.date())
    if first >= last:
        return [(start, end)], None
    hours = [(a, b) for a, b in ((start, first), (last, end)) if a < b]
    return hours, (first.date(), last.date())


def histogram_spans(start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """The whole UTC days [start, end) touches, as (grain, first, last) spans of duration
    histogram rows to read: whole weeks at the week grain, the days around them at the day
    grain."""
    first = _midnight(start.astimezone(UTC).date())
    last = _midnight((end.astimezone(UTC) - timedelta(microseconds=1)).date() + DAY)
    weeks_from = week_of(first)
    if weeks_from < first:
        weeks_from += WEEK
    weeks_to = week_of(last)
    if weeks_from >= weeks_to:
        return [("d", first, last)] if first < last else []
    spans = [("d", first, weeks_from), ("w", weeks_from, weeks_to), ("d", weeks_to, last)]
    return [(grain, a, b) for grain, a, b in spans if a < b]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def day_masks(start: datetime, end: datetime) -> list[tuple[date, int]]:
    """The UTC days [start, end) (whole hours) touches, each with the mask of its hours inside."""
    masks: list[tuple[date, int]] = []
    moment = hour_of(start)
    while moment < end:
        stop = min(_midnight(moment.date() + DAY), end)
        first, count = moment.hour, int((stop - moment) / HOUR)
        mask = ALL_HOURS if count == 24 else ((1 << count) - 1) << first
        masks.append((moment.date(), mask))
        moment = stop
    return masks
