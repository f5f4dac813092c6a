"""Domain errors. Each carries a stable code; the API maps codes to HTTP statuses in one place."""

from __future__ import annotations

from typing import Any, ClassVar

from tkcloud_domain.limits import RateLimitState


class DomainError(Exception):
    code: ClassVar[str] = "ERR_INTERNAL"
    default_message: ClassVar[str] = "Internal error"

    def __init__(
        self, message: str | None = None, *, details: dict[str, Any] | None = None
    ) -> None:
        self.message = message or self.default_message
        self.details = details
        # Set by ingestion once the rate limiter has answered: every answer past the nonce check
        # carries the X-RateLimit-* headers, errors included.
        self.rate_limit: RateLimitState | None = None
        super().__init__(self.message)


class RetryableError(DomainError):
    """An error the client should retry after `retry_after` seconds."""

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = max(1, int(retry_after))


# --- ingestion (PROTOCOL.md, check table) -----------------------------------------------------


class InvalidToken(DomainError):
    code = "ERR_INVALID_TOKEN"
    default_message = "Unknown or inactive app, or invalid token"


class PayloadTooLarge(DomainError):
    code = "ERR_PAYLOAD_TOO_LARGE"
    default_message = "Payload exceeds 5 MiB"


class InvalidSignature(DomainError):
    code = "ERR_INVALID_SIGNATURE"
    default_message = "Invalid signature"


class ExpiredTimestamp(DomainError):
    code = "ERR_EXPIRED_TIMESTAMP"
    default_message = "Timestamp outside the allowed window of 600 seconds"


class ReplayAttack(DomainError):
    code = "ERR_REPLAY_ATTACK"
    default_message = "Nonce already used"


class RateLimited(RetryableError):
    code = "ERR_RATE_LIMIT"
    default_message = "Rate limit exceeded"


class QuotaExceeded(RetryableError):
    code = "ERR_QUOTA_EXCEEDED"
    default_message = "Monthly event quota exceeded"


class InvalidRequest(DomainError):
    code = "ERR_INVALID_REQUEST"
    default_message = "Invalid request"


class AllEventsRejected(DomainError):
    code = "ERR_INVALID_SCHEMA"
    default_message = "All events rejected"


class ServiceUnavailable(RetryableError):
    code = "ERR_SERVICE_UNAVAILABLE"
    default_message = "Service temporarily unavailable"

    def __init__(self, dependency: str, *, retry_after: int = 5) -> None:
        super().__init__(
            f"Service temporarily unavailable ({dependency})",
            retry_after=retry_after,
            details={"dependency": dependency},
        )
        self.dependency = dependency


# --- management ---------------------------------------------------------------------------------


class NotFound(DomainError):
    code = "ERR_NOT_FOUND"
    default_message = "Not found"


class Conflict(DomainError):
    code = "ERR_CONFLICT"
    default_message = "Conflict"


class ValidationFailed(DomainError):
    code = "ERR_VALIDATION"
    default_message = "Invalid input"


class Unauthenticated(DomainError):
    code = "ERR_UNAUTHENTICATED"
    default_message = "Sign in first"


class Forbidden(DomainError):
    code = "ERR_FORBIDDEN"
    default_message = "Not allowed"


class InvalidLink(DomainError):
    """A sign-in link or invite that is unknown, used, expired or tampered with."""

    code = "ERR_INVALID_LINK"
    default_message = "This link is invalid or has expired"


class SignInFailed(DomainError):
    """The OAuth provider refused the code, the state was unknown or replayed, or the account
    has no verified email."""

    code = "ERR_SIGN_IN_FAILED"
    default_message = "Sign-in failed"


class NotConfigured(DomainError):
    """A feature whose provider (GitHub, SMTP, Stripe) the operator has not configured."""

    code = "ERR_NOT_CONFIGURED"
    default_message = "This feature is not configured on this server"


class InvalidWebhook(DomainError):
    """A webhook whose signature is missing, wrong or too old, or whose body is not an event."""

    code = "ERR_INVALID_WEBHOOK"
    default_message = "Invalid webhook signature or payload"
