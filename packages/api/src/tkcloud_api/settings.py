"""Settings from `TKCLOUD_*` environment variables: parsed once, typed, validated at start-up.

With none set, the service runs embedded: SQLite in the data folder and in-process caches.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

PREFIX = "TKCLOUD_"


# TKCLOUD_* variables that are not service settings: the test suite's and alembic's own.
_NOT_SETTINGS = (f"{PREFIX}TEST_", f"{PREFIX}MIGRATIONS_DIR")
_SECRET_IN_URL = re.compile(r"(//[^:/@]*:)[^@]*@")

_POSTGRES_SCHEMES = ("postgresql+asyncpg://", "postgresql://", "postgres://")


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the variable and what is expected."""


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    database_url: str = ""  # empty: SQLite at <data_dir>/tkcloud.db
    redis_url: str = ""  # empty: in-process caches (one process only)
    redis_prefix: str = "tkcloud:"
    secret_key: str = ""  # Fernet key(s), comma-separated; empty: <data_dir>/secret.key (embedded)
    data_dir: str = ".tkcloud"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    region: str = "local"
    public_url: str = ""  # how SDKs reach this service; default http://host:port
    app_cache_seconds: float = 5.0
    rotation_grace_hours: float = 24.0
    auto_migrate: bool = True
    access_log: bool = False
    log_level: str = "info"
    # Sign-in
    dashboard_url: str = ""  # where sign-in and invite links land; default: public_url
    session_days: int = 30
    cookie_secure: str = "auto"  # auto: Secure cookies unless the public URL is plain http
    github_client_id: str = ""  # empty: GitHub sign-in answers 503 ERR_NOT_CONFIGURED
    github_client_secret: str = ""
    github_url: str = "https://github.com"  # OAuth endpoints (tests point it at a stand-in)
    github_api_url: str = "https://api.github.com"
    # Billing (Stripe); without a secret key billing endpoints answer 503 ERR_NOT_CONFIGURED
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_price_pro: str = ""  # Stripe price ids, per plan
    stripe_price_business: str = ""
    stripe_api_base: str = ""  # empty: Stripe's own; tests point it at a stand-in
    billing_job_seconds: float = 60.0  # how often scheduled downgrades and grace ends are applied
    retention_job_seconds: float = 3600.0  # how often events past their plan's retention go
    rollup_job_seconds: float = 1.0  # how often stored batches are folded into the rollups
    # Mail
    smtp_url: str = ""  # smtp://user:pass@host:587 (STARTTLS) or smtps://...; empty: outbox
    mail_from: str = "telemetry-kit cloud <noreply@localhost>"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port: expected 1-65535")
        if self.workers < 1:
            raise ValueError("workers: expected at least 1")
        for name in ("app_cache_seconds", "rotation_grace_hours"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: expected a finite number, 0 or more")
        if self.log_level.lower() not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("log_level: expected critical, error, warning, info or debug")
        url = self.database_url
        if url and not url.startswith((*_POSTGRES_SCHEMES, "sqlite+aiosqlite://")):
            raise ValueError("database_url: expected postgresql://... or sqlite+aiosqlite:///path")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url: expected redis://, rediss:// or unix://")
        if self.session_days < 1:
            raise ValueError("session_days: expected at least 1")
        if self.cookie_secure not in {"auto", "true", "false"}:
            raise ValueError("cookie_secure: expected auto, true or false")
        if self.smtp_url:
            parts = urlsplit(self.smtp_url)
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                raise ValueError("smtp_url: expected smtp://user:password@host:port or smtps://...")
        name, address = parseaddr(self.mail_from)
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            raise ValueError("mail_from: expected an address, e.g. Name <noreply@example.com>")
        if self.stripe_secret_key and not (
            self.stripe_webhook_secret and self.stripe_price_pro and self.stripe_price_business
        ):
            raise ValueError(
                "stripe_secret_key: also set TKCLOUD_STRIPE_WEBHOOK_SECRET, "
                "TKCLOUD_STRIPE_PRICE_PRO and TKCLOUD_STRIPE_PRICE_BUSINESS"
            )
        for job in ("billing_job_seconds", "retention_job_seconds", "rollup_job_seconds"):
            if not math.isfinite(getattr(self, job)) or getattr(self, job) <= 0:
                raise ValueError(f"{job}: expected a positive number")
        if bool(self.github_client_id) != bool(self.github_client_secret):
            raise ValueError("github_client_id: set both GitHub client id and secret, or neither")
        if re.fullmatch(r"[a-z0-9-]{1,32}", self.region) is None:
            raise ValueError("region: expected 1-32 characters of a-z, 0-9 and -")

    @property
    def embedded_database(self) -> bool:
        return not self.database_url or self.database_url.startswith("sqlite")

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: postgres:// and postgresql:// are served by asyncpg."""
        for scheme in _POSTGRES_SCHEMES:
            if self.database_url.startswith(scheme):
                return "postgresql+asyncpg://" + self.database_url.removeprefix(scheme)
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path(self.data_dir).resolve() / 'tkcloud.db'}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_dashboard_url(self) -> str:
        return (self.dashboard_url or self.resolved_public_url).rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure == "auto":
            return not self.resolved_public_url.startswith("http://")
        return self.cookie_secure == "true"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    known = set(Settings.__struct_fields__)
    for name, value in env.items():
        if not name.startswith(PREFIX) or name.startswith(_NOT_SETTINGS):
            continue
        field = name.removeprefix(PREFIX).lower()
        if field not in known:
            # A misspelt variable would otherwise quietly leave its default in force.
            raise SettingsError(
                f"{name}: unknown setting; known: "
                + ", ".join(PREFIX + f.upper() for f in Settings.__struct_fields__)
            )
        values[field] = value
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(_explain(str(exc), values)) from exc


def _explain(message: str, values: Mapping[str, str]) -> str:
    # msgspec: "Expected `int`, got `str` - at `$.port`" -> "TKCLOUD_PORT: expected `int` (got 'x')"
    m = re.match(r"(?P<what>.*) - at `\$\.(?P<field>\w+)`$", message)
    if m:
        field = m.group("field")
        what = m.group("what").replace("Expected", "expected").replace(", got `str`", "")
        return f"{PREFIX}{field.upper()}: {what} (got {_shown(field, values.get(field))!r})"
    field, sep, rest = message.partition(": ")
    if sep and field.isidentifier():
        return f"{PREFIX}{field.upper()}: {rest} (got {_shown(field, values.get(field))!r})"
    return message


def _shown(field: str, value: str | None) -> str | None:
    """The value as it may appear in a log: secrets and passwords inside URLs are masked."""
    if value is None:
        return None
    if "secret" in field or field.endswith("_key"):
        return "***"
    return _SECRET_IN_URL.sub(r"\1***@", value)
