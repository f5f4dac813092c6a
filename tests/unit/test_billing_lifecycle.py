"""The plan lifecycle as pure domain logic: every rule of PRODUCT.md's Plans and Billing."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tkcloud_domain.billing import (
    GRACE_PERIOD,
    BillingState,
    Decision,
    Subscription,
    SubscriptionStatus,
    apply_subscription,
    due_change,
    payment_failed,
    payment_succeeded,
)
from tkcloud_domain.plans import Plan

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
PERIOD_END = NOW + timedelta(days=30)


def snapshot(
    plan: Plan | None = Plan.PRO,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    *,
    cancel: bool = False,
    at: datetime = NOW,
) -> Subscription:
    return Subscription("sub_1", "cus_1", status, plan, PERIOD_END, cancel, at)


def free() -> BillingState:
    return BillingState(org_id="org", plan=Plan.FREE, customer_id="cus_1")


def on(plan: Plan) -> BillingState:
    return apply_subscription(free(), snapshot(plan), now=NOW, actor="evt_0").state


def test_an_upgrade_takes_effect_at_once_and_is_recorded() -> None:
    outcome = apply_subscription(
        free(), snapshot(Plan.PRO), now=NOW, actor="evt_1", reason="checkout"
    )
    assert outcome.decision is Decision.APPLIED
    assert outcome.state.plan is Plan.PRO
    assert outcome.change is not None
    assert (outcome.change.from_plan, outcome.change.to_plan) == (Plan.FREE, Plan.PRO)
    assert (outcome.change.reason, outcome.change.actor, outcome.change.at) == (
        "checkout",
        "evt_1",
        NOW,
    )


def test_pro_to_business_is_an_upgrade_too() -> None:
    outcome = apply_subscription(on(Plan.PRO), snapshot(Plan.BUSINESS), now=NOW, actor="e")
    assert outcome.state.plan is Plan.BUSINESS


def test_a_downgrade_waits_for_the_end_of_the_period() -> None:
    outcome = apply_subscription(on(Plan.BUSINESS), snapshot(Plan.PRO), now=NOW, actor="e")
    assert outcome.change is None
    assert (outcome.state.plan, outcome.state.pending_plan, outcome.state.pending_at) == (
        Plan.BUSINESS, Plan.PRO, PERIOD_END,
    )  # fmt: skip
    assert due_change(outcome.state, now=PERIOD_END - timedelta(seconds=1)) is None
    due = due_change(outcome.state, now=PERIOD_END)
    assert due is not None
    assert due.state.plan is Plan.PRO
    assert due.state.pending_plan is None
    assert due.change is not None
    assert due.change.reason == "period ended"


def test_cancel_at_period_end_keeps_the_plan_then_free() -> None:
    outcome = apply_subscription(on(Plan.PRO), snapshot(Plan.PRO, cancel=True), now=NOW, actor="e")
    assert (outcome.state.plan, outcome.state.pending_plan) == (Plan.PRO, Plan.FREE)
    due = due_change(outcome.state, now=PERIOD_END)
    assert due is not None
    assert due.state.plan is Plan.FREE


def test_undoing_a_cancellation_clears_the_pending_change() -> None:
    cancelling = apply_subscription(on(Plan.PRO), snapshot(cancel=True, at=NOW), now=NOW, actor="e")
    resumed = apply_subscription(
        cancelling.state, snapshot(at=NOW + timedelta(hours=1)), now=NOW, actor="e"
    )
    assert (resumed.state.plan, resumed.state.pending_plan) == (Plan.PRO, None)


@pytest.mark.parametrize("status", [SubscriptionStatus.CANCELED, SubscriptionStatus.UNPAID])
def test_an_ended_subscription_drops_to_free(status: SubscriptionStatus) -> None:
    outcome = apply_subscription(on(Plan.PRO), snapshot(status=status), now=NOW, actor="e")
    assert outcome.state.plan is Plan.FREE
    assert outcome.change is not None
    assert outcome.change.reason == "subscription ended"


def test_an_incomplete_checkout_changes_nothing() -> None:
    outcome = apply_subscription(
        free(), snapshot(status=SubscriptionStatus.INCOMPLETE), now=NOW, actor="e"
    )
    assert (outcome.state.plan, outcome.change) == (Plan.FREE, None)


def test_an_older_snapshot_is_stale() -> None:
    current = apply_subscription(free(), snapshot(at=NOW), now=NOW, actor="e").state
    late = apply_subscription(
        current,
        snapshot(status=SubscriptionStatus.CANCELED, at=NOW - timedelta(seconds=1)),
        now=NOW,
        actor="e",
    )
    assert late.decision is Decision.STALE
    assert late.state == current


def test_enterprise_is_never_changed_by_stripe() -> None:
    enterprise = replace(free(), plan=Plan.ENTERPRISE)
    outcome = apply_subscription(
        enterprise, snapshot(status=SubscriptionStatus.CANCELED), now=NOW, actor="e"
    )
    assert (outcome.decision, outcome.state) == (Decision.IGNORED, enterprise)
    assert due_change(replace(enterprise, grace_until=NOW), now=NOW) is None


def test_a_price_we_do_not_sell_is_ignored_not_a_cancellation() -> None:
    pro = on(Plan.PRO)
    outcome = apply_subscription(pro, snapshot(plan=None), now=NOW, actor="e")
    assert (outcome.decision, outcome.state.plan) == (Decision.IGNORED, Plan.PRO)


def test_payment_failure_starts_one_grace_period_then_free() -> None:
    failed = payment_failed(on(Plan.BUSINESS), now=NOW)
    assert failed.grace_until == NOW + GRACE_PERIOD
    assert payment_failed(failed, now=NOW + timedelta(days=3)).grace_until == NOW + GRACE_PERIOD
    assert due_change(failed, now=NOW + GRACE_PERIOD - timedelta(seconds=1)) is None
    due = due_change(failed, now=NOW + GRACE_PERIOD)
    assert due is not None
    assert (due.state.plan, due.state.grace_until) == (Plan.FREE, None)
    assert due.change is not None
    assert (due.change.reason, due.change.actor) == ("grace period ended", "system")


def test_a_paid_invoice_ends_the_grace_period() -> None:
    failed = payment_failed(on(Plan.PRO), now=NOW)
    assert payment_succeeded(failed).grace_until is None


def test_free_orgs_have_no_grace_period() -> None:
    assert payment_failed(free(), now=NOW).grace_until is None


def test_a_past_due_subscription_keeps_the_grace_period_but_never_raises_the_plan() -> None:
    failed = payment_failed(on(Plan.PRO), now=NOW)
    past_due = apply_subscription(
        failed,
        snapshot(status=SubscriptionStatus.PAST_DUE, at=NOW + timedelta(minutes=1)),
        now=NOW,
        actor="e",
    )
    assert (past_due.state.plan, past_due.state.grace_until) == (Plan.PRO, NOW + GRACE_PERIOD)
    dropped = due_change(past_due.state, now=NOW + GRACE_PERIOD)
    assert dropped is not None
    later = apply_subscription(
        dropped.state,
        snapshot(status=SubscriptionStatus.PAST_DUE, at=NOW + GRACE_PERIOD),
        now=NOW + GRACE_PERIOD,
        actor="e",
    )
    assert later.state.plan is Plan.FREE
