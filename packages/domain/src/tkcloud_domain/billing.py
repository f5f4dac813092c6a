"""The plan lifecycle: what a subscription's state means for an org's plan, and when.

- An upgrade takes effect at once (rate limit and quota follow immediately).
- A downgrade or a cancellation takes effect at the end of the paid period.
- A failed payment starts a 7-day grace period on the current plan, then the org drops to Free.
- Enterprise is an operator's decision: Stripe never changes an Enterprise org's plan.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from tkcloud_domain.plans import Plan

GRACE_PERIOD = timedelta(days=7)
PAID_PLANS = (Plan.PRO, Plan.BUSINESS)
_RANK = {Plan.FREE: 0, Plan.PRO: 1, Plan.BUSINESS: 2, Plan.ENTERPRISE: 3}


def is_upgrade(current: Plan, new: Plan) -> bool:
    return _RANK[new] > _RANK[current]


class SubscriptionStatus(StrEnum):
    """Stripe's subscription statuses."""

    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"

    @property
    def grants_plan(self) -> bool:
        """Whether the subscription's plan applies (past_due does, during the grace period)."""
        return self in (
            SubscriptionStatus.ACTIVE,
            SubscriptionStatus.TRIALING,
            SubscriptionStatus.PAST_DUE,
        )


@dataclass(frozen=True, slots=True)
class Subscription:
    """What we know of an org's Stripe subscription, as of `as_of` (the Stripe event's time)."""

    id: str
    customer_id: str
    status: SubscriptionStatus
    plan: Plan | None  # None: a price we do not sell (ignored)
    current_period_end: datetime
    cancel_at_period_end: bool
    as_of: datetime


@dataclass(frozen=True, slots=True)
class BillingState:
    """An org's billing, as stored beside the org."""

    org_id: str
    plan: Plan
    customer_id: str | None = None
    subscription_id: str | None = None
    status: SubscriptionStatus | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    pending_plan: Plan | None = None  # takes effect at `pending_at`
    pending_at: datetime | None = None
    grace_until: datetime | None = None  # payment failed: Free after this
    as_of: datetime | None = None  # the Stripe time of the last subscription state applied


@dataclass(frozen=True, slots=True)
class PlanChange:
    """A record of every change, visible to owners: who or what, when, from what to what."""

    org_id: str
    from_plan: Plan
    to_plan: Plan
    reason: str  # e.g. "checkout", "subscription updated", "grace period ended", "operator"
    actor: str  # a Stripe event id, "operator", "system"
    at: datetime


class Decision(StrEnum):
    APPLIED = "applied"
    STALE = "stale"  # older than what we already applied: out-of-order delivery
    IGNORED = "ignored"  # enterprise, or a price we do not sell


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: Decision
    state: BillingState
    change: PlanChange | None = None


def apply_subscription(
    state: BillingState,
    sub: Subscription,
    *,
    now: datetime,
    actor: str,
    reason: str = "subscription updated",
) -> Outcome:
    """Fold one subscription snapshot into the org's billing state.

    Snapshots can arrive in any order and more than once: one older than the last applied
    (`as_of`) changes nothing, so the newest state always wins.
    """
    if state.as_of is not None and sub.as_of < state.as_of:
        return Outcome(Decision.STALE, state)
    if state.plan is Plan.ENTERPRISE:
        return Outcome(Decision.IGNORED, state)
    if sub.plan is None and sub.status.grants_plan:
        # A price we do not sell (or no longer configure): leave the org as it is rather than
        # guess, and rather than drop a paying customer to Free.
        return Outcome(Decision.IGNORED, state)
    base = BillingState(
        org_id=state.org_id,
        plan=state.plan,
        customer_id=sub.customer_id,
        subscription_id=sub.id,
        status=sub.status,
        current_period_end=sub.current_period_end,
        cancel_at_period_end=sub.cancel_at_period_end,
        grace_until=state.grace_until if sub.status is SubscriptionStatus.PAST_DUE else None,
        as_of=sub.as_of,
    )
    if not sub.status.grants_plan or sub.plan is None:
        if sub.status in (SubscriptionStatus.INCOMPLETE, SubscriptionStatus.INCOMPLETE_EXPIRED):
            # Never paid for: nothing changes.
            return Outcome(Decision.APPLIED, replace(base, plan=state.plan))
        # Canceled or unpaid: the subscription is over.
        return _change(base, Plan.FREE, "subscription ended", actor, now)
    wanted = Plan.FREE if sub.cancel_at_period_end else sub.plan
    if sub.status is SubscriptionStatus.PAST_DUE and is_upgrade(state.plan, wanted):
        # An unpaid subscription never raises a plan (after a grace period ran out, say).
        return Outcome(Decision.APPLIED, base)
    if is_upgrade(state.plan, wanted) or wanted is state.plan:
        return _change(base, wanted, reason, actor, now)
    # A downgrade or a cancellation: the org keeps what it paid for until the period ends.
    scheduled = replace(base, pending_plan=wanted, pending_at=sub.current_period_end)
    if scheduled.pending_at is not None and scheduled.pending_at <= now:
        return _change(base, wanted, "period ended", actor, now)
    return Outcome(Decision.APPLIED, scheduled)


def payment_failed(state: BillingState, *, now: datetime) -> BillingState:
    """Start the grace period (once: a retried failure does not extend it)."""
    if state.plan not in PAID_PLANS or state.grace_until is not None:
        return state
    return replace(state, grace_until=now + GRACE_PERIOD)


def payment_succeeded(state: BillingState) -> BillingState:
    return replace(state, grace_until=None)


def due_change(state: BillingState, *, now: datetime) -> Outcome | None:
    """What the periodic job applies: a scheduled downgrade whose time has come, or the end of
    a grace period."""
    if state.plan is Plan.ENTERPRISE:
        return None
    if state.grace_until is not None and state.grace_until <= now and state.plan is not Plan.FREE:
        return _change(
            replace(state, grace_until=None), Plan.FREE, "grace period ended", "system", now
        )
    if state.pending_plan is not None and state.pending_at is not None and state.pending_at <= now:
        return _change(state, state.pending_plan, "period ended", "system", now)
    return None


def _change(state: BillingState, plan: Plan, reason: str, actor: str, now: datetime) -> Outcome:
    new = replace(state, plan=plan, pending_plan=None, pending_at=None)
    if plan is state.plan:
        return Outcome(Decision.APPLIED, new)
    return Outcome(
        Decision.APPLIED, new, PlanChange(state.org_id, state.plan, plan, reason, actor, now)
    )
