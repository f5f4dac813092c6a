"""Sign-in end to end against Postgres + Redis: GitHub OAuth through a local GitHub stand-in
(real wire format), and email magic links delivered through the real SMTP adapter to a local
SMTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.github import GitHubStandIn
from tests.support.smtp import SmtpTestServer
from tests.support.stack import Stack, running_stack, settings_for

# The local SMTP server asks for a login without TLS, as a relay on the same machine may.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

PUBLIC_URL = "http://testserver"
CALLBACK = f"{PUBLIC_URL}/api/v1/auth/github/callback"


@dataclass
class SignIn:
    stack: Stack
    github: GitHubStandIn
    smtp: SmtpTestServer


@pytest.fixture
async def sign_in(
    tmp_path: Path, fresh_postgres_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[SignIn]:
    with SmtpTestServer(credentials=("mailer", "s3cret")) as smtp:
        async with GitHubStandIn(callback_url=CALLBACK) as github:
            settings = settings_for(
                "postgres",
                tmp_path=tmp_path,
                postgres_url=fresh_postgres_url,
                redis_url=redis_url,
                prefix=redis_prefix,
                public_url=PUBLIC_URL,
                github_client_id=github.client_id,
                github_client_secret=github.client_secret,
                github_url=github.url,
                github_api_url=github.url,
                smtp_url=smtp.url(user="mailer", password="s3cret"),
                mail_from="telemetry-kit cloud <noreply@tk.example>",
            )
            async with running_stack(settings, "postgres") as stack:
                yield SignIn(stack, github, smtp)


async def github_round_trip(s: SignIn, client: httpx.AsyncClient, redirect_to: str = "/") -> str:
    """Start at our service, let GitHub approve, return our callback path with code and state."""
    start = await client.get("/api/v1/auth/github/start", params={"redirect_to": redirect_to})
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    assert authorize.startswith(f"{s.github.url}/login/oauth/authorize?")
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["state"][0]
    async with httpx.AsyncClient() as browser:
        back = await browser.get(authorize)
    assert back.status_code == 302
    location = back.headers["location"]
    assert location.startswith(CALLBACK)
    return location.removeprefix(PUBLIC_URL)


# --- GitHub -------------------------------------------------------------------------------------


async def test_github_sign_in_creates_the_user_and_a_session(sign_in: SignIn) -> None:
    sign_in.github.add_account(
        583231, "octocat", "The Octocat", emails=[("Octo@Example.com", True, True)]
    )
    sign_in.github.approve_as("octocat")
    client = sign_in.stack.http_client()
    callback = await client.get(await github_round_trip(sign_in, client, "/welcome"))
    assert callback.status_code == 302, callback.text
    assert callback.headers["location"] == f"{PUBLIC_URL}/welcome"
    cookies = callback.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("tk_session="))
    assert "HttpOnly" in session_cookie
    assert "SameSite=lax" in session_cookie
    me = (await client.get("/api/v1/me")).json()["user"]
    assert (me["email"], me["github_login"], me["display_name"]) == (
        "octo@example.com",
        "octocat",
        "The Octocat",
    )

    # The same GitHub account again: the same user, a new session.
    again = sign_in.stack.http_client()
    await again.get(await github_round_trip(sign_in, again))
    assert (await again.get("/api/v1/me")).json()["user"]["user_id"] == me["user_id"]


async def test_github_links_to_the_user_with_the_same_verified_email(sign_in: SignIn) -> None:
    by_mail = await sign_in_by_link(sign_in, "dev@example.com")
    user_id = (await by_mail.get("/api/v1/me")).json()["user"]["user_id"]
    sign_in.github.add_account(7, "dev", None, emails=[("dev@example.com", True, True)])
    sign_in.github.approve_as("dev")
    client = sign_in.stack.http_client()
    await client.get(await github_round_trip(sign_in, client))
    me = (await client.get("/api/v1/me")).json()["user"]
    assert (me["user_id"], me["github_login"]) == (user_id, "dev")


def assert_sent_back_to_sign_in(response: httpx.Response, reason: str = "") -> None:
    """A failed GitHub sign-in returns the browser to the dashboard's sign-in page."""
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{PUBLIC_URL}/sign-in"
    query = parse_qs(location.query)
    assert query["error"] == ["ERR_SIGN_IN_FAILED"]
    assert reason in query["reason"][0]
    assert "tk_session" not in response.cookies


