"""GitHub sign-in (OAuth web application flow with PKCE), through authlib's httpx client.

The adapter builds the authorization URL, exchanges the returned code for a token and reads the
account and its email addresses. GitHub's failures become the port's two domain errors: it
refused the code (`SignInFailed`) or could not answer (`ServiceUnavailable("github")`).
"""

from __future__ import annotations

# authlib's client runs on httpx2 when that is installed, else on httpx (our dependency). The
# errors caught below are httpx's: installing httpx2 means importing it here instead (the
# integration tests' outage cases fail until then).
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # authlib 1.9.10 announces its move to httpx2 on import (its own filter says "always");
    # httpx is still supported and is what we depend on. Silenced so CLI runs do not print it.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from tkcloud_application.ports.identity import OAuthProvider
from tkcloud_domain.errors import ServiceUnavailable, SignInFailed
from tkcloud_domain.identity import GitHubIdentity, normalise_email

DEPENDENCY = "github"
SCOPE = "read:user user:email"
API_VERSION = "2022-11-28"

_API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
# GitHub's placeholder addresses are verified but deliver no mail, so a magic link or an
# invite sent there would never arrive.
_NOREPLY_DOMAIN = "@users.noreply.github.com"


class GitHubOAuthProvider:
    """The `OAuthProvider` port for GitHub (github.com, or GitHub Enterprise via the URLs)."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        oauth_url: str = "https://github.com",
        api_url: str = "https://api.github.com",
        timeout: float = 10.0,
    ) -> None:
        self._client_id = client_id
        self._client_secret = client_secret
        self._authorize_endpoint = f"{oauth_url.rstrip('/')}/login/oauth/authorize"
        self._token_endpoint = f"{oauth_url.rstrip('/')}/login/oauth/access_token"
        self._api_url = api_url.rstrip("/")
        self._timeout = timeout
        # Building a URL reads only the client's configuration and sends nothing, so one
        # (never opened) client serves every call.
        self._url_builder = self._new_client()

    def authorization_url(self, *, state: str, code_verifier: str, redirect_uri: str) -> str:
        url, _ = self._url_builder.create_authorization_url(
            self._authorize_endpoint,
            state=state,
            code_verifier=code_verifier,
            redirect_uri=redirect_uri,
        )
        return str(url)

    async def identity(self, *, code: str, code_verifier: str, redirect_uri: str) -> GitHubIdentity:
        # A client per sign-in: authlib keeps the fetched token on the client, so a shared one
        # would let two concurrent sign-ins read each other's accounts.
        with _github_errors():
            async with self._new_client() as client:
                # authlib's default headers ask for JSON; without that GitHub answers the token
                # request form-encoded.
                token: dict[str, Any] = await client.fetch_token(
                    self._token_endpoint,
                    code=code,
                    code_verifier=code_verifier,
                    redirect_uri=redirect_uri,
                )
                if not isinstance(token.get("access_token"), str):
                    raise SignInFailed("GitHub answered the code without an access token")
                user = await self._get(client, "/user")
                # 30 addresses a page by default; one page of 100 covers every real account.
                emails = await self._get(client, "/user/emails", params={"per_page": "100"})
        return _identity(user, emails)

    def _new_client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            scope=SCOPE,
            code_challenge_method="S256",
            # GitHub documents the client credentials as form fields of the token request.
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
            timeout=self._timeout,
        )

    async def _get(
        self, client: AsyncOAuth2Client, path: str, params: dict[str, str] | None = None
    ) -> object:
        response: httpx.Response = await client.get(
            f"{self._api_url}{path}", headers=_API_HEADERS, params=params
        )
        if response.status_code >= 400:
            raise _error_for_status(response)
        return response.json()


def _error_for_status(response: httpx.Response) -> SignInFailed | ServiceUnavailable:
    # A rate limit is GitHub being unable to serve us for a while, not a refusal of this user
    # (GitHub answers it with 403 or 429 and x-ratelimit-remaining: 0).
    rate_limited = response.status_code == 429 or (
        response.status_code == 403 and response.headers.get("x-ratelimit-remaining") == "0"
    )
    if response.status_code >= 500 or rate_limited:
        return ServiceUnavailable(DEPENDENCY)
    # 401/403/404: the token does not work or lacks a scope (GitHub hides /user/emails behind a
    # 404 without user:email).
    return SignInFailed(
        "GitHub refused the sign-in", details={"provider_status": response.status_code}
    )


@contextmanager
def _github_errors() -> Iterator[None]:
    """Translate everything the exchange can raise into the port's two domain errors."""
    try:
        yield
    except OAuthError as exc:
        # GitHub's token endpoint answers 200 with {"error": ...} for a bad, used or expired
        # code, a PKCE mismatch, wrong client credentials or a redirect_uri mismatch; authlib
        # raises this for those bodies and for 4xx JSON error bodies alike.
        raise SignInFailed(
            f"GitHub refused the sign-in code ({exc.error})",
            details={"provider_error": exc.error},
        ) from exc
    except httpx.HTTPStatusError as exc:
        # authlib raises this for a token answer that is not a JSON object (a 5xx, a proxy page).
        raise _error_for_status(exc.response) from exc
    except httpx.HTTPError as exc:  # refused connection, DNS, TLS, timeouts, dropped connection
        raise ServiceUnavailable(DEPENDENCY) from exc
    except ValueError as exc:  # a 2xx body that is not the JSON GitHub documents
        raise ServiceUnavailable(DEPENDENCY) from exc


def _identity(user: object, emails: object) -> GitHubIdentity:
    if not isinstance(user, dict) or not isinstance(emails, list):
        raise ServiceUnavailable(DEPENDENCY)
    user_id, login, name = user.get("id"), user.get("login"), user.get("name")
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not isinstance(login, str):
        raise ServiceUnavailable(DEPENDENCY)
    return GitHubIdentity(
        id=user_id,
        login=login,
        name=name if isinstance(name, str) and name else None,
        verified_email=_verified_email(emails),
    )


def _verified_email(emails: list[object]) -> str | None:
    """The primary address if it is verified, else the first other verified one that receives
    mail; normalised (lowercase) as the rest of sign-in expects."""
    entries = [e for e in emails if isinstance(e, dict) and isinstance(e.get("email"), str)]
    verified = [e for e in entries if e.get("verified") is True]
    # sorted() is stable: the primary first, the others in GitHub's order.
    for entry in sorted(verified, key=lambda e: e.get("primary") is not True):
        address = normalise_email(entry["email"])
        if address is not None and not address.endswith(_NOREPLY_DOMAIN):
            return address
    return None


if TYPE_CHECKING:  # mypy checks the adapter against its port here
    _port: OAuthProvider = GitHubOAuthProvider("client-id", "client-secret")
