"""Nobody sees another tenant's data: every dashboard route that takes an id, called with the ids
of org A by a user or an API key of org B, answers 404 exactly as a missing object would; an
observer of org A gets 403 on every write. The list of routes comes from the app itself, so a
new endpoint cannot skip this."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
from litestar.routes import HTTPRoute

from tests.support.stack import Stack

# Fixed email addresses: each test gets a database of its own.
pytestmark = pytest.mark.fresh_database

ID_PARAMS = {"org_id", "app_id", "user_id", "invite_id", "key_id", "share_id"}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

# A valid body for every request type, so the request reaches authorisation. A new body type
# without a sample here fails the test on purpose.
SAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "NameBody": {"name": "renamed"},
    "RoleBody": {"role": "member"},
    "InviteRequest": {"email": "someone@example.com", "role": "observer"},
    "ApiKeyRequest": {"name": "k", "scopes": ["analytics:read"]},
    "ConfirmBody": {"confirm": "x"},
    "TokenBody": {"token": "x"},
    "CheckoutBody": {"plan": "pro"},
    "ShareRequest": {"include_events": True},
    "BadgesBody": {"enabled": True},
}


@dataclass
class Endpoint:
    method: str
    path: str  # with {org_id} style placeholders
    body: dict[str, Any] | None


def endpoints_with_ids(stack: Stack) -> list[Endpoint]:
    found = []
    for route in stack.app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/api/v1/"):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        if not ID_PARAMS & set(re.findall(r"\{(\w+)\}", path)):
            continue
        for handler in route.route_handlers:
            data = handler.parsed_fn_signature.parameters.get("data")
            body = None
            if data is not None:
                name = data.annotation.__name__
                assert name in SAMPLE_BODIES, f"add a sample body for {name} ({path})"
                body = SAMPLE_BODIES[name]
            for method in handler.http_methods:
                if method not in {"HEAD", "OPTIONS"}:
                    found.append(Endpoint(method, path, body))
    assert len(found) >= 20, found  # the dashboard API is all here
    return found


# Path parameters that are not ids get a valid value, so only the ids decide the answer.
OTHER_PATH_PARAMS = {
    "dimension": "os",
    "metric": "events-per-month",
    "slug": "x" * 43,
    "event_id": "212ae2eb-17ce-48e1-a544-95173521796d",
}


async def call(
    client: httpx.AsyncClient, endpoint: Endpoint, ids: dict[str, str]
) -> httpx.Response:
    path = endpoint.path.format(**ids, **OTHER_PATH_PARAMS)
    return await client.request(
        endpoint.method,
        path,
        params={"confirm": "x"},
        json=endpoint.body if endpoint.body else None,
    )


async def world(stack: Stack, owner: httpx.AsyncClient, member_email: str) -> dict[str, str]:
    """An org with an app, a second member, a pending invite and an API key."""
    org = (await owner.post("/api/v1/orgs", json={"name": "Org A"})).json()
    org_id = org["org_id"]
    app = (await owner.post(f"/api/v1/orgs/{org_id}/apps", json={"name": "app-a"})).json()
    invite = await owner.post(
        f"/api/v1/orgs/{org_id}/invites", json={"email": member_email, "role": "member"}
    )
    token = (await stack.last_link_to(member_email)).rsplit("token=", 1)[1]
    member = await stack.browser(member_email)
    assert (await member.post("/api/v1/invites/accept", json={"token": token})).status_code == 201
    pending = await owner.post(
        f"/api/v1/orgs/{org_id}/invites", json={"email": "later@example.com", "role": "observer"}
    )
    key = await owner.post(
        f"/api/v1/orgs/{org_id}/api-keys", json={"name": "ci", "scopes": ["manage"]}
    )
    share = await owner.post(f"/api/v1/apps/{app['app']['app_id']}/shares", json={})
    me = (await member.get("/api/v1/me")).json()
    assert invite.status_code == pending.status_code == key.status_code == 201
    return {
        "org_id": org_id,
        "app_id": app["app"]["app_id"],
        "user_id": me["user"]["user_id"],
        "invite_id": pending.json()["invite_id"],
        "key_id": key.json()["key"]["key_id"],
        "share_id": share.json()["share_id"],
    }


async def test_another_tenant_gets_404_on_every_endpoint_that_takes_an_id(stack: Stack) -> None:
    alice = await stack.browser("alice@a.example")
    ids = await world(stack, alice, "bob@a.example")

    mallory = await stack.browser("mallory@b.example")
    org_b = (await mallory.post("/api/v1/orgs", json={"name": "Org B"})).json()["org_id"]
    key_b = await mallory.post(
        f"/api/v1/orgs/{org_b}/api-keys", json={"name": "b", "scopes": ["manage"]}
    )
    program_b = await stack.api_client(key_b.json()["secret"])

    failures = []
    for endpoint in endpoints_with_ids(stack):
        for who, client in (("user of B", mallory), ("API key of B", program_b)):
            response = await call(client, endpoint, ids)
            body = response.json() if response.content else {}
            if response.status_code != 404 or body.get("error", {}).get("code") != "ERR_NOT_FOUND":
                failures.append(
                    (who, endpoint.method, endpoint.path, response.status_code, response.text[:200])
                )
    assert failures == []

    # And nothing changed: alice's org, app, key and invite are intact.
    assert (await alice.get(f"/api/v1/orgs/{ids['org_id']}")).json()["name"] == "Org A"
    assert (await alice.get(f"/api/v1/apps/{ids['app_id']}")).json()["name"] == "app-a"
    keys = (await alice.get(f"/api/v1/orgs/{ids['org_id']}/api-keys")).json()["items"]
    assert [k["revoked_at"] for k in keys] == [None]


async def test_an_observer_gets_403_on_every_write(stack: Stack) -> None:
    alice = await stack.browser("alice@a.example")
    ids = await world(stack, alice, "bob@a.example")
    await alice.post(
        f"/api/v1/orgs/{ids['org_id']}/invites",
        json={"email": "olga@a.example", "role": "observer"},
    )
    token = (await stack.last_link_to("olga@a.example")).rsplit("token=", 1)[1]
    olga = await stack.browser("olga@a.example")
    assert (await olga.post("/api/v1/invites/accept", json={"token": token})).json()[
        "role"
    ] == "observer"

    failures = []
    for endpoint in endpoints_with_ids(stack):
        if endpoint.method not in UNSAFE:
            continue
        response = await call(olga, endpoint, ids)
        body = response.json() if response.content else {}
        if response.status_code != 403 or body.get("error", {}).get("code") != "ERR_FORBIDDEN":
            failures.append(
                (endpoint.method, endpoint.path, response.status_code, response.text[:200])
            )
    assert failures == []

    # What an observer may do: read the org, its apps and usage.
    for path in (
        f"/api/v1/orgs/{ids['org_id']}",
        f"/api/v1/orgs/{ids['org_id']}/apps",
        f"/api/v1/orgs/{ids['org_id']}/usage",
        f"/api/v1/apps/{ids['app_id']}/staging-usage",
    ):
        assert (await olga.get(path)).status_code == 200, path


def test_sample_bodies_decode_into_their_types() -> None:
    from tkcloud_api.http.dashboard import billing, schemas, sharing

    for name, body in SAMPLE_BODIES.items():
        kind = next(getattr(m, name) for m in (schemas, billing, sharing) if hasattr(m, name))
        msgspec.convert(body, kind)
