"""Who is calling: a browser session (cookie, CSRF-checked on unsafe methods) or a program
(`Authorization: Bearer tkk_…`)."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State

from tkcloud_application.identity.authentication import Authentication
from tkcloud_domain.errors import Unauthenticated
from tkcloud_domain.identity import Principal

SESSION_COOKIE = "tk_session"
CSRF_COOKIE = "tk_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def provide_principal(request: Request[Any, Any, State], state: State) -> Principal:
    auth: Authentication = state.authentication
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("Expected `Authorization: Bearer <api key>`")
        return await auth.key_principal(key.strip())
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise Unauthenticated()
    principal = await auth.session_principal(token)
    if request.method not in SAFE_METHODS:
        auth.check_csrf(principal, request.headers.get(CSRF_HEADER))
    return principal
