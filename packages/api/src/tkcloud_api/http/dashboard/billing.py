"""Billing for owners: the overview, Checkout and the Customer Portal."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, SkipValidation

from tkcloud_api.http.dashboard.schemas import AllowanceOut
from tkcloud_application.billing.subscriptions import Subscriptions
from tkcloud_application.dashboard.apps import AppManagement
from tkcloud_domain.billing import PlanChange
from tkcloud_domain.identity import Principal
from tkcloud_domain.plans import Plan

Caller = NamedDependency[SkipValidation[Principal]]
Billing = NamedDependency[SkipValidation[Subscriptions]]
Apps = NamedDependency[SkipValidation[AppManagement]]


class CheckoutBody(msgspec.Struct):
    plan: Plan


class RedirectOut(msgspec.Struct):
    url: str  # send the browser there


class PlanChangeOut(msgspec.Struct):
    from_plan: Plan
    to_plan: Plan
    reason: str
    actor: str
    at: datetime

    @classmethod
    def of(cls, c: PlanChange) -> PlanChangeOut:
        return cls(c.from_plan, c.to_plan, c.reason, c.actor, c.at)


class BillingOut(msgspec.Struct):
    plan: Plan
    status: str | None  # the Stripe subscription's status, None without one
    current_period_end: datetime | None
    cancel_at_period_end: bool
    pending_plan: Plan | None  # a downgrade or cancellation waiting for the period end
    pending_at: datetime | None
    grace_until: datetime | None  # a failed payment: the plan drops to Free after this
    usage: AllowanceOut
    invoices: str  # POST here for a Customer Portal link (invoices, payment method, cancel)
    changes: list[PlanChangeOut]


class BillingController(Controller):
    path = "/api/v1/orgs/{org_id:str}/billing"
    tags = ["billing"]

    @get("/", summary="Plan, subscription, usage and plan history (owners)")
    async def overview(
        self, principal: Caller, subscriptions: Billing, apps: Apps, org_id: FromPath[str]
    ) -> BillingOut:
        view = await subscriptions.overview(principal, org_id)
        usage = await apps.org_usage(principal, org_id)
        s = view.state
        return BillingOut(
            plan=s.plan,
            status=s.status.value if s.status else None,
            current_period_end=s.current_period_end,
            cancel_at_period_end=s.cancel_at_period_end,
            pending_plan=s.pending_plan,
            pending_at=s.pending_at,
            grace_until=s.grace_until,
            usage=AllowanceOut.of(usage.allowance),
            invoices=f"/api/v1/orgs/{org_id}/billing/portal",
            changes=[PlanChangeOut.of(c) for c in view.changes],
        )

    @post(
        "/checkout",
        summary="A Stripe Checkout link to subscribe to Pro or Business (owners)",
        status_code=200,
    )
    async def checkout(
        self, principal: Caller, subscriptions: Billing, org_id: FromPath[str],
        data: JSONBody[CheckoutBody],
    ) -> RedirectOut:  # fmt: skip
        return RedirectOut(await subscriptions.checkout(principal, org_id, data.plan))

    @post("/portal", summary="A Stripe Customer Portal link (owners)", status_code=200)
    async def portal(
        self, principal: Caller, subscriptions: Billing, org_id: FromPath[str]
    ) -> RedirectOut:
        return RedirectOut(await subscriptions.portal(principal, org_id))
