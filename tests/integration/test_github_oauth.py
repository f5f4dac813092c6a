"""The GitHub OAuth adapter against a local GitHub that speaks GitHub's wire format.

Each test walks the real flow: the adapter builds the authorization URL, a browser (httpx, not
following redirects) opens it and the stand-in's user approves, the callback's code goes back
to the adapter, which exchanges it and reads the account.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import socket
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.github import GitHubStandIn
from tkcloud_adapters.oauth import GitHubOAuthProvider
from tkcloud_domain.errors import ServiceUnavailable, SignInFailed
from tkcloud_domain.identity import GitHubIdentity

REDIRECT_URI = "http://localhost:8000/api/v1/auth/github/callback"


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn(callback_url=REDIRECT_URI) as github:
        github.add_account(
            583231, "octocat", "The Octocat", emails=[("Octocat@Example.COM", True, True)]
        )
        github.approve_as("octocat")
        yield github


@pytest.fixture
def provider(github: GitHubStandIn) -> GitHubOAuthProvider:
    return provider_for(github)


def provider_for(github: GitHubStandIn, **overrides: str) -> GitHubOAuthProvider:
    return GitHubOAuthProvider(
        overrides.get("client_id", github.client_id),
        overrides.get("client_secret", github.client_secret),
        oauth_url=github.url,
        api_url=github.url,
        timeout=2.0,
    )


def new_verifier() -> str:
    return secrets.token_urlsafe(48)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def approve(provider: GitHubOAuthProvider, verifier: str, state: str = "st4te") -> str:
    """Open the authorization URL as the browser would and return the code of the callback."""
    url = provider.authorization_url(state=state, code_verifier=verifier, redirect_uri=REDIRECT_URI)
    async with httpx.AsyncClient() as browser:
        response = await browser.get(url)
    assert response.status_code == 302, response.text
    callback = urlsplit(response.headers["location"])
    assert f"{callback.scheme}://{callback.netloc}{callback.path}" == REDIRECT_URI
    query = parse_qs(callback.query)
    assert query["state"] == [state]
    return query["code"][0]


async def sign_in(provider: GitHubOAuthProvider) -> GitHubIdentity:
    verifier = new_verifier()
    code = await approve(provider, verifier)
    return await provider.identity(code=code, code_verifier=verifier, redirect_uri=REDIRECT_URI)


def test_the_authorization_url_carries_client_state_scope_and_pkce(
    github: GitHubStandIn, provider: GitHubOAuthProvider
) -> None:
    verifier = new_verifier()
    url = provider.authorization_url(
        state="st4te", code_verifier=verifier, redirect_uri=REDIRECT_URI
    )

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{github.url}/login/oauth/authorize"
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": [github.client_id],
        "redirect_uri": [REDIRECT_URI],
        "scope": ["read:user user:email"],
        "state": ["st4te"],
        "code_challenge": [s256(verifier)],
        "code_challenge_method": ["S256"],
    }
    assert verifier not in url  # the verifier stays with us until the code exchange


async def test_an_approved_code_yields_the_account_with_its_verified_primary_email(
    provider: GitHubOAuthProvider,
) -> None:
    identity = await sign_in(provider)

    assert identity == GitHubIdentity(
        id=583231, login="octocat", name="The Octocat", verified_email="octocat@example.com"
    )


async def test_a_replayed_code_is_refused(provider: GitHubOAuthProvider) -> None:
    verifier = new_verifier()
    code = await approve(provider, verifier)
    await provider.identity(code=code, code_verifier=verifier, redirect_uri=REDIRECT_URI)

    with pytest.raises(SignInFailed) as refused:
        await provider.identity(code=code, code_verifier=verifier, redirect_uri=REDIRECT_URI)
    assert refused.value.details == {"provider_error": "bad_verification_code"}


async def test_a_code_with_the_wrong_verifier_is_refused(provider: GitHubOAuthProvider) -> None:
    code = await approve(provider, new_verifier())

    with pytest.raises(SignInFailed) as refused:
        await provider.identity(code=code, code_verifier=new_verifier(), redirect_uri=REDIRECT_URI)
    assert refused.value.details == {"provider_error": "bad_verification_code"}


async def test_an_unknown_code_is_refused(provider: GitHubOAuthProvider) -> None:
    with pytest.raises(SignInFailed):
        await provider.identity(
            code="0123456789abcdef0123", code_verifier=new_verifier(), redirect_uri=REDIRECT_URI
        )


async def test_a_different_redirect_uri_at_the_exchange_is_refused(
    provider: GitHubOAuthProvider,
) -> None:
    verifier = new_verifier()
    code = await approve(provider, verifier)

    with pytest.raises(SignInFailed) as refused:
        await provider.identity(
            code=code, code_verifier=verifier, redirect_uri="http://localhost:8000/elsewhere"
        )
    assert refused.value.details == {"provider_error": "redirect_uri_mismatch"}


async def test_wrong_client_credentials_are_refused(github: GitHubStandIn) -> None:
    verifier = new_verifier()
    code = await approve(provider_for(github), verifier)

    with pytest.raises(SignInFailed) as refused:
        await provider_for(github, client_secret="not-the-secret").identity(
            code=code, code_verifier=verifier, redirect_uri=REDIRECT_URI
        )
    assert refused.value.details == {"provider_error": "incorrect_client_credentials"}


async def test_an_account_without_a_verified_email_has_none(
    github: GitHubStandIn, provider: GitHubOAuthProvider
) -> None:
    github.add_account(2, "unverified", None, emails=[("new@example.com", True, False)])
    github.approve_as("unverified")

    identity = await sign_in(provider)

    assert identity == GitHubIdentity(id=2, login="unverified", name=None, verified_email=None)


async def test_an_unverified_primary_gives_way_to_the_first_verified_deliverable_address(
    github: GitHubStandIn, provider: GitHubOAuthProvider
) -> None:
    github.add_account(
        3,
        "mover",
        "Mover",
        emails=[
            ("new@example.com", True, False),
            # verified, but GitHub's placeholder never receives a magic link or an invite
            ("3+mover@users.noreply.github.com", False, True),
            ("Old@Example.com", False, True),
            ("older@example.com", False, True),
        ],
    )
    github.approve_as("mover")

    identity = await sign_in(provider)

    assert identity.verified_email == "old@example.com"


async def test_concurrent_sign_ins_each_get_their_own_account(
    github: GitHubStandIn, provider: GitHubOAuthProvider
) -> None:
    github.add_account(4, "hubot", "Hubot", emails=[("hubot@example.com", True, True)])
    flows = []
    for login in ("octocat", "hubot"):
        github.approve_as(login)
        verifier = new_verifier()
        flows.append((await approve(provider, verifier), verifier))

    identities = await asyncio.gather(
        *(
            provider.identity(code=code, code_verifier=verifier, redirect_uri=REDIRECT_URI)
            for code, verifier in flows
        )
    )

    assert [identity.login for identity in identities] == ["octocat", "hubot"]


async def test_a_user_who_cancels_comes_back_with_access_denied(
    github: GitHubStandIn, provider: GitHubOAuthProvider
) -> None:
    github.approve_as(None)
    url = provider.authorization_url(
        state="st4te", code_verifier=new_verifier(), redirect_uri=REDIRECT_URI
    )

    async with httpx.AsyncClient() as browser:
        response = await browser.get(url)

    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == ["st4te"]
    assert "code" not in query


async def test_github_down_is_service_unavailable_at_once(
    github: GitHubStandIn, provider: GitHubOAuthProvider
) -> None:
    verifier = new_verifier()
    code = await approve(provider, verifier)
    github.stop()

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as unavailable:
        await provider.identity(code=code, code_verifier=verifier, redirect_uri=REDIRECT_URI)
    assert unavailable.value.dependency == "github"
    assert time.monotonic() - started < 1.0  # a refused connection, not the 2 s timeout


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_github_failing_is_service_unavailable(
    github: GitHubStandIn, provider: GitHubOAuthProvider, status: int
) -> None:
    verifier = new_verifier()
    code = await approve(provider, verifier)
    github.failing_with = status

    with pytest.raises(ServiceUnavailable):
        await provider.identity(code=code, code_verifier=verifier, redirect_uri=REDIRECT_URI)


async def test_github_not_answering_is_service_unavailable_after_the_timeout() -> None:
    # A listening socket nobody accepts from: the kernel completes the TCP handshake, then the
    # request waits for an answer that never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        provider = GitHubOAuthProvider("id", "secret", oauth_url=url, api_url=url, timeout=0.3)

        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await provider.identity(
                code="0123456789abcdef0123", code_verifier=new_verifier(), redirect_uri=REDIRECT_URI
            )
        assert time.monotonic() - started < 2.0


async def test_the_stand_in_runs_as_an_async_context_manager() -> None:
    async with GitHubStandIn() as github:
        github.add_account(5, "monalisa", "Mona", emails=[("mona@example.com", True, True)])
        github.approve_as("monalisa")

        identity = await sign_in(provider_for(github))

    assert identity.verified_email == "mona@example.com"
