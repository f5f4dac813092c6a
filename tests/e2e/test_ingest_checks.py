"""One test per row of PROTOCOL.md's check table, against both wirings (Postgres + Redis, and
embedded SQLite + in-process caches), through the real HTTP app."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.support.sdk import batch_body, sdk_event, sign, signed_request
from tests.support.stack import Stack
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Environment

FIVE_MIB = 5 * 1024 * 1024


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body


def assert_rate_headers(response: httpx.Response) -> None:
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert response.headers[name].isdigit(), (name, response.headers)


async def stored_events(stack: Stack, org_id: str) -> int:
    return sum(row.events for row in await stack.tenancy.usage(org_id))


async def pro_app(stack: Stack, **kwargs: Any) -> tuple[str, str, str, str]:
    org, created = await stack.new_app(plan=Plan.PRO, **kwargs)
    return org.id, created.app.id, created.issued.secret, created.issued.token


# --- 1: app exists, is active, belongs to the org; a Bearer token, if sent, is live ----------


async def test_1_unknown_app_is_refused(stack: Stack) -> None:
    org_id, _, secret, _ = await pro_app(stack)
    body = batch_body([sdk_event(stack.clock.now())])
    response = await stack.send(
        signed_request(org_id, str(uuid.uuid4()), secret, body, now=stack.clock.now())
    )
    assert_error(response, 403, "ERR_INVALID_TOKEN")


async def test_1_app_of_another_org_is_refused(stack: Stack) -> None:
    _, app_id, secret, _ = await pro_app(stack)
    other_org, _, _, _ = await pro_app(stack)
    body = batch_body([sdk_event(stack.clock.now())])
    response = await stack.send(
        signed_request(other_org, app_id, secret, body, now=stack.clock.now())
    )
    assert_error(response, 403, "ERR_INVALID_TOKEN")


async def test_1_bearer_token_must_be_a_live_token_of_the_app(stack: Stack) -> None:
    org_id, app_id, secret, token = await pro_app(stack)
    _, _, _, other_token = await pro_app(stack)
    now = stack.clock.now()
    wrong = signed_request(
        org_id,
        app_id,
        secret,
        batch_body([sdk_event(now)]),
        now=now,
        extra_headers={"authorization": f"Bearer {other_token}"},
    )
    assert_error(await stack.send(wrong), 403, "ERR_INVALID_TOKEN")
    right = signed_request(
        org_id,
        app_id,
        secret,
        batch_body([sdk_event(now)]),
        now=now,
        extra_headers={"authorization": f"Bearer {token}"},
    )
    assert (await stack.send(right)).status_code == 200


async def test_1_revoked_credentials_are_refused(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    await stack.tenancy.revoke_credentials(app_id)
    body = batch_body([sdk_event(stack.clock.now())])
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=stack.clock.now()))
    # No live secret: the signature cannot verify.
    assert_error(response, 401, "ERR_INVALID_SIGNATURE")


# --- 2: body <= 5 MiB, as sent and after decompression --------------------------------------


async def test_2_body_over_5_mib_is_refused_and_the_connection_closed(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    body = b'{"events":[' + b" " * FIVE_MIB + b"]}"
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=stack.clock.now()))
    assert_error(response, 413, "ERR_PAYLOAD_TOO_LARGE")
    assert response.headers["connection"] == "close"


async def test_2_body_exactly_5_mib_is_read(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    event = json.dumps(sdk_event(stack.clock.now())).encode()
    body = b'{"events":[' + event + b"]}"
    body = body[:-1] + b" " * (FIVE_MIB - len(body)) + b"}"
    assert len(body) == FIVE_MIB
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=stack.clock.now()))
    assert response.status_code == 200, response.text


async def test_2_gzip_bomb_is_refused(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    body = gzip.compress(b'{"events":[' + b" " * (FIVE_MIB + 10) + b"]}")
    assert len(body) < 100_000
    request = signed_request(
        org_id,
        app_id,
        secret,
        body,
        now=stack.clock.now(),
        extra_headers={"content-encoding": "gzip"},
    )
    assert_error(await stack.send(request), 413, "ERR_PAYLOAD_TOO_LARGE")


async def test_2_gzip_is_accepted_and_the_signature_covers_the_bytes_as_sent(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    body = gzip.compress(batch_body([sdk_event(stack.clock.now())]))
    request = signed_request(
        org_id,
        app_id,
        secret,
        body,
        now=stack.clock.now(),
        extra_headers={"content-encoding": "gzip"},
    )
    response = await stack.send(request)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1


async def test_1_comes_before_2(stack: Stack) -> None:
    org_id, _, secret, _ = await pro_app(stack)
    body = b"x" * (FIVE_MIB + 1)
    response = await stack.send(
        signed_request(org_id, str(uuid.uuid4()), secret, body, now=stack.clock.now())
    )
    assert_error(response, 403, "ERR_INVALID_TOKEN")


# --- 3: signature headers present and well-formed --------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-signature", None),
        ("x-timestamp", None),
        ("x-nonce", None),
        ("x-signature", "zz" * 32),
        ("x-signature", "ab" * 31),
        ("x-timestamp", "1796397615.5"),
        ("x-timestamp", "yesterday"),
        ("x-nonce", "not-a-uuid"),
    ],
)
async def test_3_missing_or_malformed_signature_headers(
    stack: Stack, header: str, value: str | None
) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    request = signed_request(
        org_id, app_id, secret, batch_body([sdk_event(stack.clock.now())]), now=stack.clock.now()
    )
    if value is None:
        del request.headers[header]
    else:
        request.headers[header] = value
    assert_error(await stack.send(request), 401, "ERR_INVALID_SIGNATURE")


# --- 4: |now - x-timestamp| <= 600 s ---------------------------------------------------------


@pytest.mark.parametrize(("skew", "ok"), [(-600, True), (600, True), (-601, False), (601, False)])
async def test_4_timestamp_window(stack: Stack, skew: int, ok: bool) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    now = stack.clock.now()
    body = batch_body([sdk_event(now)])
    request = signed_request(org_id, app_id, secret, body, now=now + timedelta(seconds=skew))
    response = await stack.send(request)
    if ok:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, 401, "ERR_EXPIRED_TIMESTAMP")


# --- 5: the signature verifies ----------------------------------------------------------------


async def test_5_wrong_secret_or_tampered_body_is_refused(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    now = stack.clock.now()
    body = batch_body([sdk_event(now)])
    wrong = signed_request(org_id, app_id, "not-the-secret", body, now=now)
    assert_error(await stack.send(wrong), 401, "ERR_INVALID_SIGNATURE")
    tampered = signed_request(org_id, app_id, secret, body, now=now)
    tampered.body = body.replace(b"build", b"bulid")
    assert_error(await stack.send(tampered), 401, "ERR_INVALID_SIGNATURE")


async def test_5_uppercase_hex_signature_verifies(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    request = signed_request(
        org_id, app_id, secret, batch_body([sdk_event(stack.clock.now())]), now=stack.clock.now()
    )
    request.headers["x-signature"] = request.headers["x-signature"].upper()
    assert (await stack.send(request)).status_code == 200


async def test_5_rotation_keeps_the_old_secret_valid_for_the_grace_period(stack: Stack) -> None:
    org_id, app_id, old_secret, _ = await pro_app(stack)
    issued = await stack.tenancy.rotate_credentials(app_id)
    for secret in (old_secret, issued.secret):
        body = batch_body([sdk_event(stack.clock.now())])
        response = await stack.send(
            signed_request(org_id, app_id, secret, body, now=stack.clock.now())
        )
        assert response.status_code == 200, response.text
    stack.clock.advance(24 * 3600 + 1)
    body = batch_body([sdk_event(stack.clock.now())])
    late_old = signed_request(org_id, app_id, old_secret, body, now=stack.clock.now())
    assert_error(await stack.send(late_old), 401, "ERR_INVALID_SIGNATURE")
    new = signed_request(org_id, app_id, issued.secret, body, now=stack.clock.now())
    assert (await stack.send(new)).status_code == 200


# --- 6: the nonce was not seen before ---------------------------------------------------------


async def test_6_replayed_nonce_is_refused(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    request = signed_request(
        org_id, app_id, secret, batch_body([sdk_event(stack.clock.now())]), now=stack.clock.now()
    )
    assert (await stack.send(request)).status_code == 200
    assert_error(await stack.send(request), 401, "ERR_REPLAY_ATTACK")
    # Still refused just before the request's own timestamp window closes.
    stack.clock.advance(599)
    assert_error(await stack.send(request), 401, "ERR_REPLAY_ATTACK")


async def test_6_a_request_failing_the_signature_does_not_burn_its_nonce(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    now = stack.clock.now()
    body = batch_body([sdk_event(now)])
    nonce = str(uuid.uuid4())
    bad = signed_request(org_id, app_id, "wrong", body, now=now, nonce=nonce)
    assert_error(await stack.send(bad), 401, "ERR_INVALID_SIGNATURE")
    good = signed_request(org_id, app_id, secret, body, now=now, nonce=nonce)
    assert (await stack.send(good)).status_code == 200


async def test_6_the_same_nonce_for_another_app_is_fine(stack: Stack) -> None:
    nonce = str(uuid.uuid4())
    for _ in range(2):
        org_id, app_id, secret, _ = await pro_app(stack)
        body = batch_body([sdk_event(stack.clock.now())])
        request = signed_request(org_id, app_id, secret, body, now=stack.clock.now(), nonce=nonce)
        assert (await stack.send(request)).status_code == 200


# --- DNT ----------------------------------------------------------------------------------------


async def test_dnt_request_stores_nothing_and_answers_204(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    body = batch_body([sdk_event(stack.clock.now())])
    request = signed_request(
        org_id, app_id, secret, body, now=stack.clock.now(), extra_headers={"dnt": "1"}
    )
    response = await stack.send(request)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["x-ratelimit-limit"] == "100"
    assert response.headers["x-ratelimit-remaining"] == "100"  # a DNT request is not counted
    assert await stored_events(stack, org_id) == 0
    assert await (await stack.container.event_store()).dnt_requests(app_id) == 1


# --- 7: the plan's request rate -------------------------------------------------------------


async def test_7_free_plan_allows_10_requests_a_minute(stack: Stack) -> None:
    org, created = await stack.new_app(plan=Plan.FREE)
    secret = created.issued.secret
    for i in range(10):
        body = batch_body([sdk_event(stack.clock.now())])
        response = await stack.send(
            signed_request(org.id, created.app.id, secret, body, now=stack.clock.now())
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "10"
        assert response.headers["x-ratelimit-remaining"] == str(9 - i)
        stack.clock.advance(1)
    body = batch_body([sdk_event(stack.clock.now())])
    response = await stack.send(
        signed_request(org.id, created.app.id, secret, body, now=stack.clock.now())
    )
    error = assert_error(response, 429, "ERR_RATE_LIMIT")
    assert error["retry_after"] == 50  # the first request leaves the window at t=60
    assert response.headers["retry-after"] == "50"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.headers["x-ratelimit-reset"] == "50"
    stack.clock.advance(50)
    body = batch_body([sdk_event(stack.clock.now())])
    response = await stack.send(
        signed_request(org.id, created.app.id, secret, body, now=stack.clock.now())
    )
    assert response.status_code == 200


async def test_7_the_limit_is_per_org_across_its_apps(stack: Stack) -> None:
    org, first = await stack.new_app(plan=Plan.FREE)
    second = await stack.tenancy.create_app(org.id, "second", Environment.PRODUCTION)
    for i in range(10):
        app = first if i % 2 else second
        body = batch_body([sdk_event(stack.clock.now())])
        response = await stack.send(
            signed_request(org.id, app.app.id, app.issued.secret, body, now=stack.clock.now())
        )
        assert response.status_code == 200
    body = batch_body([sdk_event(stack.clock.now())])
    response = await stack.send(
        signed_request(org.id, first.app.id, first.issued.secret, body, now=stack.clock.now())
    )
    assert_error(response, 429, "ERR_RATE_LIMIT")


# --- 8: the monthly event quota --------------------------------------------------------------


async def test_8_staging_app_quota_is_1000_a_month_with_at_most_one_batch_over(
    stack: Stack,
) -> None:
    org, created = await stack.new_app(plan=Plan.PRO, environment=Environment.STAGING)
    app_id, secret = created.app.id, created.issued.secret

    async def send(count: int) -> httpx.Response:
        body = batch_body([sdk_event(stack.clock.now()) for _ in range(count)])
        return await stack.send(signed_request(org.id, app_id, secret, body, now=stack.clock.now()))

    assert (await send(999)).status_code == 200
    response = await send(50)  # 999 counted before it: admitted whole
    assert response.status_code == 200
    assert response.json()["accepted"] == 50
    response = await send(1)
    error = assert_error(response, 429, "ERR_QUOTA_EXCEEDED")
    seconds_to_january = int((datetime(2027, 1, 1, tzinfo=UTC) - stack.clock.now()).total_seconds())
    assert error["retry_after"] == seconds_to_january
    assert response.headers["retry-after"] == str(seconds_to_january)
    assert_rate_headers(response)
    assert await stored_events(stack, org.id) == 1049

    stack.clock.set(datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert (await send(1)).status_code == 200


async def test_8_rejected_and_duplicate_events_are_given_back_to_the_quota(stack: Stack) -> None:
    org, created = await stack.new_app(plan=Plan.PRO, environment=Environment.STAGING)
    app_id, secret = created.app.id, created.issued.secret
    now = stack.clock.now()
    events = [sdk_event(now) for _ in range(500)]
    body = batch_body(events)
    assert (
        await stack.send(signed_request(org.id, app_id, secret, body, now=now))
    ).status_code == 200
    for _ in range(3):  # the same 500 again: duplicates, not counted
        response = await stack.send(signed_request(org.id, app_id, secret, body, now=now))
        assert response.json() == {
            "status": "success",
            "accepted": 500,
            "rejected": 0,
            "message": "All events ingested successfully",
            "duplicates": 500,
        }
    bad = batch_body([sdk_event(now, user_id="nobody") for _ in range(400)])
    assert (
        await stack.send(signed_request(org.id, app_id, secret, bad, now=now))
    ).status_code == 422
    fresh = batch_body([sdk_event(now) for _ in range(499)])
    assert (
        await stack.send(signed_request(org.id, app_id, secret, fresh, now=now))
    ).status_code == 200
    assert await stored_events(stack, org.id) == 999


# --- 9: body shape ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"[]", b'{"events":{}}', b'{"events":[]}', b'{"nope":[]}', b'"events"'],
)
async def test_9_malformed_body_is_a_bad_request(stack: Stack, body: bytes) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=stack.clock.now()))
    assert_error(response, 400, "ERR_INVALID_REQUEST")
    assert_rate_headers(response)


async def test_9_more_than_1000_events_is_a_bad_request(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    body = batch_body([{}] * 1001)
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=stack.clock.now()))
    assert_error(response, 400, "ERR_INVALID_REQUEST")


async def test_9_x_batch_size_must_match(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    body = batch_body([sdk_event(stack.clock.now())] * 1)
    request = signed_request(org_id, app_id, secret, body, now=stack.clock.now(), batch_size=2)
    assert_error(await stack.send(request), 400, "ERR_INVALID_REQUEST")
    assert await stored_events(stack, org_id) == 0


# --- 10: each event valid ---------------------------------------------------------------------


async def test_10_some_events_rejected_is_207_with_reasons(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    now = stack.clock.now()
    good = [sdk_event(now) for _ in range(3)]
    bad_id = sdk_event(now, event_id="nope")
    bad_time = sdk_event(now, timestamp="yesterday")
    body = batch_body([good[0], bad_id, good[1], bad_time, good[2], 7])
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=now, batch_size=6))
    assert response.status_code == 207, response.text
    reply = response.json()
    assert reply["status"] == "partial"
    assert (reply["accepted"], reply["rejected"], reply["duplicates"]) == (3, 3, 0)
    assert reply["message"] == "3 events rejected"
    assert [(e["index"], e["event_id"], e["error"]) for e in reply["errors"]] == [
        (1, "00000000-0000-0000-0000-000000000000", "ERR_INVALID_SCHEMA"),
        (3, bad_time["event_id"], "ERR_INVALID_SCHEMA"),
        (5, "00000000-0000-0000-0000-000000000000", "ERR_INVALID_SCHEMA"),
    ]
    assert reply["errors"][1]["message"] == "timestamp: expected RFC 3339"
    assert_rate_headers(response)
    assert await stored_events(stack, org_id) == 3


async def test_10_all_events_rejected_is_422_nested(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    now = stack.clock.now()
    body = batch_body([sdk_event(now, schema_version="2.0.0"), sdk_event(now, user_id="x")])
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=now))
    error = assert_error(response, 422, "ERR_INVALID_SCHEMA")
    assert error["error"]["message"] == "All events rejected"
    assert [e["index"] for e in error["error"]["details"]["errors"]] == [0, 1]
    assert_rate_headers(response)


async def test_10_an_event_id_already_stored_is_a_duplicate_whatever_its_content(
    stack: Stack,
) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    now = stack.clock.now()
    first = sdk_event(now)
    body = batch_body([first])
    assert (
        await stack.send(signed_request(org_id, app_id, secret, body, now=now))
    ).status_code == 200
    changed = dict(first, event={"type": "something_else"})
    twice_in_batch = sdk_event(now)
    body = batch_body([changed, twice_in_batch, twice_in_batch])
    response = await stack.send(signed_request(org_id, app_id, secret, body, now=now))
    assert response.json()["accepted"] == 3
    assert response.json()["duplicates"] == 2
    assert await stored_events(stack, org_id) == 2


async def test_signature_secret_is_the_utf8_string_not_base64(stack: Stack) -> None:
    secret = "c2VjcmV0"  # valid base64: must still be used as the literal string
    org_id, app_id, _, _ = await pro_app(stack, secret=secret)
    now = stack.clock.now()
    body = batch_body([sdk_event(now)])
    timestamp = str(int(now.timestamp()))
    nonce = str(uuid.uuid4())
    headers = {
        "x-signature": sign(secret, timestamp, nonce, body),
        "x-timestamp": timestamp,
        "x-nonce": nonce,
        "content-type": "application/json",
    }
    response = await stack.client.post(
        f"/v1/ingest/{org_id}/{app_id}", content=body, headers=headers
    )
    assert response.status_code == 200


async def test_2_a_multi_member_gzip_body_is_read_whole(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    body = batch_body([sdk_event(stack.clock.now())])
    half = len(body) // 2
    compressed = gzip.compress(body[:half]) + gzip.compress(body[half:])
    request = signed_request(
        org_id, app_id, secret, compressed, now=stack.clock.now(),
        extra_headers={"content-encoding": "gzip"},
    )  # fmt: skip
    response = await stack.send(request)
    assert response.status_code == 200, response.text


async def test_a_bad_encoding_is_reported_only_after_the_signature_checks(stack: Stack) -> None:
    org_id, app_id, secret, _ = await pro_app(stack)
    now = stack.clock.now()
    for encoding, body in (("br", b"\x00\x01"), ("gzip", b"not gzip at all")):
        unsigned = signed_request(
            org_id, app_id, "wrong", body, now=now, extra_headers={"content-encoding": encoding}
        )
        assert_error(await stack.send(unsigned), 401, "ERR_INVALID_SIGNATURE")
        signed = signed_request(
            org_id, app_id, secret, body, now=now, extra_headers={"content-encoding": encoding}
        )
        assert_error(await stack.send(signed), 400, "ERR_INVALID_REQUEST")
