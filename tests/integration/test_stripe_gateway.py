"""The Stripe adapter against a local Stripe that speaks Stripe's wire format.

The official library does the HTTP and the webhook verification; these tests check what it
sends (read back from the stand-in), how Stripe's objects of both API-version shapes become
domain values, and that every failure becomes the port's domain errors.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from tests.support.stripe import API_VERSION, LEGACY_API_VERSION, StripeStandIn
from tkcloud_adapters.stripe import StripePaymentGateway
from tkcloud_domain.billing import Subscription, SubscriptionStatus
from tkcloud_domain.errors import InvalidWebhook, ServiceUnavailable, ValidationFailed
from tkcloud_domain.plans import Plan

PRO_PRICE, BUSINESS_PRICE = "price_pro_monthly", "price_business_monthly"
BILLING_PAGE = "https://cloud.example.com/orgs/org_1/billing"
AS_OF = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with StripeStandIn() as standin:
        standin.add_price(PRO_PRICE, unit_amount=2900)
        standin.add_price(BUSINESS_PRICE, unit_amount=9900)
        yield standin


@pytest.fixture
async def gateway(standin: StripeStandIn) -> AsyncIterator[StripePaymentGateway]:
    gateway = gateway_for(standin.url, standin.secret_key, standin.webhook_secret)
    yield gateway
    await gateway.aclose()


def gateway_for(
    url: str,
    api_key: str = "sk_test_x",
    webhook_secret: str = "whsec_x",  # noqa: S107 (a test double's own)
    **options: Any,
) -> StripePaymentGateway:
    prices = {Plan.PRO: PRO_PRICE, Plan.BUSINESS: BUSINESS_PRICE}
    return StripePaymentGateway(api_key, webhook_secret, prices, api_base=url, **options)


async def checkout(gateway: StripePaymentGateway, plan: Plan = Plan.PRO) -> str:
    """A customer of org_1 and a Checkout Session for the plan; returns the session id."""
    customer = await gateway.ensure_customer(
        org_id="org_1", org_name="Acme", email="owner@acme.test", existing=None
    )
    url = await checkout_url(gateway, customer, plan)
    return url.rsplit("/", 1)[1]


async def checkout_url(gateway: StripePaymentGateway, customer: str, plan: Plan) -> str:
    return await gateway.checkout_url(
        customer_id=customer,
        org_id="org_1",
        plan=plan,
        success_url=f"{BILLING_PAGE}?checkout=success",
        cancel_url=f"{BILLING_PAGE}?checkout=cancelled",
    )


async def subscribed(
    gateway: StripePaymentGateway, standin: StripeStandIn, status: str = "active"
) -> dict[str, Any]:
    _, subscription = standin.complete_checkout(await checkout(gateway), status=status)
    return subscription


# --- customers, checkout, portal ---------------------------------------------------------------


async def test_a_new_customer_carries_the_org_id_and_is_created_with_the_secret_key(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    customer = await gateway.ensure_customer(
        org_id="org_1", org_name="Acme", email="owner@acme.test", existing=None
    )

    assert customer.startswith("cus_")
    [request] = standin.received
    assert (request.method, request.path) == ("POST", "/v1/customers")
    assert request.params == {
        "name": "Acme",
        "email": "owner@acme.test",
        "metadata": {"org_id": "org_1"},
    }
    assert request.headers["authorization"] == f"Bearer {standin.secret_key}"
    assert request.headers["stripe-version"]  # the library pins the version it was built for


async def test_a_customer_without_an_email_is_created_without_one(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    await gateway.ensure_customer(org_id="org_2", org_name="Solo", email=None, existing=None)

    assert standin.received[0].params == {"name": "Solo", "metadata": {"org_id": "org_2"}}


async def test_an_existing_customer_is_reused_without_asking_stripe(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    customer = await gateway.ensure_customer(
        org_id="org_1", org_name="Acme", email=None, existing="cus_existing"
    )

    assert customer == "cus_existing"
    assert standin.received == []


@pytest.mark.parametrize(
    ("plan", "price"), [(Plan.PRO, PRO_PRICE), (Plan.BUSINESS, BUSINESS_PRICE)]
)
async def test_checkout_subscribes_the_customer_to_the_plans_price_for_the_org(
    standin: StripeStandIn, gateway: StripePaymentGateway, plan: Plan, price: str
) -> None:
    customer = await gateway.ensure_customer(
        org_id="org_1", org_name="Acme", email=None, existing=None
    )

    url = await checkout_url(gateway, customer, plan)

    assert url.startswith("https://checkout.stripe.com/c/pay/cs_test_")
    request = standin.received[-1]
    assert (request.method, request.path) == ("POST", "/v1/checkout/sessions")
    assert request.params == {
        "mode": "subscription",
        "customer": customer,
        "line_items": [{"price": price, "quantity": "1"}],  # form values are strings
        "client_reference_id": "org_1",
        "subscription_data": {"metadata": {"org_id": "org_1"}},
        "success_url": f"{BILLING_PAGE}?checkout=success",
        "cancel_url": f"{BILLING_PAGE}?checkout=cancelled",
    }


@pytest.mark.parametrize("plan", [Plan.FREE, Plan.ENTERPRISE])
async def test_checkout_for_a_plan_without_a_price_is_refused_before_asking_stripe(
    standin: StripeStandIn, gateway: StripePaymentGateway, plan: Plan
) -> None:
    with pytest.raises(ValidationFailed):
        await checkout_url(gateway, "cus_1", plan)
    assert standin.received == []


async def test_the_portal_session_returns_to_the_given_page(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    customer = await gateway.ensure_customer(
        org_id="org_1", org_name="Acme", email=None, existing=None
    )

    url = await gateway.portal_url(customer_id=customer, return_url=BILLING_PAGE)

    assert url.startswith("https://billing.stripe.com/p/session/test_")
    request = standin.received[-1]
    assert (request.method, request.path) == ("POST", "/v1/billing_portal/sessions")
    assert request.params == {"customer": customer, "return_url": BILLING_PAGE}


# --- subscriptions -------------------------------------------------------------------------------


async def test_a_subscription_is_read_with_its_plan_period_and_flags(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    created = await subscribed(gateway, standin)

    found = await gateway.subscription(created["id"], as_of=AS_OF)

    period_end = created["items"]["data"][0]["current_period_end"]  # today's shape
    assert found == Subscription(
        id=created["id"],
        customer_id=created["customer"],
        status=SubscriptionStatus.ACTIVE,
        plan=Plan.PRO,
        current_period_end=datetime.fromtimestamp(period_end, tz=UTC),
        cancel_at_period_end=False,
        as_of=AS_OF,
    )
    assert standin.received[-1].path == f"/v1/subscriptions/{created['id']}"


async def test_a_price_we_do_not_sell_maps_to_no_plan(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    created = await subscribed(gateway, standin)
    standin.update_subscription(created["id"], price="price_legacy_plan")

    found = await gateway.subscription(created["id"], as_of=AS_OF)

    assert found.plan is None


async def test_a_plan_change_and_a_status_change_are_read_back(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    created = await subscribed(gateway, standin)
    standin.update_subscription(created["id"], price=BUSINESS_PRICE, status="past_due")

    found = await gateway.subscription(created["id"], as_of=AS_OF)

    assert (found.plan, found.status) == (Plan.BUSINESS, SubscriptionStatus.PAST_DUE)


@pytest.mark.parametrize("how", ["flag", "cancel_at"])
async def test_a_cancellation_at_the_period_end_is_read_either_way(
    standin: StripeStandIn, gateway: StripePaymentGateway, how: str
) -> None:
    created = await subscribed(gateway, standin)
    period_end = created["items"]["data"][0]["current_period_end"]
    # The flag, or (flexible billing mode) a cancel_at at the end of the period.
    change = {"cancel_at_period_end": True} if how == "flag" else {"cancel_at": period_end}
    standin.update_subscription(created["id"], **change)

    found = await gateway.subscription(created["id"], as_of=AS_OF)

    assert found.cancel_at_period_end is True


async def test_an_unknown_subscription_is_service_unavailable_with_stripes_answer_as_cause(
    gateway: StripePaymentGateway,
) -> None:
    with pytest.raises(ServiceUnavailable) as unavailable:
        await gateway.subscription("sub_missing", as_of=AS_OF)

    assert isinstance(unavailable.value.__cause__, stripe.InvalidRequestError)
    assert unavailable.value.__cause__.http_status == 404


# --- webhooks ------------------------------------------------------------------------------------


async def test_a_completed_checkout_event_names_the_org_customer_and_subscription(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    session, subscription = standin.complete_checkout(await checkout(gateway))
    event = standin.event("checkout.session.completed", session, created=1_777_000_000)

    parsed = gateway.parse_webhook(*standin.webhook(event))

    assert parsed.id == event["id"]
    assert parsed.type == "checkout.session.completed"
    assert parsed.created == datetime.fromtimestamp(1_777_000_000, tz=UTC)
    assert parsed.created.tzinfo is UTC
    assert parsed.customer_id == session["customer"]
    assert parsed.subscription_id == subscription["id"]
    assert parsed.org_id == "org_1"  # client_reference_id
    assert parsed.subscription is None  # a session does not carry the subscription's state


@pytest.mark.parametrize("api_version", [API_VERSION, LEGACY_API_VERSION])
async def test_a_subscription_event_carries_the_subscription_as_of_the_event(
    standin: StripeStandIn, gateway: StripePaymentGateway, api_version: str
) -> None:
    # Events come in the account's version: the period end is on the item since 2025-03-31,
    # on the subscription before.
    standin.api_version = api_version
    created = await subscribed(gateway, standin)
    updated = standin.update_subscription(created["id"], cancel_at_period_end=True)
    period_end = (updated["items"]["data"][0] | updated)["current_period_end"]
    event = standin.event("customer.subscription.updated", updated, created=1_777_000_500)

    parsed = gateway.parse_webhook(*standin.webhook(event))

    assert parsed.org_id == "org_1"  # from the metadata checkout gave the subscription
    assert parsed.subscription_id == created["id"]
    assert parsed.customer_id == created["customer"]
    assert parsed.subscription == Subscription(
        id=created["id"],
        customer_id=created["customer"],
        status=SubscriptionStatus.ACTIVE,
        plan=Plan.PRO,
        current_period_end=datetime.fromtimestamp(period_end, tz=UTC),
        cancel_at_period_end=True,
        as_of=datetime.fromtimestamp(1_777_000_500, tz=UTC),
    )


@pytest.mark.parametrize("api_version", [API_VERSION, LEGACY_API_VERSION])
@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_failed"])
async def test_an_invoice_event_names_its_subscription_in_either_shape(
    standin: StripeStandIn, gateway: StripePaymentGateway, api_version: str, event_type: str
) -> None:
    standin.api_version = api_version
    subscription = await subscribed(gateway, standin)
    invoice = standin.invoice(subscription["id"], paid=event_type == "invoice.paid")
    assert ("parent" in invoice) is (api_version == API_VERSION)

    parsed = gateway.parse_webhook(*standin.webhook(standin.event(event_type, invoice)))

    assert parsed.subscription_id == subscription["id"]
    assert parsed.customer_id == subscription["customer"]
    assert parsed.org_id == "org_1"
    assert parsed.subscription is None


async def test_a_webhook_inside_the_tolerance_is_accepted(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    event = standin.event("customer.created", {"id": "cus_1", "object": "customer"})

    parsed = gateway.parse_webhook(*standin.webhook(event, timestamp=int(time.time()) - 290))

    assert (parsed.type, parsed.customer_id, parsed.org_id) == ("customer.created", "cus_1", None)


def a_customer_event(standin: StripeStandIn) -> bytes:
    event = standin.event("customer.created", {"id": "cus_1", "object": "customer"})
    return json.dumps(event).encode()


async def test_a_forged_signature_is_refused(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    payload = a_customer_event(standin)

    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(payload, standin.sign(payload, "whsec_someone_else"))


async def test_a_body_changed_after_signing_is_refused(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    payload = a_customer_event(standin)
    signature = standin.sign(payload, standin.webhook_secret)

    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(payload.replace(b"cus_1", b"cus_2"), signature)


async def test_a_stale_signature_is_refused(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    payload = a_customer_event(standin)
    old = standin.sign(payload, standin.webhook_secret, timestamp=int(time.time()) - 301)

    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(payload, old)


@pytest.mark.parametrize("header", [None, "", "garbage", "t=1,v0=abc"])
async def test_a_missing_or_unreadable_signature_header_is_refused(
    standin: StripeStandIn, gateway: StripePaymentGateway, header: str | None
) -> None:
    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(a_customer_event(standin), header)


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'"an event"',
        b'{"id": "evt_1", "object": "event", "type": "customer.created"}',  # no data, no created
        b'{"id": "evt_1", "object": "event", "type": "customer.subscription.updated",'
        b' "created": 1, "data": {"object": {"id": "sub_1", "object": "subscription"}}}',
    ],
)
async def test_a_correctly_signed_body_that_is_not_an_event_is_refused(
    standin: StripeStandIn, gateway: StripePaymentGateway, payload: bytes
) -> None:
    with pytest.raises(InvalidWebhook):
        gateway.parse_webhook(payload, standin.sign(payload, standin.webhook_secret))


# --- Stripe failing ------------------------------------------------------------------------------


async def test_stripe_down_is_service_unavailable_quickly(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    standin.stop()

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as unavailable:
        await gateway.ensure_customer(org_id="org_1", org_name="Acme", email=None, existing=None)

    assert unavailable.value.dependency == "stripe"
    assert isinstance(unavailable.value.__cause__, stripe.APIConnectionError)
    # Refused at once; the one retry waits about half a second, never the 10 s timeout.
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, stripe.RateLimitError), (500, stripe.APIError), (503, stripe.APIError)],
)
async def test_stripe_failing_is_service_unavailable(
    standin: StripeStandIn,
    gateway: StripePaymentGateway,
    status: int,
    error: type[stripe.StripeError],
) -> None:
    standin.failing_with = status

    with pytest.raises(ServiceUnavailable) as unavailable:
        await gateway.portal_url(customer_id="cus_1", return_url=BILLING_PAGE)

    assert isinstance(unavailable.value.__cause__, error)


async def test_a_create_is_retried_once_with_the_same_idempotency_key(
    standin: StripeStandIn, gateway: StripePaymentGateway
) -> None:
    standin.failing_with = 500

    with pytest.raises(ServiceUnavailable):
        await gateway.ensure_customer(org_id="org_1", org_name="Acme", email=None, existing=None)

    first, retry = standin.received
    assert first.path == retry.path == "/v1/customers"
    # Had the first attempt created the customer, Stripe would answer the retry with it.
    assert first.headers["idempotency-key"] == retry.headers["idempotency-key"]


async def test_a_wrong_api_key_is_service_unavailable_and_keeps_stripes_refusal(
    standin: StripeStandIn,
) -> None:
    gateway = gateway_for(standin.url, api_key="sk_test_revoked0000000000")
    try:
        with pytest.raises(ServiceUnavailable) as unavailable:
            await gateway.ensure_customer(org_id="o", org_name="O", email=None, existing=None)
    finally:
        await gateway.aclose()

    cause = unavailable.value.__cause__
    assert isinstance(cause, stripe.AuthenticationError)
    assert cause.http_status == 401
    assert "Invalid API Key provided" in str(cause.user_message)


async def test_stripe_not_answering_times_out_without_blocking_the_event_loop() -> None:
    # A listening socket nobody accepts from: the request waits for an answer that never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        gateway = gateway_for(
            f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3, max_network_retries=0
        )
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        try:
            with pytest.raises(ServiceUnavailable):
                await gateway.subscription("sub_1", as_of=AS_OF)
        finally:
            ticker.cancel()
            await gateway.aclose()

    assert time.monotonic() - started < 2.0
    assert ticks >= 10  # the loop kept running other tasks while the request waited


async def test_the_stand_in_runs_as_an_async_context_manager() -> None:
    async with StripeStandIn() as standin:
        gateway = gateway_for(standin.url, standin.secret_key)
        customer = await gateway.ensure_customer(
            org_id="org_9", org_name="Nine", email=None, existing=None
        )
        await gateway.aclose()

    assert customer.startswith("cus_")
