"""Billing end to end on Postgres + Redis, against a local Stripe stand-in that answers in
Stripe's JSON and signs webhooks with Stripe's scheme."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.sdk import batch_body, sdk_event, signed_request
from tests.support.stack import Stack, running_stack, settings_for
from tests.support.stripe import StripeStandIn
from tkcloud_api.container import settle
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Environment


@dataclass
class Billing:
    stack: Stack
    stripe: StripeStandIn
    price_pro: str
    price_business: str

    async def deliver(
        self, event: dict[str, Any], *, timestamp: int | None = None
    ) -> httpx.Response:
        payload, signature = self.stripe.webhook(event, timestamp=timestamp)
        return await self.stack.client.post(
            "/webhooks/stripe",
            content=payload,
            headers={"stripe-signature": signature, "content-type": "application/json"},
        )


@pytest.fixture
async def billing(
    tmp_path: Path, fresh_postgres_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[Billing]:
    async with StripeStandIn() as stripe:
        pro, business = stripe.add_price(unit_amount=2900), stripe.add_price(unit_amount=9900)
        settings = settings_for(
            "postgres",
            tmp_path=tmp_path,
            postgres_url=fresh_postgres_url,
            redis_url=redis_url,
            prefix=redis_prefix,
            stripe_secret_key=stripe.secret_key,
            stripe_webhook_secret=stripe.webhook_secret,
            stripe_price_pro=pro,
            stripe_price_business=business,
            stripe_api_base=stripe.url,
        )
        async with running_stack(settings, "postgres") as stack:
            # Stripe's clock is the real one: so is ours here.
            stack.clock.set(datetime.now(UTC).replace(microsecond=0))
            yield Billing(stack, stripe, pro, business)


async def owner_with_org(b: Billing) -> tuple[httpx.AsyncClient, str]:
    alice = await b.stack.browser("alice@example.com")
    org_id = (await alice.post("/api/v1/orgs", json={"name": "Acme"})).json()["org_id"]
    return alice, org_id


async def checkout(b: Billing, owner: httpx.AsyncClient, org_id: str, plan: str = "pro") -> str:
    """Start a checkout; returns the Stripe session id."""
    response = await owner.post(f"/api/v1/orgs/{org_id}/billing/checkout", json={"plan": plan})
    assert response.status_code == 200, response.text
    return response.json()["url"].rsplit("/", 1)[1]


async def subscribe(
    b: Billing, owner: httpx.AsyncClient, org_id: str, plan: str = "pro"
) -> dict[str, Any]:
    session, sub = b.stripe.complete_checkout(await checkout(b, owner, org_id, plan))
    response = await b.deliver(b.stripe.event("checkout.session.completed", session))
    assert response.json()["result"] == "applied", response.text
    return sub


async def overview(owner: httpx.AsyncClient, org_id: str) -> dict[str, Any]:
    response = await owner.get(f"/api/v1/orgs/{org_id}/billing")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_free_org_upgrades_through_checkout_and_its_rate_limit_rises_at_once(
    billing: Billing,
) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    app = (await alice.post(f"/api/v1/orgs/{org_id}/apps", json={"name": "cli"})).json()
    ids, secret = app["app"], app["credentials"]["secret"]

    async def send() -> httpx.Response:
        body = batch_body([sdk_event(b.stack.clock.now())])
        request = signed_request(
            ids["org_id"], ids["app_id"], secret, body, now=b.stack.clock.now()
        )
        return await b.stack.send(request)

    for _ in range(10):
        assert (await send()).status_code == 200
    limited = await send()
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "ERR_RATE_LIMIT"

    session_id = await checkout(b, alice, org_id)
    created = [r for r in b.stripe.received if r.path == "/v1/checkout/sessions"][-1]
    assert created.params["client_reference_id"] == org_id
    assert created.params["line_items"][0]["price"] == b.price_pro
    session, _ = b.stripe.complete_checkout(session_id)
    assert (
        await b.deliver(b.stripe.event("checkout.session.completed", session))
    ).status_code == 200

    allowed = await send()
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["x-ratelimit-limit"] == "100"
    view = await overview(alice, org_id)
    assert (view["plan"], view["status"], view["usage"]["events_limit"]) == (
        "pro",
        "active",
        100_000,
    )
    assert [(c["from_plan"], c["to_plan"]) for c in view["changes"]] == [("free", "pro")]


async def test_forged_stale_and_unsigned_webhooks_are_refused(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    session, _ = b.stripe.complete_checkout(await checkout(b, alice, org_id))
    event = b.stripe.event("checkout.session.completed", session)
    payload, signature = b.stripe.webhook(event)

    forged = StripeStandIn.sign(payload, "whsec_not_the_secret")
    stale = b.stripe.webhook(event, timestamp=int(datetime.now(UTC).timestamp()) - 301)[1]
    for headers in ({"stripe-signature": forged}, {"stripe-signature": stale}, {}):
        response = await b.stack.client.post("/webhooks/stripe", content=payload, headers=headers)
        assert response.status_code == 400, headers
        assert response.json()["error"]["code"] == "ERR_INVALID_WEBHOOK"
    tampered = payload.replace(b'"complete"', b'"open"')
    response = await b.stack.client.post(
        "/webhooks/stripe", content=tampered, headers={"stripe-signature": signature}
    )
    assert response.status_code == 400
    assert (await overview(alice, org_id))["plan"] == "free"


async def test_the_same_event_twice_and_concurrently_is_processed_once(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    session, _ = b.stripe.complete_checkout(await checkout(b, alice, org_id))
    event = b.stripe.event("checkout.session.completed", session)
    results = await asyncio.gather(*(b.deliver(event) for _ in range(6)))
    assert sorted(r.json()["result"] for r in results) == ["applied"] + ["duplicate"] * 5
    assert (await b.deliver(event)).json()["result"] == "duplicate"  # a redelivery, later
    assert len((await overview(alice, org_id))["changes"]) == 1


async def test_subscription_updated_before_checkout_completed(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    session, sub = b.stripe.complete_checkout(await checkout(b, alice, org_id, "business"))
    now = int(datetime.now(UTC).timestamp())
    first = await b.deliver(b.stripe.event("customer.subscription.updated", sub, created=now))
    assert first.json()["result"] == "applied"
    assert (await overview(alice, org_id))["plan"] == "business"
    late = await b.deliver(b.stripe.event("checkout.session.completed", session, created=now - 5))
    assert late.status_code == 200
    view = await overview(alice, org_id)
    assert view["plan"] == "business"
    assert [(c["from_plan"], c["to_plan"]) for c in view["changes"]] == [("free", "business")]


async def test_an_older_subscription_state_arriving_late_changes_nothing(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    sub = await subscribe(b, alice, org_id, "pro")
    now = int(datetime.now(UTC).timestamp())
    cancelling = b.stripe.update_subscription(sub["id"], cancel_at_period_end=True)
    assert (
        await b.deliver(
            b.stripe.event("customer.subscription.updated", cancelling, created=now + 20)
        )
    ).json()["result"] == "applied"
    old = dict(cancelling, cancel_at_period_end=False)
    assert (
        await b.deliver(b.stripe.event("customer.subscription.updated", old, created=now + 10))
    ).json()["result"] == "stale"
    view = await overview(alice, org_id)
    assert (view["plan"], view["pending_plan"], view["cancel_at_period_end"]) == (
        "pro",
        "free",
        True,
    )


async def test_cancel_at_period_end_keeps_the_plan_until_then(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    sub = await subscribe(b, alice, org_id, "pro")
    cancelling = b.stripe.update_subscription(sub["id"], cancel_at_period_end=True)
    await b.deliver(b.stripe.event("customer.subscription.updated", cancelling))
    view = await overview(alice, org_id)
    assert (view["plan"], view["pending_plan"]) == ("pro", "free")
    period_end = datetime.fromisoformat(view["pending_at"].replace("Z", "+00:00"))

    subscriptions = await settle(b.stack.container.subscriptions())
    assert await subscriptions.apply_due(period_end - timedelta(seconds=1)) == []
    changes = await subscriptions.apply_due(period_end)
    assert [(c.from_plan, c.to_plan, c.reason) for c in changes] == [
        (Plan.PRO, Plan.FREE, "period ended")
    ]
    assert (await overview(alice, org_id))["plan"] == "free"
    # Stripe ends the subscription then too: nothing more changes.
    ended = b.stripe.update_subscription(sub["id"], status="canceled")
    await b.deliver(b.stripe.event("customer.subscription.deleted", ended))
    assert len((await overview(alice, org_id))["changes"]) == 2


async def test_payment_failure_grace_period_then_free(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    sub = await subscribe(b, alice, org_id, "business")
    b.stack.clock.advance(1)  # the payment mail is then the newest to alice
    failed = b.stripe.event("invoice.payment_failed", b.stripe.invoice(sub["id"], paid=False))
    assert (await b.deliver(failed)).status_code == 200
    view = await overview(alice, org_id)
    grace_until = datetime.fromisoformat(view["grace_until"].replace("Z", "+00:00"))
    assert view["plan"] == "business"
    assert grace_until == b.stack.clock.now() + timedelta(days=7)
    link = await b.stack.last_link_to("alice@example.com")
    assert link.endswith(f"/orgs/{org_id}/billing")
    # A retried failure does not extend the grace period.
    b.stack.clock.advance(3600)
    await b.deliver(
        b.stripe.event("invoice.payment_failed", b.stripe.invoice(sub["id"], paid=False))
    )
    assert (await overview(alice, org_id))["grace_until"] == view["grace_until"]

    subscriptions = await settle(b.stack.container.subscriptions())
    changes = await subscriptions.apply_due(grace_until)
    assert [(c.to_plan, c.reason) for c in changes] == [(Plan.FREE, "grace period ended")]
    assert (await overview(alice, org_id))["plan"] == "free"


async def test_a_paid_invoice_ends_the_grace_period(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    sub = await subscribe(b, alice, org_id, "pro")
    await b.deliver(
        b.stripe.event("invoice.payment_failed", b.stripe.invoice(sub["id"], paid=False))
    )
    await b.deliver(b.stripe.event("invoice.paid", b.stripe.invoice(sub["id"], paid=True)))
    view = await overview(alice, org_id)
    assert (view["plan"], view["grace_until"]) == ("pro", None)


async def test_quota_mails_at_80_and_100_percent_once_under_concurrent_ingestion(
    billing: Billing,
) -> None:
    b = billing
    _alice, org_id = await owner_with_org(b)
    await b.stack.tenancy.set_plan(org_id, Plan.ENTERPRISE, custom_events_per_month=100)
    created = await b.stack.tenancy.create_app(org_id, "prod", Environment.PRODUCTION)
    now = b.stack.clock.now()
    requests = [
        signed_request(
            org_id,
            created.app.id,
            created.issued.secret,
            batch_body([sdk_event(now) for _ in range(10)]),
            now=now,
        )
        for _ in range(15)
    ]
    responses = await asyncio.gather(*(b.stack.send(r) for r in requests))
    assert sorted(r.status_code for r in responses) == [200] * 10 + [429] * 5
    outbox = await settle(b.stack.container.outbox())
    kinds = sorted(m.message.kind for m in await outbox.recent(limit=50, to="alice@example.com"))
    assert kinds == ["magic_link", "quota_100", "quota_80"]


async def test_only_owners_reach_billing(billing: Billing) -> None:
    b = billing
    alice, org_id = await owner_with_org(b)
    await alice.post(
        f"/api/v1/orgs/{org_id}/invites", json={"email": "adam@example.com", "role": "admin"}
    )
    token = (await b.stack.last_link_to("adam@example.com")).rsplit("token=", 1)[1]
    adam = await b.stack.browser("adam@example.com")
    assert (await adam.post("/api/v1/invites/accept", json={"token": token})).status_code == 201
    for method, path in (("GET", ""), ("POST", "/checkout"), ("POST", "/portal")):
        response = await adam.request(
            method, f"/api/v1/orgs/{org_id}/billing{path}", json={"plan": "pro"}
        )
        assert response.status_code == 403, path
    portal = await alice.post(f"/api/v1/orgs/{org_id}/billing/portal")
    assert portal.status_code == 200
    assert portal.json()["url"].startswith("https://billing.stripe.com/")


async def test_without_stripe_billing_answers_503_and_the_rest_works(stack: Stack) -> None:
    alice = await stack.browser("alice@example.com")
    org_id = (await alice.post("/api/v1/orgs", json={"name": "Acme"})).json()["org_id"]
    for method, path in (("GET", ""), ("POST", "/checkout"), ("POST", "/portal")):
        response = await alice.request(
            method, f"/api/v1/orgs/{org_id}/billing{path}", json={"plan": "pro"}
        )
        assert response.status_code == 503, path
        assert response.json()["error"]["code"] == "ERR_NOT_CONFIGURED"
    webhook = await stack.client.post(
        "/webhooks/stripe", content=b"{}", headers={"stripe-signature": "t=1,v1=x"}
    )
    assert webhook.status_code == 503
    assert (await alice.get(f"/api/v1/orgs/{org_id}/usage")).status_code == 200