async def test_a_forged_state_is_refused(sign_in: SignIn) -> None:
    client = sign_in.stack.http_client()
    response = await client.get(
        "/api/v1/auth/github/callback", params={"code": "abc", "state": "forged"}
    )
    assert_sent_back_to_sign_in(response, "state")


async def test_a_cancelled_github_sign_in_goes_back_to_the_sign_in_page(sign_in: SignIn) -> None:
    sign_in.github.add_account(3, "octocat", None, emails=[("o@example.com", True, True)])
    sign_in.github.approve_as(None)  # the user clicks "Cancel" on GitHub
    client = sign_in.stack.http_client()
    response = await client.get(await github_round_trip(sign_in, client))
    assert_sent_back_to_sign_in(response, "access_denied")


async def test_a_replayed_callback_or_code_is_refused(sign_in: SignIn) -> None:
    sign_in.github.add_account(1, "octocat", "Octo", emails=[("octo@example.com", True, True)])
    sign_in.github.approve_as("octocat")
    client = sign_in.stack.http_client()
    callback = await github_round_trip(sign_in, client)
    assert (await client.get(callback)).status_code == 302
    replay = await sign_in.stack.http_client().get(callback)  # same state and code
    assert_sent_back_to_sign_in(replay, "state")

    # A fresh state with the old code: GitHub refuses the code.
    old_code = parse_qs(urlsplit(callback).query)["code"][0]
    fresh = parse_qs(urlsplit(await github_round_trip(sign_in, client)).query)["state"][0]
    reused = await client.get(  # the browser that started: only the code is stale
        "/api/v1/auth/github/callback", params={"code": old_code, "state": fresh}
    )
    assert_sent_back_to_sign_in(reused)
    assert "code" in parse_qs(urlsplit(reused.headers["location"]).query)["reason"][0].lower()


async def test_a_callback_link_from_another_browser_cannot_sign_anyone_in(sign_in: SignIn) -> None:
    """Login CSRF: the attacker approves with their own account, stops at the callback and
    sends that link to the victim. The state is bound to the attacker's browser."""
    sign_in.github.add_account(66, "mallory", None, emails=[("mallory@example.com", True, True)])
    sign_in.github.approve_as("mallory")
    attacker = sign_in.stack.http_client()
    callback = await github_round_trip(sign_in, attacker)
    victim = sign_in.stack.http_client()
    response = await victim.get(callback)
    assert_sent_back_to_sign_in(response, "browser")
    assert (await victim.get("/api/v1/me")).status_code == 401
    assert (await attacker.get(callback)).status_code == 302  # the state was not burnt


async def test_a_github_account_without_a_verified_email_is_refused(sign_in: SignIn) -> None:
    sign_in.github.add_account(9, "ghost", "Ghost", emails=[("ghost@example.com", True, False)])
    sign_in.github.approve_as("ghost")
    client = sign_in.stack.http_client()
    response = await client.get(await github_round_trip(sign_in, client))
    assert_sent_back_to_sign_in(response, "verified email")
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_github_open_redirects_are_neutralised(sign_in: SignIn) -> None:
    sign_in.github.add_account(2, "octocat", None, emails=[("o@example.com", True, True)])
    sign_in.github.approve_as("octocat")
    client = sign_in.stack.http_client()
    callback = await client.get(await github_round_trip(sign_in, client, "//evil.example/x"))
    assert callback.headers["location"] == f"{PUBLIC_URL}/"


# --- magic links through SMTP -----------------------------------------------------------------


def link_token(s: SignIn, to: str) -> str:
    mails = [m for m in s.smtp.received if to in m.rcpt_tos]
    assert mails, f"no mail to {to}"
    body = mails[-1].message.get_content()
    link = next(word for word in body.split() if word.startswith("http"))
    assert link.startswith(f"{PUBLIC_URL}/auth/magic-link?token=")
    return parse_qs(urlsplit(link).query)["token"][0]


async def sign_in_by_link(s: SignIn, email: str) -> httpx.AsyncClient:
    client = s.stack.http_client()
    assert (await client.post("/api/v1/auth/magic-link", json={"email": email})).status_code == 202
    verified = await client.post(
        "/api/v1/auth/magic-link/verify", json={"token": link_token(s, email)}
    )
    assert verified.status_code == 200, verified.text
    client.headers["x-csrf-token"] = verified.json()["csrf_token"]
    return client


