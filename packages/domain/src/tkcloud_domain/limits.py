"""Rate-limit and quota decisions as values, shared by the ports and the use cases."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """What the X-RateLimit-* headers report."""

    limit: int
    remaining: int
    reset_seconds: int  # seconds until a request will be allowed again (0 when one is now)


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    state: RateLimitState


@dataclass(frozen=True, slots=True)
class QuotaScope:
    """Whose monthly events a batch counts against: an org's production apps, or one staging app."""

    kind: str  # "org" | "app"
    id: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    admitted: bool
    used_before: int  # events counted in the period before this batch
