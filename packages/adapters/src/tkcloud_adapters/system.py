"""The real clock and randomness behind the `Clock` and `IdGenerator` ports."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

# Lowercase RFC 4648 base32: URL-safe, case-insensitive, no look-alike 0/1/8.
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_ID_LENGTH = 20  # 100 random bits: unguessable and collision-free at any realistic scale


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class RandomIdGenerator:
    def new_id(self, prefix: str) -> str:
        return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))

    def new_uuid(self) -> str:
        return str(uuid.uuid4())  # from os.urandom: unguessable, like the prefixed ids

    def secret(self, prefix: str) -> str:
        return prefix + secrets.token_urlsafe(32)
