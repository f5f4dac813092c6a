"""`POST /webhooks/stripe`: Stripe's events, verified with its signature on the raw body."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.di import NamedDependency
from litestar.params import SkipValidation

from tkcloud_application.billing.subscriptions import Subscriptions
from tkcloud_domain.errors import PayloadTooLarge

MAX_WEBHOOK_BYTES = 1024 * 1024  # Stripe events are a few KiB


@post(
    "/webhooks/stripe",
    status_code=200,
    request_max_body_size=MAX_WEBHOOK_BYTES,
    summary="Stripe webhook endpoint",
    tags=["billing"],
)
async def stripe_webhook(
    request: Request[Any, Any, Any],
    subscriptions: NamedDependency[SkipValidation[Subscriptions]],
) -> dict[str, object]:
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge("Webhook body exceeds 1 MiB")
    result = await subscriptions.handle_webhook(body, request.headers.get("stripe-signature"))
    return {"received": True, "result": result}
