"""What the telemetry-kit SDK does on the wire, in Python, so tests can speak it.

Mirrors the Rust SDK: a JSON body of events, signed with HMAC-SHA256 over
`{timestamp}:{nonce}:{body}` keyed with the secret string, and the x-* headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def sign(secret: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = f"{timestamp}:{nonce}:".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sdk_event(moment: datetime, **overrides: Any) -> dict[str, Any]:
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    event: dict[str, Any] = {
        "schema_version": "1.0.0",
        "event_id": str(uuid.uuid4()),
        "timestamp": stamp,
        "service": {"name": "harness-app", "version": "1.2.3", "language": "rust"},
        "user_id": "client_" + "ab" * 32,
        "session_id": "sess_" + "cd" * 16,
        "environment": {"os": "linux", "arch": "x86_64", "ci": False, "shell": "bash"},
        "event": {
            "type": "command_execution",
            "category": "usage",
            "data": {"command": "build", "success": True, "duration_ms": 1000, "exit_code": 0},
        },
        "metadata": {
            "sdk_version": "telemetry-kit-rust/0.3.0",
            "transmission_timestamp": stamp,
            "batch_size": 1,
            "retry_count": 0,
        },
    }
    event.update(overrides)
    return event


def batch_body(events: list[Any]) -> bytes:
    return json.dumps({"events": events}, separators=(",", ":")).encode()


@dataclass
class SignedRequest:
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def signed_request(
    org_id: str,
    app_id: str,
    secret: str,
    body: bytes,
    *,
    now: datetime,
    nonce: str | None = None,
    batch_size: int | None = None,
    extra_headers: dict[str, str] | None = None,
) -> SignedRequest:
    timestamp = str(int(now.timestamp()))
    nonce = nonce or str(uuid.uuid4())
    headers = {
        "content-type": "application/json",
        "x-signature": sign(secret, timestamp, nonce, body),
        "x-timestamp": timestamp,
        "x-nonce": nonce,
        "x-sdk-version": "telemetry-kit-rust/0.3.0",
        "x-schema-version": "1.0.0",
    }
    if batch_size is not None:
        headers["x-batch-size"] = str(batch_size)
    headers.update(extra_headers or {})
    return SignedRequest(f"/v1/ingest/{org_id}/{app_id}", body, headers)
