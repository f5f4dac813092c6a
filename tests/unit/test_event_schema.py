"""The event decoder/validator: what it accepts, what it rejects and with which reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tkcloud_domain.events import (
    INVALID_SCHEMA,
    MAX_EVENT_BYTES,
    NIL_UUID,
    EnvelopeError,
    EventRejection,
    EventSchema,
    decode_envelope,
    parse_event,
    parse_rfc3339,
)

NOW = datetime(2026, 12, 4, 15, 21, tzinfo=UTC)


def wire_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": "1.0.0",
        "event_id": "212ae2eb-17ce-48e1-a544-95173521796d",
        "timestamp": "2026-12-04T15:20:15.890821272Z",
        "service": {"name": "harness-app", "version": "1.2.3", "language": "rust"},
        "user_id": "client_" + "ab" * 32,
        "session_id": "sess_" + "cd" * 16,
        "environment": {"os": "linux", "arch": "x86_64", "ci": False, "shell": "bash"},
        "event": {
            "type": "command_execution",
            "category": "usage",
            "data": {"command": "build", "success": True, "duration_ms": 1000, "exit_code": 0},
        },
        "metadata": {"sdk_version": "telemetry-kit-rust/0.3.0", "batch_size": 1},
    }
    event.update(overrides)
    return event


def parse(event: Any, *, oldest: datetime | None = None) -> EventSchema | EventRejection:
    return parse_event(json.dumps(event).encode(), 3, now=NOW, oldest=oldest)


def test_a_full_sdk_event_is_decoded_into_the_flat_schema() -> None:
    parsed = parse(wire_event())
    assert isinstance(parsed, EventSchema)
    assert parsed.event_id == "212ae2eb-17ce-48e1-a544-95173521796d"
    assert parsed.timestamp == datetime(2026, 12, 4, 15, 20, 15, 890821, tzinfo=UTC)
    assert (parsed.service_name, parsed.service_version) == ("harness-app", "1.2.3")
    assert parsed.event_type == "command_execution"
    assert parsed.environment.os == "linux"
    assert parsed.environment.ci is False
    assert parsed.data_str("command") == "build"
    assert parsed.data_bool("success") is True
    assert parsed.data_int("duration_ms") == 1000
    assert parsed.sdk_version == "telemetry-kit-rust/0.3.0"


def test_optional_fields_may_be_absent_and_data_may_be_any_json() -> None:
    event = wire_event(event={"type": "custom_thing", "data": [1, "two", None]})
    del event["session_id"], event["environment"], event["metadata"]
    parsed = parse(event)
    assert isinstance(parsed, EventSchema)
    assert parsed.event_data == [1, "two", None]
    assert parsed.session_id is None
    assert parsed.data_str("command") is None
    assert parsed.sdk_version is None


def test_unknown_fields_are_kept_in_the_raw_event() -> None:
    parsed = parse(wire_event(extra_field={"kept": True}))
    assert isinstance(parsed, EventSchema)
    assert json.loads(parsed.raw)["extra_field"] == {"kept": True}


def test_event_id_is_stored_lowercase() -> None:
    parsed = parse(wire_event(event_id="212AE2EB-17CE-48E1-A544-95173521796D"))
    assert isinstance(parsed, EventSchema)
    assert parsed.event_id == "212ae2eb-17ce-48e1-a544-95173521796d"


@pytest.mark.parametrize(
    ("overrides", "message_start"),
    [
        ({"schema_version": "2.0.0"}, "schema_version"),
        ({"schema_version": "1.0"}, "schema_version"),
        ({"event_id": "not-a-uuid"}, "event_id"),
        ({"event_id": NIL_UUID}, "event_id"),
        ({"event_id": "212ae2eb17ce48e1a54495173521796d"}, "event_id"),
        ({"timestamp": "2026-12-04 15:20:15"}, "timestamp"),
        ({"timestamp": "2026-12-04T15:20:15.1234567890Z"}, "timestamp"),
        ({"timestamp": "2026-02-30T15:20:15Z"}, "timestamp"),
        ({"timestamp": 1796397615}, "timestamp"),
        ({"timestamp": "2026-12-04T15:40:00Z"}, "timestamp: more than 10 minutes in the future"),
        ({"user_id": "user_123"}, "user_id"),
        ({"user_id": 5}, "user_id"),
        ({"service": {"name": "", "version": "1"}}, "service.name"),
        ({"service": {"name": "x", "version": " "}}, "service.version"),
        ({"service": {"name": "x"}}, "service.version"),
        ({"event": {"type": ""}}, "event.type"),
        ({"event": {"category": "usage"}}, "event.type"),
        ({"environment": {"ci": "false"}}, "environment.ci"),
        ({"session_id": "s" * 200}, "session_id"),
    ],
)
def test_invalid_events_are_rejected_with_a_reason(
    overrides: dict[str, Any], message_start: str
) -> None:
    parsed = parse(wire_event(**overrides))
    assert isinstance(parsed, EventRejection)
    assert parsed.error == INVALID_SCHEMA
    assert parsed.index == 3
    assert parsed.message.startswith(message_start), parsed.message


def test_missing_required_field_is_named() -> None:
    event = wire_event()
    del event["user_id"]
    parsed = parse(event)
    assert isinstance(parsed, EventRejection)
    assert parsed.message == "user_id: required field missing"
    assert parsed.event_id == "212ae2eb-17ce-48e1-a544-95173521796d"


def test_a_rejection_carries_the_nil_uuid_when_the_event_has_no_valid_id() -> None:
    for entry in (42, "text", None, [1], wire_event(event_id="nope")):
        parsed = parse(entry)
        assert isinstance(parsed, EventRejection)
        assert parsed.event_id == NIL_UUID


def test_an_event_older_than_retention_is_rejected() -> None:
    parsed = parse(wire_event(), oldest=NOW - timedelta(seconds=10))
    assert isinstance(parsed, EventRejection)
    assert parsed.message == "timestamp: older than the app's retention"


def test_an_event_over_64_kib_is_rejected() -> None:
    parsed = parse(wire_event(event={"type": "big", "data": "x" * MAX_EVENT_BYTES}))
    assert isinstance(parsed, EventRejection)
    assert "larger than" in parsed.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-04T15:20:15Z", datetime(2026, 12, 4, 15, 20, 15, tzinfo=UTC)),
        ("2026-12-04T15:20:15.123Z", datetime(2026, 12, 4, 15, 20, 15, 123000, tzinfo=UTC)),
        ("2026-12-04T15:20:15.123456789Z", datetime(2026, 12, 4, 15, 20, 15, 123456, tzinfo=UTC)),
        ("2026-12-04T16:20:15+01:00", datetime(2026, 12, 4, 15, 20, 15, tzinfo=UTC)),
        ("2026-12-04t15:20:15.5-02:30", datetime(2026, 12, 4, 17, 50, 15, 500000, tzinfo=UTC)),
        ("2026-12-04T15:20:15", None),
        ("2026-12-04T15:20:60Z", None),
        ("2026-12-04T15:20:15+24:00", None),
        ("", None),
    ],
)
def test_rfc3339(text: str, expected: datetime | None) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[]", b'{"events": {}}', b'{"events": []}', b'{"batch": []}'],
)
def test_envelope_errors(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_envelope(body)


def test_envelope_rejects_more_than_1000_events() -> None:
    with pytest.raises(EnvelopeError, match="1 to 1000"):
        decode_envelope(b'{"events": [' + b",".join([b"{}"] * 1001) + b"]}")


def test_envelope_keeps_bad_entries_for_per_event_rejection() -> None:
    entries = decode_envelope(b'{"events": [1, "x", {"a": 2}]}')
    assert [bytes(e) for e in entries] == [b"1", b'"x"', b'{"a": 2}']


# --- property-based: no input crashes it, every rejection has a code -----------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

field_values = st.one_of(
    json_values,
    st.sampled_from(["1.0.0", "1.2.3", "2026-12-04T15:20:15Z", "client_x", "anon_y", ""]),
    st.uuids().map(str),
)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    event = wire_event()
    for key in draw(st.lists(st.sampled_from(sorted(event)), max_size=4, unique=True)):
        if draw(st.booleans()):
            del event[key]
        else:
            event[key] = draw(field_values)
    return event


def _check_outcome(outcome: EventSchema | EventRejection) -> None:
    if isinstance(outcome, EventRejection):
        assert outcome.error == INVALID_SCHEMA
        assert outcome.message
        assert outcome.index == 0
        # The SDK fails to parse a reply whose event_id is not a UUID.
        assert len(outcome.event_id) == 36
    else:
        assert outcome.timestamp.tzinfo is UTC
        assert outcome.timestamp <= NOW + timedelta(minutes=10)
        assert outcome.event_id == outcome.event_id.lower()


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(data: bytes) -> None:
    _check_outcome(parse_event(data, 0, now=NOW, oldest=None))
    try:
        decode_envelope(data)
    except EnvelopeError as exc:
        message = str(exc)
        assert message


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_never_crashes_the_decoder(value: Any) -> None:
    _check_outcome(parse_event(msgspec.json.encode(value), 0, now=NOW, oldest=None))


@settings(max_examples=500)
@given(mutated_events())
def test_mutated_sdk_events_are_accepted_or_rejected_with_a_code(event: dict[str, Any]) -> None:
    _check_outcome(parse_event(msgspec.json.encode(event), 0, now=NOW, oldest=None))


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamps_beyond_the_calendar_are_rejected_not_crashing(stamp: str) -> None:
    parsed = parse(wire_event(timestamp=stamp))
    assert isinstance(parsed, EventRejection)
    assert parsed.message.startswith("timestamp")


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    deep = b"[" * 20_000 + b"]" * 20_000
    raw = (
        json.dumps(wire_event()).encode().replace(b'"data": {', b'"deep": ' + deep + b', "data": {')
    )
    parsed = parse_event(raw, 0, now=NOW, oldest=None)
    assert isinstance(parsed, EventRejection)
    with pytest.raises(EnvelopeError, match="nested"):
        decode_envelope(b'{"events": [' + deep + b"]}")


def test_invalid_utf8_in_an_unknown_field_is_rejected() -> None:
    raw = json.dumps(wire_event()).encode().replace(b'"metadata"', b'"zz": "\xff\xfe", "metadata"')
    parsed = parse_event(raw, 0, now=NOW, oldest=None)
    assert isinstance(parsed, EventRejection)
    assert parsed.message == "event: not valid UTF-8"