async def test_magic_link_signs_in_once(sign_in: SignIn) -> None:
    client = sign_in.stack.http_client()
    await client.post("/api/v1/auth/magic-link", json={"email": "new@example.com"})
    mail = sign_in.smtp.received[-1]
    assert mail.login == "mailer"
    assert mail.message["Subject"] == "Your telemetry-kit cloud sign-in link"
    token = link_token(sign_in, "new@example.com")
    first = await client.post("/api/v1/auth/magic-link/verify", json={"token": token})
    assert first.status_code == 200
    assert first.json()["user"]["email"] == "new@example.com"
    assert (await client.get("/api/v1/me")).status_code == 200
    reused = await sign_in.stack.http_client().post(
        "/api/v1/auth/magic-link/verify", json={"token": token}
    )
    assert reused.status_code == 400
    assert reused.json()["error"]["code"] == "ERR_INVALID_LINK"


async def test_an_expired_or_tampered_link_is_refused(sign_in: SignIn) -> None:
    client = sign_in.stack.http_client()
    await client.post("/api/v1/auth/magic-link", json={"email": "late@example.com"})
    token = link_token(sign_in, "late@example.com")
    tampered = await client.post(
        "/api/v1/auth/magic-link/verify",
        json={"token": token[:-1] + ("A" if token[-1] != "A" else "B")},
    )
    assert tampered.status_code == 400
    assert tampered.json()["error"]["code"] == "ERR_INVALID_LINK"
    sign_in.stack.clock.advance(timedelta(minutes=15).total_seconds())
    expired = await client.post("/api/v1/auth/magic-link/verify", json={"token": token})
    assert expired.status_code == 400
    assert expired.json()["error"]["code"] == "ERR_INVALID_LINK"


async def test_magic_links_are_rate_limited_per_address_and_per_ip(sign_in: SignIn) -> None:
    client = sign_in.stack.http_client(ip="127.0.0.200")
    for _ in range(5):
        assert (
            await client.post("/api/v1/auth/magic-link", json={"email": "x@example.com"})
        ).status_code == 202
    limited = await client.post("/api/v1/auth/magic-link", json={"email": "X@example.com"})
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "ERR_RATE_LIMIT"
    assert int(limited.headers["retry-after"]) > 0
    # Another address from the same client still works, up to the per-IP limit.
    for i in range(15):
        response = await client.post("/api/v1/auth/magic-link", json={"email": f"u{i}@example.com"})
        assert response.status_code == 202
    assert (
        await client.post("/api/v1/auth/magic-link", json={"email": "z@example.com"})
    ).status_code == 429
    other_ip = sign_in.stack.http_client(ip="127.0.0.201")
    assert (
        await other_ip.post("/api/v1/auth/magic-link", json={"email": "z@example.com"})
    ).status_code == 202


async def test_a_cross_site_form_cannot_post_a_sign_in_token(sign_in: SignIn) -> None:
    """Login CSRF: a form on another site posts the attacker's token as text/plain."""
    client = sign_in.stack.http_client()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        response = await client.post(
            "/api/v1/auth/magic-link/verify",
            content=b'{"token": "attackers-token"}',
            headers={"content-type": content_type},
        )
        assert response.status_code == 415, content_type
        assert response.json()["error"]["code"] == "ERR_UNSUPPORTED_MEDIA_TYPE"


async def test_a_bad_address_is_a_validation_error(sign_in: SignIn) -> None:
    response = await sign_in.stack.http_client().post(
        "/api/v1/auth/magic-link", json={"email": "not-an-address"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ERR_VALIDATION"


async def test_an_invite_mail_goes_through_smtp(sign_in: SignIn) -> None:
    alice = await sign_in_by_link(sign_in, "alice@example.com")
    org_id = (await alice.post("/api/v1/orgs", json={"name": "Acme"})).json()["org_id"]
    invited = await alice.post(f"/api/v1/orgs/{org_id}/invites", json={"email": "olga@example.com"})
    assert invited.status_code == 201
    mail = sign_in.smtp.received[-1]
    assert mail.rcpt_tos == ["olga@example.com"]
    assert "invited you to join Acme as observer" in mail.message.get_content()
