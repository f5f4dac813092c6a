"""Events partitioned by month on Postgres; deduplication keys in their own table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Postgres: `events` becomes PARTITION BY RANGE ("timestamp") with one partition per UTC month
(`events_2026_12` holds 2026-12-01T00:00Z up to 2027-01-01T00:00Z) and a DEFAULT partition,
`events_default`, so that no timestamp is ever refused for want of a partition. Partitions are
made for every month that holds events, the current month and the next two; from then on the
retention job makes them ahead (tkcloud_adapters.sql.partitions). The rows are moved across in
this migration's transaction (the old table is renamed, copied from and dropped), so it takes
as long as copying the table once, with ingestion locked out meanwhile.

A partitioned table's unique keys must include the partition column, so the primary key becomes
(app_id, "timestamp", event_id) and deduplication moves to `event_keys` (app_id, event_id, plus
the event's timestamp so that a dropped month's keys can be found): narrow, unpartitioned, keyed
(app_id, event_id).

SQLite: `events` stays as it was, unpartitioned, with its (app_id, event_id) key, but it gets
`event_keys` too. Ingestion, retention, promotion and app deletion then run one code path on both
backends (a key and its event are always written and deleted together), instead of two that
would have to be kept equivalent and tested twice. The old key still holds on SQLite; it never
fires, since a duplicate never gets past `event_keys`. Rebuilding the table to drop it would copy
every event of an embedded install for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from tkcloud_adapters.sql.schema: a migration must keep
# creating what it created the day it was written.
_TIME = sa.DateTime(timezone=True)
_MONTHS_AHEAD = 2


def _event_columns() -> list[sa.Column[object]]:
    return [
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
        sa.Column("raw", postgresql.JSONB(), nullable=False),
    ]


_COLUMNS = ", ".join(f'"{c.name}"' for c in _event_columns())
# The one statement copying events between the old and the new table (fixed names only).
_COPY = "INSERT INTO events ({columns}) SELECT {columns} FROM {source}"


def _create_event_indexes() -> None:
    # On a partitioned table these are partitioned indexes: every partition gets its own.
    op.create_index(
        "ix_events_app_id_timestamp", "events", ["app_id", sa.column("timestamp").desc()]
    )
    op.create_index(
        "ix_events_app_id_event_type_timestamp", "events", ["app_id", "event_type", "timestamp"]
    )


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _create_partition(year: int, month: int) -> None:
    upper = _next_month(year, month)
    op.execute(
        f"CREATE TABLE events_{year:04d}_{month:02d} PARTITION OF events FOR VALUES"
        f" FROM ('{year:04d}-{month:02d}-01 00:00:00+00')"
        f" TO ('{upper[0]:04d}-{upper[1]:02d}-01 00:00:00+00')"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _create_event_keys()
        op.execute(
            'INSERT INTO event_keys (app_id, event_id, "timestamp")'
            ' SELECT app_id, event_id, "timestamp" FROM events'
        )
        return

    # The old table gives its names up: constraint and index names are unique per schema.
    op.rename_table("events", "events_unpartitioned")
    op.execute("ALTER TABLE events_unpartitioned RENAME CONSTRAINT pk_events TO pk_events_old")
    op.drop_index("ix_events_app_id_timestamp", table_name="events_unpartitioned")
    op.drop_index("ix_events_app_id_event_type_timestamp", table_name="events_unpartitioned")

    op.create_table(
        "events",
        *_event_columns(),
        sa.PrimaryKeyConstraint("app_id", "timestamp", "event_id", name="pk_events"),
        postgresql_partition_by='RANGE ("timestamp")',
    )
    _create_event_indexes()
    op.execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    months = {
        (int(row[0]), int(row[1]))
        for row in op.get_bind().execute(
            sa.text(
                "SELECT DISTINCT extract(year FROM t), extract(month FROM t) FROM"
                " (SELECT \"timestamp\" AT TIME ZONE 'UTC' AS t FROM events_unpartitioned) AS e"
            )
        )
    }
    now = datetime.now(UTC)
    month = (now.year, now.month)
    for _ in range(_MONTHS_AHEAD + 1):
        months.add(month)
        month = _next_month(*month)
    for year, number in sorted(months):
        if year < 9999 or number < 12:  # a bound past 9999-12-31 is no date; the default holds it
            _create_partition(year, number)
    op.execute(_COPY.format(columns=_COLUMNS, source="events_unpartitioned"))

    _create_event_keys()
    op.execute(
        'INSERT INTO event_keys (app_id, event_id, "timestamp")'
        ' SELECT app_id, event_id, "timestamp" FROM events_unpartitioned'
    )
    op.drop_table("events_unpartitioned")


def _create_event_keys() -> None:
    op.create_table(
        "event_keys",
        sa.Column("app_id", sa.String(), nullable=False),
        sa.Column("event_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("timestamp", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("app_id", "event_id", name="pk_event_keys"),
    )
    op.create_index("ix_event_keys_timestamp", "event_keys", ["timestamp"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # event_keys kept (app_id, event_id) unique, so the rows fit the old key.
        op.rename_table("events", "events_partitioned")
        op.execute("ALTER TABLE events_partitioned RENAME CONSTRAINT pk_events TO pk_events_new")
        op.drop_index("ix_events_app_id_timestamp", table_name="events_partitioned")
        op.drop_index("ix_events_app_id_event_type_timestamp", table_name="events_partitioned")
        op.create_table(
            "events",
            *_event_columns(),
            sa.PrimaryKeyConstraint("app_id", "event_id", name="pk_events"),
        )
        op.execute(_COPY.format(columns=_COLUMNS, source="events_partitioned"))
        # Dropping the partitioned table drops its partitions; detached ones the retention job
        # had not finished dropping are left alone (standalone tables, dropped by hand).
        op.drop_table("events_partitioned")
        _create_event_indexes()
    op.drop_index("ix_event_keys_timestamp", table_name="event_keys")
    op.drop_table("event_keys")
