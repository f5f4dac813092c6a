"""Day window user counters: `rollup_counts` rows of kind "day_users".

For each slice, UTC day d and hour h (1..24), the users active in the 24 hours ending at hour h
of day d (`tkcloud_domain.rollups.RollupDelta.day_window_changes`). A daily series in a
whole-hour time zone reads them instead of counting distinct users over every user-day of the
window. From this revision on folds keep them; here they are counted from the hour masks
already stored (a user is in the window of day d ending at hour h if active on day d before
hour h, or on day d - 1 from hour h on). This reads each `rollup_user_days` row 48 times: about
a minute per million rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The hours 1..24; per dialect, the day after a `day`, and a day's midnight as an `at` (SQLite
# keeps dates as text and times as naive UTC text in SQLAlchemy's format).
_HOURS = "SELECT column1 AS hour FROM (VALUES {}) AS v".format(  # noqa: S608 (constants)
    ", ".join(f"({hour})" for hour in range(1, 25))
)
_NEXT_DAY = {"postgresql": "day + 1", "sqlite": "date(day, '+1 day')"}
_MIDNIGHT = {
    "postgresql": "CAST(window_day AS timestamp) AT TIME ZONE 'UTC'",
    "sqlite": "window_day || ' 00:00:00.000000'",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    hours, next_day, midnight = _HOURS, _NEXT_DAY[dialect], _MIDNIGHT[dialect]
    op.execute(
        # The interpolated texts are this module's constants, not input.
        f"""
        INSERT INTO rollup_counts
            (app_id, slice, kind, grain, at, key, subkey, events, reported, successes, failures)
        SELECT app_id, slice, 'day_users', 'd', {midnight}, CAST(hour AS VARCHAR), '',
               count(DISTINCT user_key), 0, 0, 0
        FROM (
            SELECT app_id, slice, day AS window_day, hour, user_key
            FROM rollup_user_days CROSS JOIN ({hours}) AS hours_
            WHERE (hours & ((1 << hour) - 1)) != 0
            UNION ALL
            SELECT app_id, slice, {next_day} AS window_day, hour, user_key
            FROM rollup_user_days CROSS JOIN ({hours}) AS hours_
            WHERE (hours >> hour) != 0
        ) AS active
        GROUP BY app_id, slice, window_day, hour
        """  # noqa: S608
    )


def downgrade() -> None:
    op.execute("DELETE FROM rollup_counts WHERE kind = 'day_users'")
