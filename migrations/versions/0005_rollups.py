"""Analytics rollups: the queue of batches to fold and the rollup tables.

The rollups of events stored before this revision are built by `tkcloud analytics rebuild`.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from tkcloud_adapters.sql.schema: a migration must keep
# creating what it created the day it was written.
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rollup_queue",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("event_ids", sa.Text(), nullable=False),
        sa.Column("first_timestamp", _TIME, nullable=False),
        sa.Column("last_timestamp", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollup_queue"),
    )
    op.create_index("ix_rollup_queue_app_id", "rollup_queue", ["app_id"])
    op.create_table(
        "rollup_counts",
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("slice", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("grain", sa.String(1), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("subkey", sa.String(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("reported", sa.BigInteger(), nullable=False),
        sa.Column("successes", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "slice", "kind", "grain", "at", "key", "subkey", name="pk_rollup_counts"
        ),
    )
    op.create_table(
        "rollup_durations",
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("slice", sa.String(), nullable=False),
        sa.Column("grain", sa.String(1), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("command", sa.String(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "app_id", "slice", "grain", "at", "command", "bucket", name="pk_rollup_durations"
        ),
    )
    op.create_table(
        "rollup_user_days",
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("slice", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("user_key", sa.BigInteger(), nullable=False),
        sa.Column("hours", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "slice", "day", "user_key", name="pk_rollup_user_days"),
    )
    op.create_table(
        "rollup_first_seen",
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("slice", sa.String(), nullable=False),
        sa.Column("key", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "kind", "key", "slice", name="pk_rollup_first_seen"),
    )
    op.create_index(
        "ix_rollup_first_seen_app_id_kind_slice_first_seen",
        "rollup_first_seen",
        ["app_id", "kind", "slice", "first_seen"],
    )


def downgrade() -> None:
    op.drop_index("ix_rollup_first_seen_app_id_kind_slice_first_seen", "rollup_first_seen")
    for table in ("rollup_first_seen", "rollup_user_days", "rollup_durations", "rollup_counts"):
        op.drop_table(table)
    op.drop_index("ix_rollup_queue_app_id", "rollup_queue")
    op.drop_table("rollup_queue")
