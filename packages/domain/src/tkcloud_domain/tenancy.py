"""Tenancy: orgs (tenants), apps and the credentials apps sign with (PRODUCT.md, Tenancy)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tkcloud_domain.limits import QuotaScope
from tkcloud_domain.plans import (
    STAGING_EVENTS_PER_MONTH,
    STAGING_RETENTION_DAYS,
    Plan,
    PlanLimits,
    limits_for,
)

# Org and app ids are lowercase hyphenated UUIDs, not prefixed ids: the telemetry-kit SDK parses
# both as UUIDs before it builds the ingest URL (docs/ALIGNMENT_ANALYSIS.md).
CREDENTIAL_PREFIX = "crd_"
TOKEN_PREFIX = "tk_"  # noqa: S105 - a prefix, not a secret
SECRET_PREFIX = "tks_"  # noqa: S105


class Environment(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"


@dataclass(frozen=True, slots=True)
class Org:
    id: str
    name: str
    slug: str
    plan: Plan
    region: str
    created_at: datetime
    custom_events_per_month: int | None = None
    custom_retention_days: int | None = None

    @property
    def limits(self) -> PlanLimits:
        return limits_for(
            self.plan,
            custom_events_per_month=self.custom_events_per_month,
            custom_retention_days=self.custom_retention_days,
        )


@dataclass(frozen=True, slots=True)
class App:
    id: str
    org_id: str
    name: str
    environment: Environment
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credential:
    """One app token + signing secret pair. `expires_at` is set when a rotation retires it."""

    id: str
    app_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """What the operator sees exactly once: the token and secret in clear."""

    credential: Credential
    token: str
    secret: str


def hash_token(token: str) -> str:
    """App tokens and API keys are stored only as SHA-256 hex digests."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LiveSecret:
    token_hash: str
    secret: str  # decrypted signing secret, used as a UTF-8 string (never base64-decoded)
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class IngestApp:
    """Everything the ingestion hot path needs to know about one app, in one lookup."""

    org_id: str
    app_id: str
    environment: Environment
    active: bool
    plan: Plan
    org_limits: PlanLimits
    secrets: tuple[LiveSecret, ...]

    def live_secrets(self, now: datetime) -> list[LiveSecret]:
        return [s for s in self.secrets if s.expires_at is None or now < s.expires_at]

    def accepts_token(self, token: str, now: datetime) -> bool:
        digest = hash_token(token)
        found = False
        for s in self.live_secrets(now):
            found |= hmac.compare_digest(s.token_hash, digest)
        return found

    @property
    def requests_per_minute(self) -> int | None:
        return self.org_limits.requests_per_minute

    @property
    def quota_scope(self) -> QuotaScope:
        if self.environment is Environment.STAGING:
            return QuotaScope("app", self.app_id)
        return QuotaScope("org", self.org_id)

    @property
    def events_per_month(self) -> int | None:
        if self.environment is Environment.STAGING:
            return STAGING_EVENTS_PER_MONTH
        return self.org_limits.events_per_month

    @property
    def retention_days(self) -> int | None:
        if self.environment is Environment.STAGING:
            return STAGING_RETENTION_DAYS
        return self.org_limits.retention_days
