"""Races against the real stores: a replayed nonce, the quota boundary, duplicate batches."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.support.sdk import batch_body, sdk_event, signed_request
from tests.support.stack import Stack
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Environment


async def test_a_nonce_raced_from_many_tasks_is_accepted_exactly_once(stack: Stack) -> None:
    org, created = await stack.new_app(plan=Plan.PRO)
    body = batch_body([sdk_event(stack.clock.now()) for _ in range(5)])
    request = signed_request(
        org.id, created.app.id, created.issued.secret, body, now=stack.clock.now()
    )
    responses = await asyncio.gather(*(stack.send(request) for _ in range(25)))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 1, 401: 24}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 401} == {
        "ERR_REPLAY_ATTACK"
    }
    assert sum(r.events for r in await stack.tenancy.usage(org.id)) == 5


async def test_quota_at_the_boundary_raced_admits_exactly_the_batches_under_it(
    stack: Stack,
) -> None:
    org, created = await stack.new_app(plan=Plan.PRO, environment=Environment.STAGING)
    app_id, secret = created.app.id, created.issued.secret
    now = stack.clock.now()
    prefill = batch_body([sdk_event(now) for _ in range(950)])
    assert (
        await stack.send(signed_request(org.id, app_id, secret, prefill, now=now))
    ).status_code == 200

    requests = [
        signed_request(
            org.id, app_id, secret, batch_body([sdk_event(now) for _ in range(10)]), now=now
        )
        for _ in range(20)
    ]
    responses = await asyncio.gather(*(stack.send(r) for r in requests))
    statuses = Counter(r.status_code for r in responses)
    # 950, 960, ..., 990 counted before: five batches are admitted, then the quota is used up.
    assert statuses == {200: 5, 429: 15}
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {
        "ERR_QUOTA_EXCEEDED"
    }
    assert sum(r.events for r in await stack.tenancy.usage(org.id)) == 1000


async def test_the_same_batch_raced_is_stored_once_and_every_copy_is_accepted(stack: Stack) -> None:
    org, created = await stack.new_app(plan=Plan.PRO)
    now = stack.clock.now()
    body = batch_body([sdk_event(now) for _ in range(20)])
    requests = [
        signed_request(org.id, created.app.id, created.issued.secret, body, now=now)
        for _ in range(10)
    ]
    responses = await asyncio.gather(*(stack.send(r) for r in requests))
    assert [r.status_code for r in responses] == [200] * 10
    replies = [r.json() for r in responses]
    assert all(reply["accepted"] == 20 for reply in replies)
    assert sum(20 - reply["duplicates"] for reply in replies) == 20
    assert sum(r.events for r in await stack.tenancy.usage(org.id)) == 20
