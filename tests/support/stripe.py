"""A local Stripe for tests: the endpoints billing calls (customers, Checkout Sessions, Customer
Portal sessions, subscriptions), served over real HTTP on 127.0.0.1, plus what Stripe does on
its own side (a customer completing checkout, a subscription changing, signed webhook events).

It runs a stdlib HTTP server in a thread, so it answers while an async test awaits on its own
event loop. It speaks Stripe's wire format: form-encoded requests with nested keys
(`line_items[0][price]`), Bearer auth with the secret key, idempotency keys, JSON objects with
Stripe's `object` names and id prefixes, and Stripe's error body (`{"error": {"type": ...}}`).
Objects are rendered in the request's `Stripe-Version` and events in the account's
`api_version`, in the shape of that version: the subscription's period moved to its items, and
an invoice's subscription under `parent`, in 2025-03-31.

    async with StripeStandIn() as standin:       # or: with StripeStandIn() as standin:
        price = standin.add_price("price_pro")
        gateway = StripePaymentGateway(standin.secret_key, standin.webhook_secret,
                                       {Plan.PRO: price}, api_base=standin.url)
        url = await gateway.checkout_url(...)     # the session's id is the url's last part
        session, subscription = standin.complete_checkout(url.rsplit("/", 1)[1])
        payload, signature = standin.webhook(standin.event("checkout.session.completed", session))
        event = gateway.parse_webhook(payload, signature)
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.support.standin import ThreadedStandIn

API_VERSION = "2025-03-31.basil"  # the first version with today's shapes
LEGACY_API_VERSION = "2024-06-20"  # a version with the shapes from before
_SHAPES_CHANGED = "2025-03-31"
_PERIOD = 30 * 86_400  # Stripe bills monthly on the same day; tests only read the value back

Answer = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    params: dict[str, Any]  # the decoded form (or query): nested, values as sent (strings)
    headers: dict[str, str]


@dataclass
class _Subscription:
    """Stripe's subscription state, rendered per API version on the way out."""

    id: str
    customer: str
    price: str
    status: str
    created: int
    current_period_end: int
    metadata: dict[str, str]
    cancel_at_period_end: bool = False
    cancel_at: int | None = None
    item_id: str = field(default_factory=lambda: _new_id("si"))


