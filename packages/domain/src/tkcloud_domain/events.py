"""The event wire format (PROTOCOL.md) and the domain's flat `EventSchema` it is decoded into.

Decoding is two-staged so one bad event never sinks its batch: the envelope is decoded with each
entry kept as raw JSON bytes, then every entry is decoded and validated on its own. The decoders
are module-level, typed and strict (a string never passes for a number, or the other way round).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_EVENT_BYTES = 64 * 1024
MAX_EVENTS_PER_BATCH = 1000
MAX_FUTURE_SKEW = timedelta(minutes=10)
NIL_UUID = "00000000-0000-0000-0000-000000000000"

# Length limits on stored strings (the protocol leaves them to the service; docs/SYNC_PROTOCOL.md).
MAX_NAME_LENGTH = 128  # service.name, event.type, event.category
MAX_VERSION_LENGTH = 64  # service.version, service.language(_version), schema_version
MAX_ID_LENGTH = 128  # user_id, session_id
MAX_ENV_LENGTH = 128  # environment.* strings

INVALID_SCHEMA = "ERR_INVALID_SCHEMA"


# --- the wire ------------------------------------------------------------------------------------


class _Envelope(msgspec.Struct):
    events: list[msgspec.Raw]


class WireService(msgspec.Struct):
    name: str
    version: str
    language: str | None = None
    language_version: str | None = None


class WireEnvironment(msgspec.Struct):
    os: str | None = None
    os_version: str | None = None
    arch: str | None = None
    ci: bool | None = None
    shell: str | None = None


class WireEventBody(msgspec.Struct):
    type: str
    category: str | None = None
    data: Any = None


class WireEvent(msgspec.Struct):
    schema_version: str
    event_id: str
    timestamp: str
    service: WireService
    user_id: str
    event: WireEventBody
    session_id: str | None = None
    environment: WireEnvironment | None = None
    metadata: Any = None


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_event_decoder = msgspec.json.Decoder(WireEvent)


# --- the domain's view ---------------------------------------------------------------------------


class EventSchema(msgspec.Struct, frozen=True):
    """One validated event, flat as in the original design, plus the columns analytics group by."""

    schema_version: str
    event_id: str  # lowercase hyphenated UUID
    event_type: str
    timestamp: datetime  # UTC, microsecond precision
    user_id: str
    session_id: str | None
    service_name: str
    service_version: str
    event_data: Any
    environment: WireEnvironment
    metadata: Any
    event_category: str | None = None
    service_language: str | None = None
    service_language_version: str | None = None
    raw: bytes = b""  # the event's JSON text as sent: keeps unknown fields for the explorer

    # Derived from event_data for the built-in event types, so analytics never parse JSON.
    @property
    def sdk_version(self) -> str | None:
        value = self.metadata.get("sdk_version") if isinstance(self.metadata, dict) else None
        return value[:MAX_VERSION_LENGTH] if isinstance(value, str) else None

    def data_str(self, key: str, limit: int = MAX_NAME_LENGTH) -> str | None:
        value = self.event_data.get(key) if isinstance(self.event_data, dict) else None
        return value[:limit] if isinstance(value, str) else None

    def data_int(self, key: str) -> int | None:
        value = self.event_data.get(key) if isinstance(self.event_data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
            return value
        return None

    def data_bool(self, key: str) -> bool | None:
        value = self.event_data.get(key) if isinstance(self.event_data, dict) else None
        return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class EventRejection:
    index: int
    event_id: str  # always a UUID string: the SDK cannot parse the reply otherwise
    error: str
    message: str


class EnvelopeError(ValueError):
    """The body is not `{"events": [...]}` with 1-1000 entries."""


def decode_envelope(body: bytes) -> list[msgspec.Raw]:
    try:
        events = _envelope_decoder.decode(body).events
    except msgspec.DecodeError as exc:
        raise EnvelopeError(_describe(exc)) from exc
    except RecursionError as exc:  # thousands of nested arrays: refuse, do not crash
        raise EnvelopeError("JSON is nested too deeply") from exc
    if not 1 <= len(events) <= MAX_EVENTS_PER_BATCH:
        raise EnvelopeError(
            f"events: expected 1 to {MAX_EVENTS_PER_BATCH} events, got {len(events)}"
        )
    return events


_MSGSPEC_PATH = re.compile(r"^(?P<what>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.S)
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _describe(exc: msgspec.DecodeError) -> str:
    """Turn msgspec's "Expected `str`, got `int` - at `$.service.name`" into "service.name: ..."."""
    m = _MSGSPEC_PATH.match(str(exc))
    assert m is not None  # the pattern matches any text
    what, path = m.group("what"), m.group("path") or ""
    missing = _MISSING_FIELD.fullmatch(what)
    if missing:
        field = f"{path}.{missing.group('field')}" if path else missing.group("field")
        return f"{field}: required field missing"
    if not what[:2].isupper():  # "Expected ..." reads better lowercased; "JSON ..." must not be
        what = what[:1].lower() + what[1:]
    return f"{path}: {what}" if path else what


