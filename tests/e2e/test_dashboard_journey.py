"""A new user's whole path through the dashboard API: sign in, create an org and an app, send
events with its credentials, invite an observer who can read but not write, rotate and revoke
credentials, promote the app, and work with an API key."""

from __future__ import annotations

import httpx
import pytest

from tests.support.sdk import batch_body, sdk_event, signed_request
from tests.support.stack import Stack

# Fixed email addresses: each test gets a database of its own.
pytestmark = pytest.mark.fresh_database


async def ingest(stack: Stack, app: dict[str, str], secret: str, count: int = 1) -> httpx.Response:
    body = batch_body([sdk_event(stack.clock.now()) for _ in range(count)])
    request = signed_request(app["org_id"], app["app_id"], secret, body, now=stack.clock.now())
    return await stack.send(request)


def token_of(link: str) -> str:
    return link.rsplit("token=", 1)[1]


async def test_the_dashboard_journey(stack: Stack) -> None:
    alice = await stack.browser("Alice@Example.com")
    me = (await alice.get("/api/v1/me")).json()
    assert me["user"]["email"] == "alice@example.com"
    assert me["orgs"] == []

    org = (await alice.post("/api/v1/orgs", json={"name": "Acme"})).json()
    assert (org["role"], org["plan"], org["events_per_month"]) == ("owner", "free", 10_000)
    org_id = org["org_id"]

    created = await alice.post(f"/api/v1/orgs/{org_id}/apps", json={"name": "acme-cli"})
    assert created.status_code == 201
    app, creds = created.json()["app"], created.json()["credentials"]
    assert app["environment"] == "staging"
    assert app["ingest_url"].endswith(f"/v1/ingest/{org_id}/{app['app_id']}")
    assert (await ingest(stack, app, creds["secret"], 3)).status_code == 200

    staging = (await alice.get(f"/api/v1/apps/{app['app_id']}/staging-usage")).json()
    assert staging == {
        "month": "2026-12",
        "events_this_month": 3,
        "events_limit": 1000,
        "events_remaining": 997,
    }

    # An observer, invited by email, reads but never writes.
    invite = await alice.post(
        f"/api/v1/orgs/{org_id}/invites", json={"email": "olga@example.com", "role": "observer"}
    )
    assert invite.status_code == 201
    assert invite.json()["status"] == "pending"
    invite_link = await stack.last_link_to("olga@example.com")
    olga = await stack.browser("olga@example.com")
    accepted = await olga.post("/api/v1/invites/accept", json={"token": token_of(invite_link)})
    assert accepted.json() == {"org_id": org_id, "role": "observer"}
    again = await olga.post("/api/v1/invites/accept", json={"token": token_of(invite_link)})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "ERR_INVALID_LINK"
    assert (await olga.get(f"/api/v1/orgs/{org_id}/usage")).json()["apps"][0]["events"] == 3
    refused = await olga.post(f"/api/v1/orgs/{org_id}/apps", json={"name": "nope"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ERR_FORBIDDEN"
    assert (await olga.get(f"/api/v1/orgs/{org_id}/members")).status_code == 403
    invites = (await alice.get(f"/api/v1/orgs/{org_id}/invites")).json()["items"]
    assert [i["status"] for i in invites] == ["accepted"]
    members = (await alice.get(f"/api/v1/orgs/{org_id}/members")).json()["items"]
    assert [(m["email"], m["role"]) for m in members] == [
        ("alice@example.com", "owner"),
        ("olga@example.com", "observer"),
    ]

    # Rotation: both secrets verify during the grace period; revocation stops both.
    rotated = (await alice.post(f"/api/v1/apps/{app['app_id']}/credentials/rotate")).json()
    assert (await ingest(stack, app, creds["secret"])).status_code == 200
    assert (await ingest(stack, app, rotated["secret"])).status_code == 200
    listed = (await alice.get(f"/api/v1/apps/{app['app_id']}/credentials")).json()["items"]
    assert [c["live"] for c in listed] == [True, True]
    assert "secret" not in listed[0]
    assert "token" not in listed[0]
    revoked = await alice.post(f"/api/v1/apps/{app['app_id']}/credentials/revoke")
    assert revoked.json() == {"revoked": 2}
    assert (await ingest(stack, app, rotated["secret"])).status_code == 401

    # Promotion is confirmed by the app's name and drops the staging events.
    wrong = await alice.post(f"/api/v1/apps/{app['app_id']}/promote", json={"confirm": "acme"})
    assert wrong.status_code == 422
    assert wrong.json()["error"]["code"] == "ERR_VALIDATION"
    promoted = await alice.post(
        f"/api/v1/apps/{app['app_id']}/promote", json={"confirm": "acme-cli"}
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["app"]["environment"] == "production"
    assert promoted.json()["staging_events_deleted"] == 5
    usage = (await alice.get(f"/api/v1/apps/{app['app_id']}/usage")).json()
    assert (usage["events_this_month"], usage["events_limit"]) == (0, 10_000)

    # An API key for a program: read-only scope reads, never writes, and sees only its org.
    key = await alice.post(f"/api/v1/orgs/{org_id}/api-keys", json={"name": "grafana"})
    assert key.status_code == 201
    secret = key.json()["secret"]
    assert secret.startswith("tkk_")
    assert key.json()["key"]["hint"] == secret[:8]
    program = await stack.api_client(secret)
    assert (await program.get(f"/api/v1/orgs/{org_id}/usage")).status_code == 200
    assert (
        await program.post(f"/api/v1/orgs/{org_id}/apps", json={"name": "x"})
    ).status_code == 403
    await alice.delete(f"/api/v1/orgs/{org_id}/api-keys/{key.json()['key']['key_id']}")
    gone = await program.get(f"/api/v1/orgs/{org_id}/usage")
    assert gone.status_code == 401
    assert gone.json()["error"]["code"] == "ERR_UNAUTHENTICATED"


async def test_csrf_a_cookie_request_that_changes_something_needs_the_token(stack: Stack) -> None:
    alice = await stack.browser("alice@example.com")
    token = alice.headers.pop("x-csrf-token")
    refused = await alice.post("/api/v1/orgs", json={"name": "Acme"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ERR_FORBIDDEN"
    wrong = await alice.post(
        "/api/v1/orgs", json={"name": "Acme"}, headers={"x-csrf-token": "x" * 43}
    )
    assert wrong.status_code == 403
    assert (await alice.get("/api/v1/orgs")).json()["items"] == []  # reads need no token
    ok = await alice.post("/api/v1/orgs", json={"name": "Acme"}, headers={"x-csrf-token": token})
    assert ok.status_code == 201


async def test_logout_and_logout_everywhere(stack: Stack) -> None:
    laptop = await stack.browser("alice@example.com")
    phone = await stack.browser("alice@example.com")
    assert (await laptop.post("/api/v1/auth/logout")).json() == {"status": "signed_out"}
    assert (await laptop.get("/api/v1/me")).status_code == 401
    assert (await phone.get("/api/v1/me")).status_code == 200
    desk = await stack.browser("alice@example.com")
    assert (await desk.post("/api/v1/auth/logout-everywhere")).json() == {"sessions_revoked": 2}
    assert (await phone.get("/api/v1/me")).status_code == 401


async def test_unauthenticated_calls_get_401(stack: Stack) -> None:
    anonymous = stack.http_client()
    for method, path in (("GET", "/api/v1/me"), ("GET", "/api/v1/orgs"), ("POST", "/api/v1/orgs")):
        response = await anonymous.request(method, path, json={"name": "x"})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "ERR_UNAUTHENTICATED"
    bad_key = await stack.api_client("tkk_not-a-key")
    assert (await bad_key.get("/api/v1/orgs")).status_code == 401


async def test_the_last_owner_cannot_leave_or_be_demoted(stack: Stack) -> None:
    alice = await stack.browser("alice@example.com")
    org_id = (await alice.post("/api/v1/orgs", json={"name": "Acme"})).json()["org_id"]
    me = (await alice.get("/api/v1/me")).json()["user"]["user_id"]
    leave = await alice.delete(f"/api/v1/orgs/{org_id}/members/{me}")
    assert leave.status_code == 409
    assert leave.json()["error"]["code"] == "ERR_CONFLICT"
    demote = await alice.patch(f"/api/v1/orgs/{org_id}/members/{me}", json={"role": "admin"})
    assert demote.status_code == 409
