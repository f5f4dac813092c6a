"""Orgs paying through Stripe: the billing overview, checkout and portal sessions, webhooks, and
the periodic job that applies scheduled downgrades and ends grace periods."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.billing import PaymentGateway, WebhookEvent
from tkcloud_application.ports.identity import Mailer, MailMessage
from tkcloud_application.ports.system import Clock
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.billing import (
    PAID_PLANS,
    BillingState,
    Decision,
    Outcome,
    PlanChange,
    apply_subscription,
    due_change,
    payment_failed,
    payment_succeeded,
)
from tkcloud_domain.errors import (
    Conflict,
    DomainError,
    NotConfigured,
    NotFound,
    ValidationFailed,
)
from tkcloud_domain.identity import Action, Principal, Role
from tkcloud_domain.plans import Plan

logger = logging.getLogger("tkcloud.billing")

HANDLED_EVENTS = frozenset(
    {
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
        "invoice.payment_failed",
    }
)


@dataclass(frozen=True, slots=True)
class BillingOverview:
    state: BillingState
    changes: list[PlanChange]


async def owner_emails(uow: TenancyUnitOfWork, org_id: str) -> list[str]:
    emails = []
    for m in await uow.memberships.list_for_org(org_id):
        if m.role is Role.OWNER:
            user = await uow.users.get(m.user_id)
            if user is not None:
                emails.append(user.email)
    return emails


class Subscriptions:
    def __init__(
        self,
        *,
        uow: Callable[[], TenancyUnitOfWork],
        access: Access,
        gateway: PaymentGateway | None,
        mailer: Mailer,
        clock: Clock,
        dashboard_url: str,
        on_plan_change: Callable[[str | None, str | None], None] | None = None,
    ) -> None:
        self._uow = uow
        self._access = access
        self._gateway = gateway
        self._mailer = mailer
        self._clock = clock
        self._dashboard_url = dashboard_url
        # Invalidates this process's ingest cache so new limits apply at once.
        self._on_plan_change = on_plan_change or (lambda org_id, app_id: None)

    def _require_gateway(self) -> PaymentGateway:
        if self._gateway is None:
            raise NotConfigured(
                "Billing is not configured on this server (no Stripe keys); an operator sets "
                "plans with `tkcloud org set-plan`"
            )
        return self._gateway

    # --- for owners ------------------------------------------------------------------------

    async def overview(self, principal: Principal, org_id: str) -> BillingOverview:
        await self._access.require(principal, org_id, Action.BILLING_MANAGE)
        self._require_gateway()
        async with self._uow() as uow:
            state = await uow.billing.state(org_id)
            changes = await uow.billing.changes(org_id)
        if state is None:
            raise NotFound(f"No org {org_id}")
        return BillingOverview(state, changes)

    async def checkout(self, principal: Principal, org_id: str, plan: Plan) -> str:
        await self._access.require(principal, org_id, Action.BILLING_MANAGE)
        gateway = self._require_gateway()
        if plan not in PAID_PLANS:
            raise ValidationFailed("plan: expected pro or business", details={"field": "plan"})
        customer_id, state = await self._customer(org_id)
        if state.plan is Plan.ENTERPRISE:
            raise Conflict("This org is on Enterprise terms; talk to us to change them")
        if state.subscription_id and state.status and state.status.grants_plan:
            raise Conflict("This org already has a subscription: change it in the billing portal")
        billing_page = f"{self._dashboard_url}/orgs/{org_id}/billing"
        return await gateway.checkout_url(
            customer_id=customer_id,
            org_id=org_id,
            plan=plan,
            success_url=f"{billing_page}?checkout=success",
            cancel_url=f"{billing_page}?checkout=cancelled",
        )

    async def portal(self, principal: Principal, org_id: str) -> str:
        await self._access.require(principal, org_id, Action.BILLING_MANAGE)
        gateway = self._require_gateway()
        customer_id, _ = await self._customer(org_id)
        return await gateway.portal_url(
            customer_id=customer_id, return_url=f"{self._dashboard_url}/orgs/{org_id}/billing"
        )

    async def _customer(self, org_id: str) -> tuple[str, BillingState]:
        gateway = self._require_gateway()
        async with self._uow() as uow:
            state = await uow.billing.state(org_id)
            org = await uow.orgs.get(org_id)
            emails = await owner_emails(uow, org_id)
        if state is None or org is None:
            raise NotFound(f"No org {org_id}")
        if state.customer_id:
            return state.customer_id, state
        customer_id = await gateway.ensure_customer(
            org_id=org_id, org_name=org.name, email=emails[0] if emails else None, existing=None
        )
        async with self._uow() as uow:
            # Another request may have created one meanwhile: keep the first stored.
            current = await uow.billing.state(org_id)
            assert current is not None
            if current.customer_id:
                return current.customer_id, current
            state = replace(current, customer_id=customer_id)
            await uow.billing.save(state)
            await uow.commit()
        return customer_id, state

    # --- from Stripe ----------------------------------------------------------------------

    async def handle_webhook(self, payload: bytes, signature: str | None) -> str:
        """Verify, then process the event exactly once. Returns what happened (for logs)."""
        gateway = self._require_gateway()
        event = gateway.parse_webhook(payload, signature)
        if event.type not in HANDLED_EVENTS:
            return "ignored"
        snapshot = event.subscription
        if snapshot is None and event.type == "checkout.session.completed":
            if event.subscription_id is None:
                return "ignored"
            # The session does not carry the subscription's state: ask for it. It is dated with
            # the event (Stripe's clock, like every other snapshot's), so a later
            # customer.subscription.* event already applied is never undone by it.
            snapshot = await gateway.subscription(event.subscription_id, as_of=event.created)
        changed_org: str | None = None
        mails: list[MailMessage] = []
        async with self._uow() as uow:
            if not await uow.billing.claim_event(event.id, event.type, self._clock.now()):
                return "duplicate"
            state = await self._find(uow, event)
            if state is None:
                logger.warning("stripe event %s (%s) for no known org", event.id, event.type)
                await uow.commit()  # claimed: a redelivery would not find the org either
                return "unknown org"
            now = self._clock.now()
            if event.type == "invoice.payment_failed":
                new = payment_failed(state, now=now)
                if new.grace_until is not None and new != state:
                    mails = await self._payment_failed_mails(uow, new)
                outcome = Outcome(Decision.APPLIED, new)
            elif event.type == "invoice.paid":
                outcome = Outcome(Decision.APPLIED, payment_succeeded(state))
            else:
                assert snapshot is not None
                reason = (
                    "checkout"
                    if event.type == "checkout.session.completed"
                    else "subscription updated"
                )
                outcome = apply_subscription(
                    state, snapshot, now=now, actor=event.id, reason=reason
                )
            if outcome.decision is Decision.APPLIED:
                await uow.billing.save(outcome.state)
            if outcome.change is not None:
                await uow.billing.record_change(outcome.change)
                changed_org = state.org_id
            await uow.commit()
        if changed_org is not None:
            self._on_plan_change(changed_org, None)
        for mail in mails:
            try:
                await self._mailer.send(mail)
            except DomainError as exc:
                # The event is processed and recorded; failing the webhook now would only make
                # Stripe redeliver a duplicate. The billing page shows the grace period anyway.
                logger.warning("payment-failed mail to %s not sent: %s", mail.to, exc.message)
        return outcome.decision.value

    async def _find(self, uow: TenancyUnitOfWork, event: WebhookEvent) -> BillingState | None:
        if event.customer_id:
            state = await uow.billing.by_customer(event.customer_id)
            if state is not None:
                return state
        if event.org_id:
            state = await uow.billing.state(event.org_id)
            if state is not None and event.customer_id and not state.customer_id:
                return replace(state, customer_id=event.customer_id)
            return state
        return None

    async def _payment_failed_mails(
        self, uow: TenancyUnitOfWork, state: BillingState
    ) -> list[MailMessage]:
        org = await uow.orgs.get(state.org_id)
        if org is None or state.grace_until is None:
            return []
        return [
            MailMessage(
                to=owner,
                subject=f"Payment failed for {org.name} on telemetry-kit cloud",
                text=(
                    f"We could not charge the payment method of {org.name}. Your "
                    f"{state.plan.value} plan stays active until "
                    f"{state.grace_until:%Y-%m-%d %H:%M} UTC; after that the org moves to the "
                    "Free plan.\n\nUpdate the payment method here:\n"
                    f"{self._dashboard_url}/orgs/{state.org_id}/billing\n"
                ),
                kind="payment_failed",
            )
            for owner in await owner_emails(uow, state.org_id)
        ]

    # --- the periodic job -------------------------------------------------------------------

    async def apply_due(self, now: datetime | None = None) -> list[PlanChange]:
        """Apply every scheduled downgrade and ended grace period. Safe to run in every process
        at once: each org is re-read and changed inside its own transaction."""
        moment = now or self._clock.now()
        async with self._uow() as uow:
            candidates = await uow.billing.due(moment)
        applied = []
        for candidate in candidates:
            async with self._uow() as uow:
                state = await uow.billing.state(candidate.org_id)
                outcome = due_change(state, now=moment) if state else None
                if outcome is None:
                    continue
                await uow.billing.save(outcome.state)
                if outcome.change is not None:
                    await uow.billing.record_change(outcome.change)
                    applied.append(outcome.change)
                await uow.commit()
            self._on_plan_change(candidate.org_id, None)
        return applied
