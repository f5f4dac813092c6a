"""Duration histograms by week: `rollup_durations` rows at the grain "w" (Monday 00:00 UTC).

A 90-day top-commands answer summed about 90 days' histogram rows per command; with week rows
it sums 13 weeks' and the few days around them. From this revision on folds write both grains;
here the week rows are added up from the day rows already there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The Monday 00:00 UTC of the week of a day row's `at`. SQLite keeps times as naive UTC text in
# SQLAlchemy's format; its 'weekday 0' moves to the Sunday ending the week (or stays there).
_WEEK_START = {
    "postgresql": "date_trunc('week', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    "sqlite": "date(at, 'weekday 0', '-6 days') || ' 00:00:00.000000'",
}


def upgrade() -> None:
    week = _WEEK_START[op.get_bind().dialect.name]
    op.execute(
        # `week` is one of this module's constants, not input.
        f"""
        INSERT INTO rollup_durations (app_id, slice, grain, at, command, bucket, events)
        SELECT app_id, slice, 'w', {week}, command, bucket, sum(events)
        FROM rollup_durations
        WHERE grain = 'd'
        GROUP BY app_id, slice, {week}, command, bucket
        """  # noqa: S608
    )


def downgrade() -> None:
    op.execute("DELETE FROM rollup_durations WHERE grain = 'w'")
