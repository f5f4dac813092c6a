"""Initial schema: orgs, apps, credentials, events, monthly usage, DNT counts.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from tkcloud_adapters.sql.schema: a migration must keep
# creating what it created the day it was written.
_TIME = sa.DateTime(timezone=True)
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("slug", sa.String(), nullable=False),
        sa.Column("plan", sa.String(), nullable=False),
        sa.Column("region", sa.String(), nullable=False),
        sa.Column("custom_events_per_month", sa.BigInteger(), nullable=True),
        sa.Column("custom_retention_days", sa.Integer(), nullable=True),
        sa.Column("stripe_customer_id", sa.String(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_orgs"),
        sa.UniqueConstraint("slug", name="uq_orgs_slug"),
    )
    op.create_table(
        "apps",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("environment", sa.String(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_apps"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_apps_org_id_orgs"),
    )
    op.create_index("ix_apps_org_id", "apps", ["org_id"])
    op.create_table(
        "app_credentials",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_app_credentials"),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name="fk_app_credentials_app_id_apps"),
        sa.UniqueConstraint("token_hash", name="uq_app_credentials_token_hash"),
    )
    op.create_index("ix_app_credentials_app_id", "app_credentials", ["app_id"])
    op.create_table(
        "events",
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("timestamp", _TIME, nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("schema_version", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("event_category", sa.String(), nullable=True),
        sa.Column("user_id", sa.String(), nullable=False),
        sa.Column("session_id", sa.String(), nullable=True),
        sa.Column("service_name", sa.String(), nullable=False),
        sa.Column("service_version", sa.String(), nullable=False),
        sa.Column("service_language", sa.String(), nullable=True),
        sa.Column("service_language_version", sa.String(), nullable=True),
        sa.Column("os", sa.String(), nullable=True),
        sa.Column("os_version", sa.String(), nullable=True),
        sa.Column("arch", sa.String(), nullable=True),
        sa.Column("ci", sa.Boolean(), nullable=True),
        sa.Column("shell", sa.String(), nullable=True),
        sa.Column("sdk_version", sa.String(), nullable=True),
        sa.Column("command", sa.String(), nullable=True),
        sa.Column("subcommand", sa.String(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("feature", sa.String(), nullable=True),
        sa.Column("raw", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "event_id", name="pk_events"),
    )
    op.create_index(
        "ix_events_app_id_timestamp", "events", ["app_id", sa.column("timestamp").desc()]
    )
    op.create_index(
        "ix_events_app_id_event_type_timestamp", "events", ["app_id", "event_type", "timestamp"]
    )
    op.create_table(
        "usage_monthly",
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("environment", sa.String(), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "month", "environment", name="pk_usage_monthly"),
    )
    op.create_index("ix_usage_monthly_org_id_month", "usage_monthly", ["org_id", "month"])
    op.create_table(
        "dnt_daily",
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "day", name="pk_dnt_daily"),
    )


def downgrade() -> None:
    op.drop_table("dnt_daily")
    op.drop_table("usage_monthly")
    op.drop_table("events")
    op.drop_table("app_credentials")
    op.drop_table("apps")
    op.drop_table("orgs")
