"""The secret box (Fernet with rotation), the system clock and the id generator."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tkcloud_adapters.crypto import FernetSecretBox, generate_key
from tkcloud_adapters.system import RandomIdGenerator, SystemClock
from tkcloud_application.ports.system import Clock, IdGenerator, SecretBox

SECRET = "tks_signing-secret-ü-0001"


def test_a_secret_round_trips_and_is_not_stored_in_clear() -> None:
    box: SecretBox = FernetSecretBox(generate_key())
    first, second = box.encrypt(SECRET), box.encrypt(SECRET)
    assert SECRET not in first
    assert first != second  # a fresh IV each time
    assert box.decrypt(first) == box.decrypt(second) == SECRET


def test_rotation_the_first_key_encrypts_and_every_key_decrypts() -> None:
    old_key, new_key = generate_key(), generate_key()
    stored_before = FernetSecretBox(old_key).encrypt(SECRET)

    rotating = FernetSecretBox(f" {new_key} , {old_key} ")
    assert rotating.decrypt(stored_before) == SECRET
    stored_after = rotating.encrypt(SECRET)
    assert FernetSecretBox(new_key).decrypt(stored_after) == SECRET
    with pytest.raises(ValueError, match="not encrypted with any configured key"):
        FernetSecretBox(old_key).decrypt(stored_after)


@pytest.mark.parametrize("ciphertext", ["not-a-token", "gAAAAAB-corrupted", "ünicode"])
def test_an_undecryptable_value_raises_a_clear_value_error(ciphertext: str) -> None:
    with pytest.raises(ValueError, match="Cannot decrypt a stored secret"):
        FernetSecretBox(generate_key()).decrypt(ciphertext)


@pytest.mark.parametrize("key", ["", " , ", "\t"])
def test_an_empty_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        FernetSecretBox(key)


@pytest.mark.parametrize(
    ("key", "position"),
    [
        ("not-a-fernet-key", 1),
        ("c2hvcnQ=", 1),  # valid base64, too short
        (f"{generate_key()},definitely!not*base64", 2),
    ],
)
def test_a_bad_key_is_refused_without_echoing_it(key: str, position: int) -> None:
    with pytest.raises(ValueError, match=f"key #{position} is not a Fernet key") as raised:
        FernetSecretBox(key)
    bad_part = key.split(",")[-1]
    assert bad_part not in str(raised.value)


def test_generated_keys_are_fernet_keys() -> None:
    key = generate_key()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=", key)
    assert key != generate_key()


def test_the_system_clock_is_utc_and_aware() -> None:
    clock: Clock = SystemClock()
    now = clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_ids_are_prefixed_lowercase_base32_and_distinct() -> None:
    ids: IdGenerator = RandomIdGenerator()
    issued = {ids.new_id("org_") for _ in range(2000)}
    assert len(issued) == 2000
    assert all(re.fullmatch(r"org_[a-z2-7]{20}", value) for value in issued)
    # Every character of the alphabet turns up: the ids use all of it, not a subset.
    assert set("".join(value[4:] for value in issued)) == set("abcdefghijklmnopqrstuvwxyz234567")


def test_uuids_are_random_lowercase_hyphenated_and_distinct() -> None:
    ids = RandomIdGenerator()
    issued = {ids.new_uuid() for _ in range(200)}
    assert len(issued) == 200
    assert all(str(uuid.UUID(value)) == value for value in issued)
    assert {uuid.UUID(value).version for value in issued} == {4}


def test_secrets_are_prefixed_url_safe_and_distinct() -> None:
    ids = RandomIdGenerator()
    issued = {ids.secret("tks_") for _ in range(200)}
    assert len(issued) == 200
    assert all(re.fullmatch(r"tks_[A-Za-z0-9_-]{43}", value) for value in issued)
