"""Public sharing: share links, and each app's switch for public badges.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from tkcloud_adapters.sql.schema: a migration must keep
# creating what it created the day it was written.
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Batch mode: on SQLite alembic recreates the table, which keeps this migration the same on
    # both backends (and lets the downgrade drop the column again).
    with op.batch_alter_table("apps") as batch:
        batch.add_column(
            sa.Column("badges_enabled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "share_links",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("org_id", sa.String(), nullable=False),
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("slug", sa.String(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("revoked_at", _TIME, nullable=True),
        sa.Column("include_events", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_share_links"),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name="fk_share_links_org_id_orgs"),
        sa.ForeignKeyConstraint(["app_id"], ["apps.id"], name="fk_share_links_app_id_apps"),
        sa.UniqueConstraint("slug", name="uq_share_links_slug"),
    )
    op.create_index("ix_share_links_app_id", "share_links", ["app_id"])


def downgrade() -> None:
    op.drop_index("ix_share_links_app_id", table_name="share_links")
    op.drop_table("share_links")
    # Batch mode: SQLite drops the column by recreating the table.
    with op.batch_alter_table("apps") as batch:
        batch.drop_column("badges_enabled")
