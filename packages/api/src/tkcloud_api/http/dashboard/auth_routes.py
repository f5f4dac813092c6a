"""Sign-in and sessions: GitHub OAuth, email magic links, logout, me."""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.params import CookieParameter, JSONBody, QueryParameter, SkipValidation
from litestar.response import Redirect

from tkcloud_api.http.dashboard.principal import CSRF_COOKIE, SESSION_COOKIE
from tkcloud_api.http.dashboard.schemas import (
    EmailBody,
    MeOut,
    OrgOut,
    SignedIn,
    TokenBody,
    UserOut,
)
from tkcloud_application.dashboard.organisations import Organisations, require_user
from tkcloud_application.identity.authentication import Authentication, SessionGrant
from tkcloud_domain.errors import DomainError, SignInFailed
from tkcloud_domain.identity import Principal

Auth = NamedDependency[SkipValidation[Authentication]]
OAUTH_STATE_COOKIE = "tk_oauth_state"
CALLBACK_PATH = "/api/v1/auth/github/callback"
Caller = NamedDependency[SkipValidation[Principal]]


def _session_cookies(grant: SessionGrant, secure: bool) -> list[Cookie]:
    max_age = int((grant.session.expires_at - grant.session.created_at).total_seconds())
    common: dict[str, Any] = {"path": "/", "secure": secure, "samesite": "lax", "max_age": max_age}
    return [
        Cookie(key=SESSION_COOKIE, value=grant.token, httponly=True, **common),
        # Readable by the dashboard's script, which echoes it in X-CSRF-Token.
        Cookie(key=CSRF_COOKIE, value=grant.csrf_token, httponly=False, **common),
    ]


def _cleared_cookies(secure: bool) -> list[Cookie]:
    return [
        Cookie(key=name, value="", path="/", secure=secure, samesite="lax", max_age=0)
        for name in (SESSION_COOKIE, CSRF_COOKIE)
    ]


def _signed_in(grant: SessionGrant) -> SignedIn:
    return SignedIn(
        UserOut.of(grant.user), grant.csrf_token, grant.session.expires_at, grant.redirect_to
    )


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["sign-in"]

    @get("/github/start", summary="Start GitHub sign-in (redirects to GitHub)", status_code=302)
    async def github_start(
        self,
        authentication: Auth,
        state: State,
        redirect_to: Annotated[str | None, QueryParameter(name="redirect_to")] = None,
    ) -> Redirect:
        url = await authentication.start_github(redirect_to)
        # The state also goes into a cookie of this browser: the callback must come back to the
        # browser that started, or an attacker could sign a victim in as the attacker (login
        # CSRF) by sending them a callback link of their own.
        oauth_state = parse_qs(urlsplit(url).query)["state"][0]
        cookie = Cookie(
            key=OAUTH_STATE_COOKIE, value=oauth_state, path=CALLBACK_PATH, httponly=True,
            secure=state.secure_cookies, samesite="lax", max_age=600,
        )  # fmt: skip
        return Redirect(url, status_code=302, cookies=[cookie])

    @get("/github/callback", summary="GitHub redirects here; opens a session", status_code=302)
    async def github_callback(
        self,
        authentication: Auth,
        state: State,
        code: Annotated[str | None, QueryParameter(name="code")] = None,
        oauth_state: Annotated[str, QueryParameter(name="state")] = "",
        error: Annotated[str | None, QueryParameter(name="error")] = None,
        browser_state: Annotated[str | None, CookieParameter(name=OAUTH_STATE_COOKIE)] = None,
    ) -> Redirect:
        """A browser lands here, so failures go back to the dashboard's sign-in page with the
        error code (and a readable reason) rather than as a JSON body."""
        cleared = Cookie(
            key=OAUTH_STATE_COOKIE, value="", path=CALLBACK_PATH, max_age=0,
            httponly=True, secure=state.secure_cookies, samesite="lax",
        )  # fmt: skip
        try:
            if error or not code:
                raise SignInFailed(f"GitHub did not approve the sign-in ({error or 'no code'})")
            if not browser_state or not hmac.compare_digest(browser_state, oauth_state):
                raise SignInFailed("The sign-in state does not match this browser: start again")
            grant = await authentication.finish_github(oauth_state, code)
        except DomainError as exc:
            query = urlencode({"error": exc.code, "reason": exc.message})
            return Redirect(
                f"{state.dashboard_url}/sign-in?{query}", status_code=302, cookies=[cleared]
            )
        return Redirect(
            f"{state.dashboard_url}{grant.redirect_to}",
            status_code=302,
            cookies=[*_session_cookies(grant, state.secure_cookies), cleared],
        )

    @post("/magic-link", summary="Email a sign-in link", status_code=202)
    async def magic_link(
        self, request: Request[Any, Any, Any], authentication: Auth, data: JSONBody[EmailBody]
    ) -> dict[str, str]:
        client = request.client.host if request.client else "unknown"
        await authentication.request_magic_link(data.email, client)
        return {"status": "sent"}

    @post("/magic-link/verify", summary="Exchange an emailed token for a session", status_code=200)
    async def magic_link_verify(
        self, authentication: Auth, state: State, data: JSONBody[TokenBody]
    ) -> Response[SignedIn]:
        grant = await authentication.verify_magic_link(data.token, data.redirect_to)
        return Response(_signed_in(grant), cookies=_session_cookies(grant, state.secure_cookies))

    @post("/logout", summary="End this session", status_code=200)
    async def logout(
        self, authentication: Auth, principal: Caller, state: State
    ) -> Response[dict[str, str]]:
        await authentication.logout(require_user(principal))
        return Response({"status": "signed_out"}, cookies=_cleared_cookies(state.secure_cookies))

    @post("/logout-everywhere", summary="End every session of this user", status_code=200)
    async def logout_everywhere(
        self, authentication: Auth, principal: Caller, state: State
    ) -> Response[dict[str, int]]:
        count = await authentication.logout_everywhere(require_user(principal))
        return Response({"sessions_revoked": count}, cookies=_cleared_cookies(state.secure_cookies))


@get("/api/v1/me", summary="The signed-in user and their orgs", tags=["sign-in"])
async def me(
    principal: Caller, organisations: NamedDependency[SkipValidation[Organisations]]
) -> MeOut:
    user = require_user(principal).user
    return MeOut(UserOut.of(user), [OrgOut.of(v) for v in await organisations.mine(principal)])
