"""Plans and what each allows (PRODUCT.md, Plans)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"
    BUSINESS = "business"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class PlanLimits:
    requests_per_minute: int | None  # None: unlimited
    events_per_month: int | None  # None: unlimited
    retention_days: int | None  # None: kept forever


PLAN_LIMITS: dict[Plan, PlanLimits] = {
    Plan.FREE: PlanLimits(requests_per_minute=10, events_per_month=10_000, retention_days=90),
    Plan.PRO: PlanLimits(requests_per_minute=100, events_per_month=100_000, retention_days=365),
    Plan.BUSINESS: PlanLimits(
        requests_per_minute=1_000, events_per_month=1_000_000, retention_days=730
    ),
    Plan.ENTERPRISE: PlanLimits(
        requests_per_minute=None, events_per_month=None, retention_days=None
    ),
}

# A staging app has its own small allowance whatever the org's plan.
STAGING_EVENTS_PER_MONTH = 1_000
STAGING_RETENTION_DAYS = 30


def limits_for(
    plan: Plan,
    *,
    custom_events_per_month: int | None = None,
    custom_retention_days: int | None = None,
) -> PlanLimits:
    """The effective limits of an org: Enterprise terms are set per org by an operator."""
    base = PLAN_LIMITS[plan]
    if plan is not Plan.ENTERPRISE:
        return base
    return PlanLimits(
        requests_per_minute=None,
        events_per_month=custom_events_per_month,
        retention_days=custom_retention_days,
    )
