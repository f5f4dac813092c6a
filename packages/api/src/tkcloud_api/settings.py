"""Settings from `TKCLOUD_*` environment variables: parsed once, typed, validated at start-up.

With none set, the service runs embedded: SQLite in the data folder and in-process caches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

PREFIX = "TKCLOUD_"


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

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError("port: expected 1-65535")
        if self.workers < 1:
            raise ValueError("workers: expected at least 1")
        if self.app_cache_seconds < 0 or self.rotation_grace_hours < 0:
            raise ValueError("app_cache_seconds and rotation_grace_hours must not be negative")
        if self.log_level.lower() not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("log_level: expected critical, error, warning, info or debug")
        url = self.database_url
        if url and not url.startswith((*_POSTGRES_SCHEMES, "sqlite+aiosqlite://")):
            raise ValueError("database_url: expected postgresql://... or sqlite+aiosqlite:///path")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url: expected redis://, rediss:// or unix://")
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


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    known = set(Settings.__struct_fields__)
    for name, value in env.items():
        if not name.startswith(PREFIX):
            continue
        field = name.removeprefix(PREFIX).lower()
        if field in known:
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
        return f"{PREFIX}{field.upper()}: {what} (got {values.get(field)!r})"
    field, sep, rest = message.partition(": ")
    if sep and field.isidentifier():
        return f"{PREFIX}{field.upper()}: {rest} (got {values.get(field)!r})"
    return message
