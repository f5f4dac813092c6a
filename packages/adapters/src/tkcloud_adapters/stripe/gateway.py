"""The `PaymentGateway` port on Stripe: customers, Checkout, the Customer Portal, subscriptions
and webhook events, through the official library's async methods (on httpx).

Stripe's answers become domain values here and its failures domain errors: a webhook that
fails verification or is not an event is `InvalidWebhook`; anything else Stripe raises (no
connection, a timeout, a 5xx, a rate limit, a refused key or request) is
`ServiceUnavailable("stripe")` with the library's error kept as the cause, for the logs.

Objects are read as plain dicts, not through the library's typed attributes: the typed classes
follow the library's pinned API version, while events arrive in the version of the account or
of the webhook endpoint, and two fields we read moved in 2025 (`_period_end`, `_subscription_id`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import stripe
from stripe.params import CustomerCreateParams

from tkcloud_application.ports.billing import PaymentGateway, WebhookEvent
from tkcloud_domain.billing import Subscription, SubscriptionStatus
from tkcloud_domain.errors import InvalidWebhook, ServiceUnavailable, ValidationFailed
from tkcloud_domain.plans import Plan

DEPENDENCY = "stripe"
WEBHOOK_TOLERANCE_SECONDS = 300


class _Unreadable(Exception):
    """Stripe sent an object without a field we need, or with a value we do not know."""


class StripePaymentGateway:
    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        prices: dict[Plan, str],
        *,
        api_base: str | None = None,
        timeout: float = 10.0,
        max_network_retries: int = 1,
    ) -> None:
        """`prices`: the Stripe price id of each plan sold through Checkout.

        One retry covers a dropped pooled connection or a 409 lock conflict; the library sends
        an idempotency key with it, so a retried create never makes two objects. More would
        hold a request (or Stripe's webhook delivery) for seconds: both are retried by their
        sender anyway.
        """
        self._webhook_secret = webhook_secret
        self._prices = dict(prices)
        self._plans = {price: plan for plan, price in prices.items()}
        # httpx's AsyncClient only: the sync methods would block the event loop, and without
        # allow_sync_methods a stray sync call fails loudly instead.
        self._http = stripe.HTTPXClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    async def aclose(self) -> None:
        """Close the connection pool (at shutdown)."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # unannotated upstream

    async def ensure_customer(
        self, *, org_id: str, org_name: str, email: str | None, existing: str | None
    ) -> str:
        if existing:
            return existing
        params: CustomerCreateParams = {"name": org_name, "metadata": {"org_id": org_id}}
        if email:
            params["email"] = email
        with _stripe_errors():
            customer = await self._client.v1.customers.create_async(params)
        return customer.id

    async def checkout_url(
        self, *, customer_id: str, org_id: str, plan: Plan, success_url: str, cancel_url: str
    ) -> str:
        price = self._prices.get(plan)
        if not price:
            raise ValidationFailed(
                f"The {plan.value} plan is not sold through checkout", details={"field": "plan"}
            )
        with _stripe_errors():
            session = await self._client.v1.checkout.sessions.create_async(
                {
                    "mode": "subscription",
                    "customer": customer_id,
                    "line_items": [{"price": price, "quantity": 1}],
                    # Both carry the org back: the session's in checkout.session.completed, the
                    # subscription's in every customer.subscription.* event after it.
                    "client_reference_id": org_id,
                    "subscription_data": {"metadata": {"org_id": org_id}},
                    "success_url": success_url,
                    "cancel_url": cancel_url,
                }
            )
        if not session.url:  # only embedded or custom UI sessions come without one
            raise ServiceUnavailable(DEPENDENCY)
        return session.url

    async def portal_url(self, *, customer_id: str, return_url: str) -> str:
        with _stripe_errors():
            session = await self._client.v1.billing_portal.sessions.create_async(
                {"customer": customer_id, "return_url": return_url}
            )
        return session.url

    async def subscription(self, subscription_id: str, *, as_of: datetime) -> Subscription:
        with _stripe_errors():
            found = await self._client.v1.subscriptions.retrieve_async(subscription_id)
        try:
            return self._subscription(found.to_dict(), as_of)
        except _Unreadable as exc:
            raise ServiceUnavailable(DEPENDENCY) from exc

    def parse_webhook(self, payload: bytes, signature: str | None) -> WebhookEvent:
        try:
            # The library's own verification: HMAC-SHA256 over "<t>.<body>" with any v1
            # signature of the header matching, and t no older than the tolerance.
            event = stripe.Webhook.construct_event(
                payload, signature, self._webhook_secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError as exc:
            raise InvalidWebhook(str(exc.user_message or exc)) from exc
        # A correctly signed body that is not JSON or not UTF-8 (ValueError), or JSON but not
        # an object (the library fails on it with AttributeError or TypeError).
        except (ValueError, AttributeError, TypeError) as exc:
            raise InvalidWebhook("The webhook body is not a Stripe event") from exc
        try:
            return self._event(event.to_dict())
        except _Unreadable as exc:
            raise InvalidWebhook(f"The webhook body is not a Stripe event ({exc})") from exc

    # --- reading Stripe's objects -----------------------------------------------------------

    def _event(self, event: Mapping[str, Any]) -> WebhookEvent:
        event_type, created = _str(event, "type"), _int(event, "created")
        obj = _object(_object(event.get("data")).get("object"))
        kind = obj.get("object")
        at = datetime.fromtimestamp(created, tz=UTC)
        return WebhookEvent(
            id=_str(event, "id"),
            type=event_type,
            created=at,
            customer_id=_id_of(obj.get("id" if kind == "customer" else "customer")),
            subscription_id=_subscription_id(obj),
            org_id=_org_id(obj),
            subscription=(
                self._subscription(obj, at)
                if event_type.startswith("customer.subscription.")
                else None
            ),
        )

    def _subscription(self, obj: Mapping[str, Any], as_of: datetime) -> Subscription:
        items = _object(obj.get("items")).get("data")
        item = _object(items[0]) if isinstance(items, list) and items else {}
        price = _id_of(item.get("price"))
        period_end = _period_end(obj, item)
        cancel_at = obj.get("cancel_at")
        try:
            status = SubscriptionStatus(_str(obj, "status"))
        except ValueError as exc:
            raise _Unreadable(f"unknown subscription status {obj.get('status')!r}") from exc
        customer = _id_of(obj.get("customer"))
        if customer is None:
            raise _Unreadable("a subscription without a customer")
        return Subscription(
            id=_str(obj, "id"),
            customer_id=customer,
            status=status,
            plan=self._plans.get(price) if price is not None else None,
            current_period_end=datetime.fromtimestamp(period_end, tz=UTC),
            # Subscriptions in flexible billing mode may be set to end at the period's end
            # with cancel_at instead of the flag: to us both mean the same.
            cancel_at_period_end=obj.get("cancel_at_period_end") is True
            or (isinstance(cancel_at, int) and cancel_at <= period_end),
            as_of=as_of,
        )


def _period_end(subscription: Mapping[str, Any], item: Mapping[str, Any]) -> int:
    # Since API version 2025-03-31 the period is on each subscription item; before, on the
    # subscription itself.
    on_item = item.get("current_period_end") is not None
    return _int(item if on_item else subscription, "current_period_end")


def _subscription_id(obj: Mapping[str, Any]) -> str | None:
    if obj.get("object") == "subscription":
        return _id_of(obj.get("id"))
    # An invoice names its subscription under parent.subscription_details since API version
    # 2025-03-31, as `subscription` before (checkout sessions still do).
    details = _object(_object(obj.get("parent")).get("subscription_details"))
    return _id_of(obj.get("subscription")) or _id_of(details.get("subscription"))


def _org_id(obj: Mapping[str, Any]) -> str | None:
    candidates = [_object(obj.get("metadata")).get("org_id")]
    if obj.get("object") == "checkout.session":
        candidates.insert(0, obj.get("client_reference_id"))
    if obj.get("object") == "invoice":
        # An invoice carries its subscription's metadata, where checkout put the org id.
        for details in (
            _object(_object(obj.get("parent")).get("subscription_details")),
            _object(obj.get("subscription_details")),  # before 2025-03-31
        ):
            candidates.append(_object(details.get("metadata")).get("org_id"))
    return next((value for value in candidates if isinstance(value, str) and value), None)


def _id_of(value: object) -> str | None:
    """An id from a field that holds either the id or, when expanded, the object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _object(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise _Unreadable(f"{key}: expected a string")
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Unreadable(f"{key}: expected an integer")
    return value


@contextmanager
def _stripe_errors() -> Iterator[None]:
    try:
        yield
    except stripe.StripeError as exc:
        # APIConnectionError (refused, timeout, reset), APIError (5xx or an unreadable
        # answer), RateLimitError, AuthenticationError and the 4xx InvalidRequestError alike:
        # none is the user's to fix, and the cause says which one it was.
        raise ServiceUnavailable(DEPENDENCY) from exc


if TYPE_CHECKING:  # mypy checks the adapter against its port here
    _port: PaymentGateway = StripePaymentGateway("sk_test", "whsec", {})
