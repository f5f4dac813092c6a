"""Postgres or Redis going away mid-run: 503s with retry_after, never a 200 for events that were
not stored, and recovery without a restart once the dependency is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.proxy import CuttableProxy
from tests.support.sdk import batch_body, sdk_event, signed_request
from tests.support.stack import Stack, running_stack, settings_for
from tkcloud_api.settings import Settings
from tkcloud_domain.plans import Plan


@pytest.fixture
async def proxied(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Stack, CuttableProxy, CuttableProxy]]:
    pg, rd = urlsplit(postgres_url), urlsplit(redis_url)
    pg_proxy = CuttableProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    redis_proxy = CuttableProxy(rd.hostname or "127.0.0.1", rd.port or 6379)
    await pg_proxy.start()
    await redis_proxy.start()
    base = settings_for(
        "postgres",
        tmp_path=tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        prefix=redis_prefix,
    )
    settings = Settings(
        **{
            **{f: getattr(base, f) for f in base.__struct_fields__},
            "database_url": postgres_url.replace(f":{pg.port}/", f":{pg_proxy.port}/"),
            "redis_url": redis_url.replace(f":{rd.port}", f":{redis_proxy.port}"),
        }
    )
    async with running_stack(settings, "postgres") as stack:
        yield stack, pg_proxy, redis_proxy
    await pg_proxy.cut()
    await redis_proxy.cut()


async def send_one(stack: Stack, org_id: str, app_id: str, secret: str) -> httpx.Response:
    body = batch_body([sdk_event(stack.clock.now())])
    return await stack.send(signed_request(org_id, app_id, secret, body, now=stack.clock.now()))


def assert_unavailable(response: httpx.Response, dependency: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"]["code"] == "ERR_SERVICE_UNAVAILABLE"
    assert body["error"]["details"] == {"dependency": dependency}
    assert body["retry_after"] >= 1
    assert response.headers["retry-after"] == str(body["retry_after"])


@pytest.mark.parametrize("dependency", ["database", "cache"])
async def test_a_dependency_going_away_gives_503_and_the_service_recovers(
    proxied: tuple[Stack, CuttableProxy, CuttableProxy], dependency: str
) -> None:
    stack, pg_proxy, redis_proxy = proxied
    proxy = pg_proxy if dependency == "database" else redis_proxy
    org, created = await stack.new_app(plan=Plan.PRO)
    args = (org.id, created.app.id, created.issued.secret)
    assert (await send_one(stack, *args)).status_code == 200

    await proxy.cut()
    for _ in range(3):
        assert_unavailable(await send_one(stack, *args), dependency)
    health = await stack.client.get("/health")
    assert health.status_code == 503
    expected = {"database": "ok", "cache": "ok"} | {dependency: "unavailable"}
    assert health.json()["checks"] == expected

    await proxy.start()
    assert (await send_one(stack, *args)).status_code == 200
    assert (await stack.client.get("/health")).status_code == 200
    # Only the two acknowledged events were stored.
    assert sum(r.events for r in await stack.tenancy.usage(org.id)) == 2


async def test_postgres_going_away_after_the_app_was_cached_still_never_acks(
    tmp_path: Path, postgres_url: str, redis_url: str, redis_prefix: str
) -> None:
    pg = urlsplit(postgres_url)
    proxy = CuttableProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    await proxy.start()
    base = settings_for(
        "postgres",
        tmp_path=tmp_path,
        postgres_url=postgres_url,
        redis_url=redis_url,
        prefix=redis_prefix,
    )
    settings = Settings(
        **{
            **{f: getattr(base, f) for f in base.__struct_fields__},
            "database_url": postgres_url.replace(f":{pg.port}/", f":{proxy.port}/"),
            "app_cache_seconds": 300.0,
        }
    )
    try:
        async with running_stack(settings, "postgres") as stack:
            org, created = await stack.new_app(plan=Plan.PRO)
            args = (org.id, created.app.id, created.issued.secret)
            assert (await send_one(stack, *args)).status_code == 200  # the app is now cached
            await proxy.cut()
            # Every check up to the write passes; the write itself fails: 503, not 200.
            assert_unavailable(await send_one(stack, *args), "database")
            await proxy.start()
            assert (await send_one(stack, *args)).status_code == 200
            assert sum(r.events for r in await stack.tenancy.usage(org.id)) == 2
    finally:
        await proxy.cut()
