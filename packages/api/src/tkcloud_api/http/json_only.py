"""The dashboard API takes JSON bodies only.

A page on another site can post a form or `text/plain` to us without the browser asking first;
it cannot send `application/json` (that needs a CORS preflight we never grant). Refusing other
bodies closes login CSRF (an attacker's sign-in token posted in the victim's browser) and every
other cross-site write that does not carry a CSRF token.
"""

from __future__ import annotations

from typing import Any

from litestar import Request

from tkcloud_domain.errors import DomainError

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class UnsupportedMediaType(DomainError):
    code = "ERR_UNSUPPORTED_MEDIA_TYPE"
    default_message = "Send the body as application/json"


async def require_json_body(request: Request[Any, Any, Any]) -> None:
    if request.method not in BODY_METHODS or not request.url.path.startswith("/api/"):
        return
    has_body = (
        request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    )
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if has_body and content_type != "application/json":
        raise UnsupportedMediaType()
