"""Time and randomness are ports too: tests never sleep and never patch time."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class IdGenerator(Protocol):
    def new_id(self, prefix: str) -> str:
        """A fresh opaque id such as `org_3kq9...`: short, URL-safe, unguessable."""
        ...

    def new_uuid(self) -> str:
        """A fresh random UUID, lowercase and hyphenated: org and app ids are UUIDs because the
        telemetry-kit SDK parses them as such before building its ingest URL."""
        ...

    def secret(self, prefix: str) -> str:
        """A fresh secret value (token, signing secret, key) with the given prefix."""
        ...


class SecretBox(Protocol):
    """Encrypts signing secrets at rest; the key comes from configuration."""

    def encrypt(self, plaintext: str) -> str: ...

    def decrypt(self, ciphertext: str) -> str: ...
