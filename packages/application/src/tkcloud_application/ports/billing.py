"""Ports for billing: the payment provider (Stripe) and where billing state is kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from tkcloud_domain.billing import BillingState, PlanChange, Subscription
from tkcloud_domain.plans import Plan


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified provider event, reduced to what billing needs."""

    id: str
    type: str  # e.g. "customer.subscription.updated"
    created: datetime
    customer_id: str | None
    subscription_id: str | None
    org_id: str | None  # from client_reference_id or metadata, when the provider carries it
    subscription: Subscription | None  # set for customer.subscription.* events


class PaymentGateway(Protocol):
    async def ensure_customer(
        self, *, org_id: str, org_name: str, email: str | None, existing: str | None
    ) -> str:
        """The org's customer id: `existing` if given, else a new customer (org id in its
        metadata)."""
        ...

    async def checkout_url(
        self, *, customer_id: str, org_id: str, plan: Plan, success_url: str, cancel_url: str
    ) -> str:
        """A Checkout Session for a subscription to the plan's configured price."""
        ...

    async def portal_url(self, *, customer_id: str, return_url: str) -> str: ...

    async def subscription(self, subscription_id: str, *, as_of: datetime) -> Subscription:
        """The subscription as the provider has it now (`as_of` is recorded as its time)."""
        ...

    def parse_webhook(self, payload: bytes, signature: str | None) -> WebhookEvent:
        """Verify the signature (tolerance 300 s) and decode; raises InvalidWebhook."""
        ...


class BillingRepository(Protocol):
    """`state` and `by_customer` lock the org's billing until the unit of work ends, so changes
    to one org (two webhooks, two job runs) happen one after the other."""

    async def state(self, org_id: str) -> BillingState | None: ...

    async def by_customer(self, customer_id: str) -> BillingState | None: ...

    async def save(self, state: BillingState) -> None:
        """Store every field, the org's plan included."""
        ...

    async def record_change(self, change: PlanChange) -> None: ...

    async def changes(self, org_id: str) -> list[PlanChange]:
        """Newest first."""
        ...

    async def claim_event(self, event_id: str, event_type: str, at: datetime) -> bool:
        """Record a provider event id; False if it was recorded before (by this or another
        process: the second of two concurrent claims waits for the first and gets False)."""
        ...

    async def due(self, now: datetime) -> list[BillingState]:
        """Orgs with a scheduled change or a grace period that ends at or before `now`."""
        ...

    async def claim_notification(self, org_id: str, kind: str, period: str) -> bool:
        """Record that a notification (e.g. quota_80 for 2026-12) was sent; False if it was."""
        ...
