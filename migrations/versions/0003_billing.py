"""Billing: the subscription state beside each org's plan, handled Stripe events, the plan
change history, and notifications sent once per period.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-18
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from tkcloud_adapters.sql.schema: a migration must keep
# creating what it created the day it was written.
_TIME = sa.DateTime(timezone=True)
_BILLING_COLUMNS = (
    "subscription_id",
    "subscription_status",
    "current_period_end",
    "cancel_at_period_end",
    "pending_plan",
    "pending_at",
    "grace_until",
    "billing_as_of",
)


def upgrade() -> None:
    # Batch mode: SQLite cannot add a constraint to an existing table (alembic recreates it).
    with op.batch_alter_table("orgs") as batch:
        batch.add_column(sa.Column("subscription_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("subscription_status", sa.String(), nullable=True))
        batch.add_column(sa.Column("current_period_end", _TIME, nullable=True))
        batch.add_column(
            sa.Column(
                "cancel_at_period_end", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch.add_column(sa.Column("pending_plan", sa.String(), nullable=True))
        batch.add_column(sa.Column("pending_at", _TIME, nullable=True))
        batch.add_column(sa.Column("grace_until", _TIME, nullable=True))
        batch.add_column(sa.Column("billing_as_of", _TIME, nullable=True))
        batch.create_index("ix_orgs_stripe_customer_id", ["stripe_customer_id"], unique=True)
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stripe_events"),
    )
    op.create_table(
        "plan_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("from_plan", sa.String(), nullable=False),
        sa.Column("to_plan", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_plan_changes"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_plan_changes_org_id_orgs"),
    )
    op.create_index("ix_plan_changes_org_id", "plan_changes", ["org_id"])
    op.create_table(
        "notifications_sent",
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("period", sa.String(), nullable=False),
        sa.Column("sent_at", _TIME, server_default=sa.text("CURRENT_TIMESTAMP"), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "kind", "period", name="pk_notifications_sent"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_notifications_sent_org_id_orgs"),
    )


def downgrade() -> None:
    op.drop_table("notifications_sent")
    op.drop_table("plan_changes")
    op.drop_table("stripe_events")
    # Batch mode: SQLite drops the columns by recreating the table.
    with op.batch_alter_table("orgs") as batch:
        batch.drop_index("ix_orgs_stripe_customer_id")
        for column in reversed(_BILLING_COLUMNS):
            batch.drop_column(column)
