"""One place maps domain errors (and the framework's own) to statuses and the nested body."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from tkcloud_api.http.bodies import ErrorBody, ErrorDetail, encoder
from tkcloud_domain.errors import DomainError, RetryableError
from tkcloud_domain.limits import RateLimitState

logger = logging.getLogger("tkcloud.http")

STATUS_BY_CODE: dict[str, int] = {
    "ERR_INVALID_TOKEN": 403,
    "ERR_PAYLOAD_TOO_LARGE": 413,
    "ERR_INVALID_SIGNATURE": 401,
    "ERR_EXPIRED_TIMESTAMP": 401,
    "ERR_REPLAY_ATTACK": 401,
    "ERR_RATE_LIMIT": 429,
    "ERR_QUOTA_EXCEEDED": 429,
    "ERR_INVALID_REQUEST": 400,
    "ERR_INVALID_SCHEMA": 422,
    "ERR_SERVICE_UNAVAILABLE": 503,
    "ERR_NOT_FOUND": 404,
    "ERR_CONFLICT": 409,
    "ERR_VALIDATION": 422,
    "ERR_UNAUTHENTICATED": 401,
    "ERR_FORBIDDEN": 403,
    "ERR_INVALID_LINK": 400,
    "ERR_SIGN_IN_FAILED": 400,
    "ERR_NOT_CONFIGURED": 503,
    "ERR_INVALID_WEBHOOK": 400,
    "ERR_UNSUPPORTED_MEDIA_TYPE": 415,
}

_FRAMEWORK_CODES = {
    400: "ERR_INVALID_REQUEST",
    401: "ERR_UNAUTHENTICATED",
    403: "ERR_FORBIDDEN",
    404: "ERR_NOT_FOUND",
    405: "ERR_METHOD_NOT_ALLOWED",
    413: "ERR_PAYLOAD_TOO_LARGE",
    415: "ERR_UNSUPPORTED_MEDIA_TYPE",
    429: "ERR_RATE_LIMIT",
}

# 4xx are counted, not logged one by one (a misconfigured SDK can send thousands).
client_errors: Counter[str] = Counter()


def rate_limit_headers(state: RateLimitState | None) -> dict[str, str]:
    if state is None:
        return {}
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(state.remaining),
        "X-RateLimit-Reset": str(state.reset_seconds),
    }


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, object] | None = None,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    body = ErrorBody(ErrorDetail(code, message, details), retry_after)
    all_headers = dict(headers or {})
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    return Response(
        encoder.encode(body), status_code=status, media_type="application/json", headers=all_headers
    )


def domain_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, DomainError)
    status = STATUS_BY_CODE.get(exc.code, 500)
    if status >= 500:
        logger.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
    else:
        client_errors[exc.code] += 1
    headers = rate_limit_headers(exc.rate_limit)
    if status == 413:
        headers["Connection"] = "close"  # the rest of the body was not read
    retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
    return error_response(
        status, exc.code, exc.message, details=exc.details, retry_after=retry_after, headers=headers
    )


def http_exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status >= 500:
        return internal_error_handler(request, exc)
    code = _FRAMEWORK_CODES.get(status, "ERR_INVALID_REQUEST")
    if isinstance(exc, ValidationException):
        # A body or parameter of the dashboard API that does not fit its schema.
        status, code = 422, "ERR_VALIDATION"
    client_errors[code] += 1
    details: dict[str, object] | None = (
        {"errors": exc.extra} if isinstance(exc.extra, list) and exc.extra else None
    )
    headers = {"Connection": "close"} if status == 413 else None
    return error_response(status, code, exc.detail, details=details, headers=headers)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "ERR_INTERNAL", "Internal server error")


EXCEPTION_HANDLERS = {
    DomainError: domain_error_handler,
    HTTPException: http_exception_handler,
    Exception: internal_error_handler,
}
