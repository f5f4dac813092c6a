"""Signing secrets encrypted at rest with Fernet, with key rotation.

The configured key is a comma-separated list: the first key encrypts, every key decrypts. To
rotate, put a new key first, keep the old ones until every stored secret was re-encrypted, then
drop them.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


class FernetSecretBox:
    def __init__(self, key: str) -> None:
        keys = [part.strip() for part in key.split(",") if part.strip()]
        if not keys:
            raise ValueError("The secret-box key is empty: configure at least one Fernet key")
        fernets = []
        for position, part in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(part))
            except ValueError:  # also binascii.Error; the key itself is never echoed
                raise ValueError(
                    f"Secret-box key #{position} is not a Fernet key: expected 32 bytes in "
                    "URL-safe base64 (44 characters); generate one with generate_key()"
                ) from None
        self._fernet = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except (InvalidToken, UnicodeEncodeError):
            raise ValueError(
                "Cannot decrypt a stored secret: it was not encrypted with any configured key "
                "(was a key dropped from the list too early?) or it is corrupted"
            ) from None
