"""The database schema as SQLAlchemy Core tables (no ORM: the hot path builds plain rows).

The alembic migrations create this schema; a test compares the migrated database with it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

# Named constraints let SQLite batch migrations (which recreate tables) refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no timezone type: values are stored as naive UTC text (so they sort and compare
    as text) and come back aware. A naive datetime is refused: it is always a bug.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        if dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class RawJson(TypeDecorator[Any]):
    """A JSON column written from JSON text (a str) already in hand, the event as sent, instead
    of from Python objects, so the hot path never re-encodes it. Reads return decoded values."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def bind_processor(self, dialect: Dialect) -> None:
        # No serializer: the drivers take the JSON text as is (asyncpg's jsonb codec and
        # SQLite's TEXT storage both expect a str).
        return None


orgs = Table(
    "orgs",
    metadata,
    Column("id", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("slug", String, nullable=False, unique=True),
    Column("plan", String, nullable=False),
    Column("region", String, nullable=False),
    Column("custom_events_per_month", BigInteger),
    Column("custom_retention_days", Integer),
    Column("stripe_customer_id", String, index=True, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    # Billing (tkcloud_domain.billing.BillingState), kept beside the plan it governs so that a
    # plan change and the state that caused it are written in one row.
    Column("subscription_id", String),
    Column("subscription_status", String),  # a SubscriptionStatus value
    Column("current_period_end", UtcDateTime),
    Column("cancel_at_period_end", Boolean, nullable=False, server_default=false()),
    Column("pending_plan", String),  # takes effect at pending_at
    Column("pending_at", UtcDateTime),
    Column("grace_until", UtcDateTime),
    Column("billing_as_of", UtcDateTime),  # the Stripe time of the last state applied
)

apps = Table(
    "apps",
    metadata,
    Column("id", String, primary_key=True),
    Column("org_id", String, ForeignKey("orgs.id"), nullable=False, index=True),
    Column("name", String, nullable=False),
    Column("environment", String, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    # The owner's opt-in to public README badges of the app's monthly counts.
    Column("badges_enabled", Boolean, nullable=False, server_default=false()),
)

app_credentials = Table(
    "app_credentials",
    metadata,
    Column("id", String, primary_key=True),
    Column("app_id", String, ForeignKey("apps.id"), nullable=False, index=True),
    Column("token_hash", String, nullable=False, unique=True),
    Column("secret_ciphertext", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
)

# No foreign keys to apps: the hot path's insert stays a single index probe per row, and an
# app's events are purged by a job, not by a cascade inside one huge transaction.
#
# On Postgres the table is partitioned by month of the event's timestamp (UTC): partitions
# `events_YYYY_MM` plus `events_default` for any timestamp without one; the retention job creates
# the coming months' partitions and drops expired ones (tkcloud_adapters.sql.partitions). A
# partitioned table's unique keys must hold the partition column, so deduplication lives in
# `event_keys`. SQLite is not partitioned and keeps its migrated key, (app_id, event_id).
events = Table(
    "events",
    metadata,
    Column("org_id", String, nullable=False),
    Column("app_id", String, nullable=False),
    Column("event_id", Uuid(as_uuid=False), nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("schema_version", String, nullable=False),
    Column("event_type", String, nullable=False),
    Column("event_category", String),
    Column("user_id", String, nullable=False),
    Column("session_id", String),
    Column("service_name", String, nullable=False),
    Column("service_version", String, nullable=False),
    Column("service_language", String),
    Column("service_language_version", String),
    Column("os", String),
    Column("os_version", String),
    Column("arch", String),
    Column("ci", Boolean),
    Column("shell", String),
    Column("sdk_version", String),
    Column("command", String),
    Column("subcommand", String),
    Column("success", Boolean),
    Column("duration_ms", BigInteger),
    Column("exit_code", Integer),
    Column("feature", String),
    Column("raw", RawJson, nullable=False),
    PrimaryKeyConstraint("app_id", "timestamp", "event_id"),
    postgresql_partition_by='RANGE ("timestamp")',
)
Index("ix_events_app_id_timestamp", events.c.app_id, events.c.timestamp.desc())
Index(
    "ix_events_app_id_event_type_timestamp",
    events.c.app_id,
    events.c.event_type,
    events.c.timestamp,
)

# One row per stored event: (app_id, event_id) is the deduplication key (the first write of an
# event id wins), kept in a narrow unpartitioned table because a partitioned `events` cannot
# hold it. A key and its event are written and deleted in the same transactions; `timestamp` is
# the event's, so a dropped partition's keys are found by time.
event_keys = Table(
    "event_keys",
    metadata,
    Column("app_id", String, nullable=False),
    Column("event_id", Uuid(as_uuid=False), nullable=False),
    Column("timestamp", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("app_id", "event_id"),
    Index("ix_event_keys_timestamp", "timestamp"),
)

_EVENT_PARTITION = re.compile(r"events_(\d{4}_\d{2}|default)")


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic's `include_name` hook: the partitions of `events` are made and dropped at run time
    by the retention job, not by migrations, so schema comparisons leave them out."""
    return not (type_ == "table" and name is not None and _EVENT_PARTITION.fullmatch(name))


usage_monthly = Table(
    "usage_monthly",
    metadata,
    Column("org_id", String, nullable=False),
    Column("app_id", String, nullable=False),
    # The app's environment when the events were accepted: a promoted app keeps its staging
    # count apart from its production count for the rest of the month.
    Column("environment", String, nullable=False),
    Column("month", String(7), nullable=False),  # YYYY-MM, UTC
    Column("events", BigInteger, nullable=False),
    PrimaryKeyConstraint("app_id", "month", "environment"),
    Index("ix_usage_monthly_org_id_month", "org_id", "month"),
)

dnt_daily = Table(
    "dnt_daily",
    metadata,
    Column("app_id", String, nullable=False),
    Column("day", Date, nullable=False),
    Column("requests", BigInteger, nullable=False),
    PrimaryKeyConstraint("app_id", "day"),
)

# --- analytics rollups (tkcloud_domain.rollups explains them) -----------------------------------

# Stored batches not yet folded into the rollups: one row per batch, written in the batch's own
# transaction, so a committed event is always either folded or queued here.
rollup_queue = Table(
    "rollup_queue",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("app_id", String, nullable=False, index=True),
    Column("event_ids", Text, nullable=False),  # a JSON array of the inserted events' ids
    Column("first_timestamp", UtcDateTime, nullable=False),
    Column("last_timestamp", UtcDateTime, nullable=False),
)

# Counters per slice, kind and hour or day: events (every kind), and for "total" and "command"
# also how many reported success, succeeded and failed. `key` is the JSON of the value counted.
rollup_counts = Table(
    "rollup_counts",
    metadata,
    Column("app_id", String, nullable=False),
    Column("slice", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("grain", String(1), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("key", String, nullable=False),
    Column("subkey", String, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("reported", BigInteger, nullable=False),
    Column("successes", BigInteger, nullable=False),
    Column("failures", BigInteger, nullable=False),
    PrimaryKeyConstraint("app_id", "slice", "kind", "grain", "at", "key", "subkey"),
)

# Log-scale histograms of command durations (tkcloud_domain.rollups.duration_bucket).
rollup_durations = Table(
    "rollup_durations",
    metadata,
    Column("app_id", String, nullable=False),
    Column("slice", String, nullable=False),
    Column("grain", String(1), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("command", String, nullable=False),
    Column("bucket", Integer, nullable=False),
    Column("events", BigInteger, nullable=False),
    PrimaryKeyConstraint("app_id", "slice", "grain", "at", "command", "bucket"),
)

# The UTC hours (a 24-bit mask) each user was active in on each UTC day.
rollup_user_days = Table(
    "rollup_user_days",
    metadata,
    Column("app_id", String, nullable=False),
    Column("slice", String, nullable=False),
    Column("day", Date, nullable=False),
    Column("user_key", BigInteger, nullable=False),
    Column("hours", Integer, nullable=False),
    PrimaryKeyConstraint("app_id", "slice", "day", "user_key"),
)

# When each user and session was first seen (per slice): retention cohorts and session starts.
rollup_first_seen = Table(
    "rollup_first_seen",
    metadata,
    Column("app_id", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("slice", String, nullable=False),
    Column("key", BigInteger, nullable=False),
    Column("first_seen", UtcDateTime, nullable=False),
    # key before slice: a fold looks its sessions up by key, in every slice at once.
    PrimaryKeyConstraint("app_id", "kind", "key", "slice"),
    Index(
        "ix_rollup_first_seen_app_id_kind_slice_first_seen", "app_id", "kind", "slice", "first_seen"
    ),
)

# Every table of one app's rollups (rebuilt, purged and deleted together).
ROLLUP_TABLES = (rollup_counts, rollup_durations, rollup_user_days, rollup_first_seen)

# --- public sharing ------------------------------------------------------------------------------

# Read-only public views of one app's analytics. The slug is the link's whole secret (at least 128
# random bits); it is kept in clear because the app's members list their links' URLs.
share_links = Table(
    "share_links",
    metadata,
    Column("id", String, primary_key=True),
    Column("org_id", String, ForeignKey("orgs.id"), nullable=False),
    Column("app_id", String, ForeignKey("apps.id"), nullable=False, index=True),
    Column("slug", String, nullable=False, unique=True),
    Column("created_by", String),  # a user id; NULL when an operator or an API key made it
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    Column("include_events", Boolean, nullable=False, server_default=false()),
)

# --- billing -------------------------------------------------------------------------------------

# Stripe event ids already handled: a redelivered event finds its id here and changes nothing.
stripe_events = Table(
    "stripe_events",
    metadata,
    Column("id", String, primary_key=True),
    Column("type", String, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
)

# Every plan change of an org, for its owners to see.
plan_changes = Table(
    "plan_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", String, ForeignKey("orgs.id"), nullable=False, index=True),
    Column("from_plan", String, nullable=False),
    Column("to_plan", String, nullable=False),
    Column("reason", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

# Notifications sent once per org, kind and period (e.g. quota_80 for 2026-12).
notifications_sent = Table(
    "notifications_sent",
    metadata,
    Column("org_id", String, ForeignKey("orgs.id"), nullable=False),
    Column("kind", String, nullable=False),
    Column("period", String, nullable=False),
    # The database's clock: claiming takes no time from the caller.
    Column("sent_at", UtcDateTime, nullable=False, server_default=text("CURRENT_TIMESTAMP")),
    PrimaryKeyConstraint("org_id", "kind", "period"),
)

# --- people and programs ------------------------------------------------------------------------
# Secrets (session, CSRF, link, invite and API-key tokens) are stored only as SHA-256 hashes;
# the unique hash is how a presented token is looked up.

users = Table(
    "users",
    metadata,
    Column("id", String, primary_key=True),
    Column("email", String, nullable=False, unique=True),
    Column("display_name", String, nullable=False),
    Column("github_id", BigInteger, unique=True),
    Column("github_login", String),
    Column("created_at", UtcDateTime, nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column("org_id", String, ForeignKey("orgs.id"), nullable=False),
    Column("user_id", String, ForeignKey("users.id"), nullable=False, index=True),
    Column("role", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("org_id", "user_id"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String, primary_key=True),
    Column("user_id", String, ForeignKey("users.id"), nullable=False, index=True),
    Column("token_hash", String, nullable=False, unique=True),
    Column("csrf_hash", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime),
)

# No foreign key to users: a link is sent to an address before any account exists for it.
magic_links = Table(
    "magic_links",
    metadata,
    Column("id", String, primary_key=True),
    Column("email", String, nullable=False, index=True),
    Column("token_hash", String, nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime),
)

invites = Table(
    "invites",
    metadata,
    Column("id", String, primary_key=True),
    Column("org_id", String, ForeignKey("orgs.id"), nullable=False, index=True),
    Column("email", String, nullable=False),
    Column("role", String, nullable=False),
    Column("token_hash", String, nullable=False, unique=True),
    # No foreign key: the invite outlives the inviter's account, as a record of who sent it.
    Column("invited_by", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("accepted_at", UtcDateTime),
    Column("declined_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String, primary_key=True),
    Column("org_id", String, ForeignKey("orgs.id"), nullable=False, index=True),
    Column("name", String, nullable=False),
    Column("scopes", String, nullable=False),  # comma-separated ApiKeyScope values
    Column("token_hash", String, nullable=False, unique=True),
    Column("hint", String, nullable=False),
    Column("created_by", String),  # a user id; NULL when an operator made the key
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
)

oauth_states = Table(
    "oauth_states",
    metadata,
    Column("state", String, primary_key=True),
    Column("code_verifier", String, nullable=False),
    Column("redirect_to", String, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# The development mailer's outbox: mails are kept here instead of being sent.
mail_outbox = Table(
    "mail_outbox",
    metadata,
    Column("id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("recipient", String, nullable=False),
    Column("subject", String, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, index=True),
)