class StripeStandIn(ThreadedStandIn):
    service = "Stripe"

    def __init__(
        self,
        *,
        secret_key: str = "sk_test_standin" + "0" * 24,
        webhook_secret: str = "whsec_standin" + "0" * 19,
        api_version: str = API_VERSION,
    ) -> None:
        super().__init__()
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        # The account's API version: events are rendered in it, and so are answers to
        # requests that do not send a Stripe-Version header.
        self.api_version = api_version
        # When set, every endpoint answers this status, as Stripe does during an incident.
        self.failing_with: int | None = None
        self.received: list[ReceivedRequest] = []
        self._customers: dict[str, dict[str, Any]] = {}
        self._prices: dict[str, dict[str, Any]] = {}
        self._sessions: dict[str, dict[str, Any]] = {}
        self._session_lines: dict[str, list[dict[str, Any]]] = {}
        self._subscription_data: dict[str, dict[str, Any]] = {}
        self._subscriptions: dict[str, _Subscription] = {}
        self._idempotent: dict[str, Answer] = {}
        # Handler threads and the test touch the same dicts.
        self._lock = threading.RLock()

    # --- Stripe's side: what a dashboard user, a customer or time does ---------------------

    def add_price(self, price_id: str | None = None, *, unit_amount: int = 2900) -> str:
        """A monthly USD price (as made in the dashboard); returns its id."""
        price_id = price_id or _new_id("price")
        with self._lock:
            self._prices.setdefault(price_id, _price_json(price_id, unit_amount))
        return price_id

    def complete_checkout(
        self, session_id: str, *, status: str = "active"
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The customer pays: the session completes and its subscription exists. Returns both
        objects as the checkout.session.completed and customer.subscription.created events
        carry them."""
        with self._lock:
            session = self._sessions[session_id]
            if session["status"] != "open" or session["mode"] != "subscription":
                raise ValueError(f"{session_id} is not an open subscription checkout")
            now, metadata = _now(), dict(self._subscription_data[session_id].get("metadata") or {})
            price = self._session_lines[session_id][0]["price"]
            # (A session without a customer would make one; billing always passes its own.)
            sub = _Subscription(
                _new_id("sub"), session["customer"], price, status, now, now + _PERIOD, metadata
            )
            self._subscriptions[sub.id] = sub
            paid = status in ("active", "trialing")
            session |= {
                "status": "complete",
                "payment_status": "paid" if paid else "unpaid",
                "subscription": sub.id,
                "invoice": _new_id("in"),
                "url": None,  # a completed session's page is gone
            }
            return copy.deepcopy(session), self._subscription_json(sub, self.api_version)

    def update_subscription(self, subscription_id: str, **changes: Any) -> dict[str, Any]:
        """Change a subscription as the portal, a payment or time would: `status`, `price`,
        `cancel_at_period_end`, `cancel_at`, `current_period_end` (int or datetime),
        `metadata`. Returns it as the customer.subscription.updated event carries it."""
        with self._lock:
            sub = self._subscriptions[subscription_id]
            for name, value in changes.items():
                if not hasattr(sub, name) or name in ("id", "customer", "created", "item_id"):
                    raise TypeError(f"update_subscription() cannot change {name!r}")
                if name == "price":
                    self.add_price(value)  # a price made in the dashboard meanwhile
                setattr(sub, name, int(value.timestamp()) if isinstance(value, datetime) else value)
            return self._subscription_json(sub, self.api_version)

    def invoice(self, subscription_id: str, *, paid: bool = True) -> dict[str, Any]:
        """The subscription's latest invoice, as invoice.paid / invoice.payment_failed carry it."""
        with self._lock:
            sub = self._subscriptions[subscription_id]
            amount = self._prices[sub.price]["unit_amount"]
            invoice: dict[str, Any] = {
                "id": _new_id("in"),
                "object": "invoice",
                "customer": sub.customer,
                "status": "paid" if paid else "open",
                "amount_due": amount,
                "amount_paid": amount if paid else 0,
                "billing_reason": "subscription_cycle",
                "created": _now(),
                "livemode": False,
                "metadata": {},
            }
            details = {"metadata": dict(sub.metadata)}
            if _shapes_of_2025(self.api_version):
                invoice["parent"] = {
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": details | {"subscription": sub.id},
                }
            else:
                invoice |= {"subscription": sub.id, "subscription_details": details}
            return invoice

    def event(
        self, type: str, obj: dict[str, Any], *, created: int | None = None, id: str | None = None
    ) -> dict[str, Any]:
        """A Stripe Event carrying `obj`, as a webhook endpoint receives it."""
        return {
            "id": id or _new_id("evt"),
            "object": "event",
            "api_version": self.api_version,
            "created": _now() if created is None else created,
            "data": {"object": copy.deepcopy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
        }

    def webhook(self, event: dict[str, Any], *, timestamp: int | None = None) -> tuple[bytes, str]:
        """The body and Stripe-Signature header of delivering `event` to the endpoint."""
        payload = json.dumps(event, indent=2).encode()  # Stripe sends it pretty-printed
        return payload, self.sign(payload, self.webhook_secret, timestamp)

    @staticmethod
    def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
        """Stripe's scheme, written out here rather than borrowed from the library under test:
        HMAC-SHA256 with the endpoint's secret over "<timestamp>.<body>"."""
        t = _now() if timestamp is None else timestamp
        mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256)
        return f"t={t},v1={mac.hexdigest()}"

    # --- lifecycle ------------------------------------------------------------------------

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return type("_BoundHandler", (_Handler,), {"stripe": self})

    # --- the API (called from handler threads) ----------------------------------------------

    def record(self, request: ReceivedRequest) -> None:
        """Every request that reached Stripe, refused and failed ones too."""
        with self._lock:
            self.received.append(request)

    def handle(self, request: ReceivedRequest) -> Answer:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if not key:
            return _error(
                401,
                "You did not provide an API key. You need to provide your API key "
                "in the Authorization header, using Bearer auth (e.g. 'Authorization: "
                "Bearer YOUR_SECRET_KEY').",
            )
        if scheme.lower() != "bearer" or not secrets.compare_digest(key, self.secret_key):
            return _error(401, f"Invalid API Key provided: {key[:8]}{'*' * 20}{key[-4:]}")
        version = request.headers.get("stripe-version") or self.api_version
        params, route = request.params, (request.method, request.path)
        with self._lock:
            if route == ("POST", "/v1/customers"):
                return 200, self._create_customer(params)
            if route == ("POST", "/v1/checkout/sessions"):
                return self._create_checkout_session(params)
            if route == ("POST", "/v1/billing_portal/sessions"):
                return self._create_portal_session(params)
            kind, _, object_id = request.path.removeprefix("/v1/").rpartition("/")
            if request.method == "GET" and kind == "subscriptions":
                sub = self._subscriptions.get(object_id)
                if sub is None:
                    return _missing("subscription", object_id, "id")
                return 200, self._subscription_json(sub, version)
        return _error(
            404,
            f"Unrecognized request URL ({request.method}: {request.path}). Please "
            "see https://stripe.com/docs or we can help at https://support.stripe.com/.",
        )

    def idempotent(self, key: str, answer: Answer | None = None) -> Answer | None:
        """The answer already given for an idempotency key, or remember `answer` for it."""
        with self._lock:
            if answer is not None:
                self._idempotent.setdefault(key, answer)
            return self._idempotent.get(key)

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer: dict[str, Any] = {
            "id": _new_id("cus", 14),
            "object": "customer",
            "created": _now(),
            "description": params.get("description"),
            "email": params.get("email"),
            "livemode": False,
            "metadata": dict(params.get("metadata") or {}),
            "name": params.get("name"),
        }
        self._customers[customer["id"]] = customer
        return customer

    def _create_checkout_session(self, params: dict[str, Any]) -> Answer:
        if params.get("mode") not in ("payment", "setup", "subscription"):
            return _error(
                400, "Missing required param: mode.", param="mode", code="parameter_missing"
            )
        customer = params.get("customer")
        if customer is not None and customer not in self._customers:
            return _missing("customer", customer, "customer")
        lines = params.get("line_items") or []
        if params["mode"] == "subscription" and not lines:
            return _error(
                400, "`line_items` is required in `subscription` mode.", param="line_items"
            )
        for index, line in enumerate(lines):
            if line.get("price") not in self._prices:
                return _missing("price", line.get("price"), f"line_items[{index}][price]")
        session_id = _new_id("cs_test", 58)
        now = _now()
        total = sum(
            self._prices[line["price"]]["unit_amount"] * int(line.get("quantity", 1))
            for line in lines
        )
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_total": total,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": "usd",
            "customer": customer,
            "expires_at": now + 86_400,
            "invoice": None,
            "livemode": False,
            "metadata": dict(params.get("metadata") or {}),
            "mode": params["mode"],
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": params.get("success_url"),
            "ui_mode": "hosted",
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self._sessions[session_id] = session
        self._session_lines[session_id] = lines
        self._subscription_data[session_id] = params.get("subscription_data") or {}
        return 200, session

    def _create_portal_session(self, params: dict[str, Any]) -> Answer:
        customer = params.get("customer")
        if customer not in self._customers:
            return _missing("customer", customer, "customer")
        return 200, {
            "id": _new_id("bps", 24),
            "object": "billing_portal.session",
            "configuration": "bpc_standin",
            "created": _now(),
            "customer": customer,
            "livemode": False,
            "return_url": params.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/test_{secrets.token_urlsafe(24)}",
        }

    def _subscription_json(self, sub: _Subscription, api_version: str) -> dict[str, Any]:
        period = {
            "current_period_start": sub.current_period_end - _PERIOD,
            "current_period_end": sub.current_period_end,
        }
        item = {
            "id": sub.item_id,
            "object": "subscription_item",
            "created": sub.created,
            "metadata": {},
            "price": copy.deepcopy(self._prices[sub.price]),
            "quantity": 1,
            "subscription": sub.id,
        }
        subscription = {
            "id": sub.id,
            "object": "subscription",
            "cancel_at": sub.cancel_at,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "canceled_at": None,
            "created": sub.created,
            "currency": "usd",
            "customer": sub.customer,
            "ended_at": None,
            "items": {
                "object": "list",
                "data": [item],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/subscription_items?subscription={sub.id}",
            },
            "livemode": False,
            "metadata": dict(sub.metadata),
            "status": sub.status,
        }
        if _shapes_of_2025(api_version):
            item |= period
        else:
            subscription |= period
        return subscription


class _Handler(BaseHTTPRequestHandler):
    stripe: StripeStandIn  # set on the subclass start() makes

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self._answer(url.path, _decode_form(url.query))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self._answer(url.path, _decode_form(self.rfile.read(length).decode()))

    def _answer(self, path: str, params: dict[str, Any]) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = ReceivedRequest(self.command, path, params, headers)
        self.stripe.record(request)
        if self.stripe.failing_with is not None:
            status = self.stripe.failing_with
            if status == 429:
                self._send(
                    *_error(429, "Too many requests hit the API too quickly.", code="rate_limit")
                )
            else:
                self._send(*_error(status, "An unknown error occurred", type="api_error"))
            return
        key = headers.get("idempotency-key") if self.command == "POST" else None
        replayed = self.stripe.idempotent(key) if key else None
        if replayed is not None:
            self._send(*replayed, replayed=True)
            return
        answer = self.stripe.handle(request)
        if key and answer[0] < 500:  # Stripe replays what ran, not what failed on its side
            self.stripe.idempotent(key, answer)
        self._send(*answer)

    def _send(self, status: int, body: dict[str, Any], *, replayed: bool = False) -> None:
        data = json.dumps(body, indent=2).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", _new_id("req", 14))
        self.send_header(
            "Stripe-Version", self.headers.get("Stripe-Version") or self.stripe.api_version
        )
        if replayed:
            self.send_header("Idempotent-Replayed", "true")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet; pytest shows failures, not every request


def _decode_form(encoded: str) -> dict[str, Any]:
    """Stripe's form encoding back into objects: `a[b][0][c]=v` is {"a": {"b": [{"c": "v"}]}}."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        parts = [key.split("[", 1)[0], *re.findall(r"\[([^\]]*)\]", key)]
        node = root
        for index, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if parts[index + 1] == "":  # `a[]=x`: the next free index
                parts[index + 1] = str(len(node))
        node[parts[-1]] = value
    decoded: dict[str, Any] = _lists(root)  # the top level has names, never only indexes
    return decoded


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    values = {key: _lists(value) for key, value in node.items()}
    if values and all(key.isdigit() for key in values):
        return [values[key] for key in sorted(values, key=int)]
    return values


def _shapes_of_2025(api_version: str) -> bool:
    return api_version[:10] >= _SHAPES_CHANGED


def _price_json(price_id: str, unit_amount: int) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "created": _now(),
        "currency": "usd",
        "livemode": False,
        "metadata": {},
        "product": _new_id("prod", 14),
        "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "type": "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": str(unit_amount),
    }


def _error(
    status: int, message: str, *, type: str = "invalid_request_error", **extra: str
) -> Answer:
    return status, {"error": {"message": message, "type": type, **extra}}


def _missing(kind: str, object_id: object, param: str) -> Answer:
    return _error(
        404 if param == "id" else 400,
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        doc_url="https://stripe.com/docs/error-codes/resource-missing",
        param=param,
    )


def _new_id(prefix: str, length: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return f"{prefix}_" + "".join(secrets.choice(alphabet) for _ in range(length))


def _now() -> int:
    return int(time.time())