_SCHEMA_VERSION = re.compile(r"1\.(0|[1-9]\d*)\.(0|[1-9]\d*)\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d{2}):(\d{2}))\Z"
)
_EVENT_ID_IN_TEXT = re.compile(rb'"event_id"\s*:\s*"([^"\\]{36})"')


def parse_rfc3339(text: str) -> datetime | None:
    """RFC 3339, `Z` or a numeric offset, 0-9 fractional digits, truncated to microseconds."""
    m = _RFC3339.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction = m.group(7) or ""
    micro = int((fraction + "000000")[:6])
    tz = UTC
    if m.group(8):
        oh, om = int(m.group(9)), int(m.group(10))
        if oh > 23 or om > 59:
            return None
        offset = timedelta(hours=oh, minutes=om)
        tz = timezone(offset if m.group(8) == "+" else -offset)
    try:
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
        # 0001-01-01T00:00:00+01:00 is before datetime's first instant in UTC.
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, 31 February, second 60, out of range
        return None


def normalise_event_id(value: str) -> str | None:
    if _UUID.match(value) is None:
        return None
    lowered = value.lower()
    return None if lowered == NIL_UUID else lowered


def _best_effort_id(raw: bytes) -> str:
    """The event's own id for an error entry when it is a valid UUID, else the nil UUID."""
    m = _EVENT_ID_IN_TEXT.search(raw)
    if m is None:
        return NIL_UUID
    return normalise_event_id(m.group(1).decode("ascii", "replace")) or NIL_UUID


def parse_event(
    raw: bytes, index: int, *, now: datetime, oldest: datetime | None
) -> EventSchema | EventRejection:
    """Decode and validate one entry of `events`; never raises for bad input."""

    def reject(message: str, event_id: str | None = None) -> EventRejection:
        return EventRejection(index, event_id or _best_effort_id(raw), INVALID_SCHEMA, message)

    if len(raw) > MAX_EVENT_BYTES:
        return reject(f"event: larger than {MAX_EVENT_BYTES} bytes")
    try:
        wire = _event_decoder.decode(raw)
        # msgspec skips unknown fields without checking their UTF-8; the stored text must be.
        raw.decode("utf-8")
    except msgspec.DecodeError as exc:
        return reject(_describe(exc))
    except RecursionError:
        return reject("event: JSON nested too deeply")
    except UnicodeDecodeError:
        return reject("event: not valid UTF-8")

    event_id = normalise_event_id(wire.event_id)
    if event_id is None:
        return reject("event_id: expected a hyphenated, non-nil UUID")
    if _SCHEMA_VERSION.match(wire.schema_version) is None:
        return reject("schema_version: expected 1.x.y", event_id)
    timestamp = parse_rfc3339(wire.timestamp)
    if timestamp is None:
        return reject("timestamp: expected RFC 3339", event_id)
    if timestamp > now + MAX_FUTURE_SKEW:
        return reject("timestamp: more than 10 minutes in the future", event_id)
    if oldest is not None and timestamp < oldest:
        return reject("timestamp: older than the app's retention", event_id)
    problem = _check_strings(wire)
    if problem is not None:
        return reject(problem, event_id)

    environment = wire.environment or WireEnvironment()
    return EventSchema(
        schema_version=wire.schema_version,
        event_id=event_id,
        event_type=wire.event.type,
        event_category=wire.event.category,
        timestamp=timestamp,
        user_id=wire.user_id,
        session_id=wire.session_id,
        service_name=wire.service.name,
        service_version=wire.service.version,
        service_language=wire.service.language,
        service_language_version=wire.service.language_version,
        event_data=wire.event.data,
        environment=environment,
        metadata=wire.metadata,
        raw=bytes(raw),
    )


def _check_strings(wire: WireEvent) -> str | None:
    required = (
        ("service.name", wire.service.name, MAX_NAME_LENGTH),
        ("service.version", wire.service.version, MAX_VERSION_LENGTH),
        ("event.type", wire.event.type, MAX_NAME_LENGTH),
    )
    for name, value, limit in required:
        if not value.strip():
            return f"{name}: must not be empty"
        if len(value) > limit:
            return f"{name}: longer than {limit} characters"
    if not wire.user_id.startswith(("client_", "anon_")):
        return "user_id: expected a client_ or anon_ prefix"
    env = wire.environment
    optional = (
        ("user_id", wire.user_id, MAX_ID_LENGTH),
        ("session_id", wire.session_id, MAX_ID_LENGTH),
        ("event.category", wire.event.category, MAX_NAME_LENGTH),
        ("service.language", wire.service.language, MAX_VERSION_LENGTH),
        ("service.language_version", wire.service.language_version, MAX_VERSION_LENGTH),
        ("environment.os", env.os if env else None, MAX_ENV_LENGTH),
        ("environment.os_version", env.os_version if env else None, MAX_ENV_LENGTH),
        ("environment.arch", env.arch if env else None, MAX_ENV_LENGTH),
        ("environment.shell", env.shell if env else None, MAX_ENV_LENGTH),
    )
    for name, text, limit in optional:
        if text is not None and len(text) > limit:
            return f"{name}: longer than {limit} characters"
    return None
