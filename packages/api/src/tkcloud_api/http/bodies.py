"""Response bodies as msgspec Structs, encoded once by a module-level encoder."""

from __future__ import annotations

from typing import Any

import msgspec

encoder = msgspec.json.Encoder()


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The nested error body of the protocol; `retry_after` is top level."""

    error: ErrorDetail
    retry_after: int | None = None


class EventError(msgspec.Struct):
    event_id: str
    index: int
    error: str
    message: str


class IngestSuccess(msgspec.Struct):
    status: str
    accepted: int
    rejected: int
    message: str
    duplicates: int


class IngestPartial(msgspec.Struct):
    status: str
    accepted: int
    rejected: int
    message: str
    errors: list[EventError]
    duplicates: int


class HealthBody(msgspec.Struct):
    status: str
    version: str
    checks: dict[str, str]
