"""`CachedIngestDirectory`: the in-process cache in front of the ingest directory (hits, expiry by
the injected clock, negative caching, invalidation)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.fakes.storage import FakeDatabase, FakeEventStore, FakeIngestDirectory, FakeSecretBox
from tests.fakes.storage import FakeTenancyUnitOfWork as FakeUow
from tests.fakes.system import FakeClock
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.ingestion.app_cache import CachedIngestDirectory
from tkcloud_application.tenancy.operations import TenancyOperations
from tkcloud_domain.errors import ServiceUnavailable
from tkcloud_domain.plans import Plan, limits_for
from tkcloud_domain.tenancy import Environment, IngestApp, LiveSecret, hash_token

ORG = "550e8400-e29b-41d4-a716-446655440000"
APP = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
OTHER_ORG = "11111111-2222-4333-8444-555555555555"
OTHER_APP = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
TTL = 5.0


def ingest_app(org_id: str = ORG, app_id: str = APP, *, plan: Plan = Plan.PRO) -> IngestApp:
    return IngestApp(
        org_id=org_id,
        app_id=app_id,
        environment=Environment.PRODUCTION,
        active=True,
        plan=plan,
        org_limits=limits_for(plan),
        secrets=(LiveSecret(hash_token("tk_token"), "secret", None),),
    )


def cached(
    *apps: IngestApp, ttl: float = TTL
) -> tuple[CachedIngestDirectory, FakeIngestDirectory, FakeClock]:
    inner = FakeIngestDirectory()
    for app in apps:
        inner.add(app)
    clock = FakeClock()
    return CachedIngestDirectory(inner, clock, ttl), inner, clock


async def test_a_hit_within_the_ttl_does_not_ask_the_inner_directory() -> None:
    cache, inner, clock = cached(ingest_app())
    first = await cache.find_ingest_app(ORG, APP)
    clock.advance(TTL - 0.001)
    second = await cache.find_ingest_app(ORG, APP)
    assert first is not None
    assert second is first
    assert inner.lookups == 1


async def test_an_entry_expires_once_the_ttl_has_passed() -> None:
    cache, inner, clock = cached(ingest_app())
    await cache.find_ingest_app(ORG, APP)
    inner.add(ingest_app(plan=Plan.BUSINESS))  # changed by another process
    clock.advance(TTL)
    found = await cache.find_ingest_app(ORG, APP)
    assert found is not None
    assert found.plan is Plan.BUSINESS
    assert inner.lookups == 2


async def test_a_change_elsewhere_is_not_seen_before_the_ttl() -> None:
    cache, inner, clock = cached(ingest_app())
    await cache.find_ingest_app(ORG, APP)
    inner.add(ingest_app(plan=Plan.BUSINESS))
    clock.advance(TTL / 2)
    found = await cache.find_ingest_app(ORG, APP)
    assert found is not None
    assert found.plan is Plan.PRO


async def test_an_unknown_app_is_cached_too_so_a_flood_of_bogus_ids_stays_cheap() -> None:
    cache, inner, clock = cached()
    for _ in range(100):
        assert await cache.find_ingest_app(ORG, APP) is None
    assert inner.lookups == 1
    inner.add(ingest_app())  # created by another process
    assert await cache.find_ingest_app(ORG, APP) is None
    clock.advance(TTL)
    assert await cache.find_ingest_app(ORG, APP) is not None
    assert inner.lookups == 2


async def test_entries_are_per_org_and_app_pair() -> None:
    cache, inner, _ = cached(ingest_app(), ingest_app(app_id=OTHER_APP))
    assert await cache.find_ingest_app(OTHER_ORG, APP) is None  # the app is not OTHER_ORG's
    found = await cache.find_ingest_app(ORG, APP)
    other = await cache.find_ingest_app(ORG, OTHER_APP)
    assert found is not None
    assert other is not None
    assert (found.app_id, other.app_id) == (APP, OTHER_APP)
    assert inner.lookups == 3


async def test_a_zero_ttl_caches_nothing() -> None:
    cache, inner, _ = cached(ingest_app(), ttl=0)
    for _ in range(3):
        assert await cache.find_ingest_app(ORG, APP) is not None
    assert inner.lookups == 3


async def test_a_failed_lookup_is_not_cached() -> None:
    db = FakeDatabase(unavailable=True)
    inner = FakeIngestDirectory(db, secret_box=FakeSecretBox(), clock=FakeClock())
    cache = CachedIngestDirectory(inner, FakeClock(), TTL)
    with pytest.raises(ServiceUnavailable):
        await cache.find_ingest_app(ORG, APP)
    db.unavailable = False
    assert await cache.find_ingest_app(ORG, APP) is None
    assert inner.lookups == 2


async def _warm(cache: CachedIngestDirectory, *keys: tuple[str, str]) -> None:
    for org_id, app_id in keys:
        await cache.find_ingest_app(org_id, app_id)


ALL_KEYS = ((ORG, APP), (ORG, OTHER_APP), (OTHER_ORG, "bbbbbbbb-0000-4000-8000-000000000000"))


def _apps_for(keys: tuple[tuple[str, str], ...]) -> list[IngestApp]:
    return [ingest_app(org_id, app_id) for org_id, app_id in keys]


async def _refetched(
    cache: CachedIngestDirectory, inner: FakeIngestDirectory
) -> set[tuple[str, str]]:
    """Which of ALL_KEYS the cache had to ask the inner directory for again."""
    refetched = set()
    for key in ALL_KEYS:
        before = inner.lookups
        await cache.find_ingest_app(*key)
        if inner.lookups > before:
            refetched.add(key)
    return refetched


async def test_invalidate_an_org_forgets_every_app_of_that_org_only() -> None:
    cache, inner, _ = cached(*_apps_for(ALL_KEYS))
    await _warm(cache, *ALL_KEYS)
    cache.invalidate(ORG)
    assert await _refetched(cache, inner) == {(ORG, APP), (ORG, OTHER_APP)}


async def test_invalidate_an_app_forgets_that_app_only() -> None:
    cache, inner, _ = cached(*_apps_for(ALL_KEYS))
    await _warm(cache, *ALL_KEYS)
    cache.invalidate(app_id=OTHER_APP)
    assert await _refetched(cache, inner) == {(ORG, OTHER_APP)}


async def test_invalidate_an_app_also_forgets_a_negative_entry_under_another_org() -> None:
    cache, inner, _ = cached(ingest_app())
    await _warm(cache, (ORG, APP), (OTHER_ORG, APP))
    cache.invalidate(app_id=APP)
    await _warm(cache, (ORG, APP), (OTHER_ORG, APP))
    assert inner.lookups == 4


async def test_invalidate_an_org_and_app_pair_forgets_just_that_pair() -> None:
    cache, inner, _ = cached(*_apps_for(ALL_KEYS))
    await _warm(cache, *ALL_KEYS)
    cache.invalidate(ORG, APP)
    assert await _refetched(cache, inner) == {(ORG, APP)}


async def test_invalidate_without_arguments_forgets_everything() -> None:
    cache, inner, _ = cached(*_apps_for(ALL_KEYS))
    await _warm(cache, *ALL_KEYS)
    cache.invalidate()
    assert await _refetched(cache, inner) == set(ALL_KEYS)


async def test_invalidating_what_is_not_cached_is_harmless() -> None:
    cache, inner, _ = cached(ingest_app())
    cache.invalidate(OTHER_ORG)
    cache.invalidate(app_id=OTHER_APP)
    cache.invalidate()
    assert await cache.find_ingest_app(ORG, APP) is not None
    assert inner.lookups == 1


async def test_changes_made_through_tenancy_operations_are_seen_at_once() -> None:
    db, clock, box = FakeDatabase(), FakeClock(), FakeSecretBox()
    inner = FakeIngestDirectory(db, secret_box=box, clock=clock)
    cache = CachedIngestDirectory(inner, clock, ttl_seconds=3600)
    ops = TenancyOperations(
        uow=lambda: FakeUow(db),
        usage=FakeEventStore(db),
        ids=RandomIdGenerator(),
        secret_box=box,
        clock=clock,
        region="local",
        on_change=cache.invalidate,
    )
    org = await ops.create_org("Acme", org_id=ORG)
    assert await cache.find_ingest_app(ORG, APP) is None  # cached as unknown

    created = await ops.create_app(ORG, "CLI", Environment.PRODUCTION, app_id=APP)
    found = await cache.find_ingest_app(org.id, APP)
    assert found is not None
    assert [s.secret for s in found.secrets] == [created.issued.secret]

    await ops.set_plan(ORG, Plan.BUSINESS)
    found = await cache.find_ingest_app(ORG, APP)
    assert found is not None
    assert found.plan is Plan.BUSINESS

    rotated = await ops.rotate_credentials(APP)
    found = await cache.find_ingest_app(ORG, APP)
    assert found is not None
    assert {s.secret for s in found.secrets} == {created.issued.secret, rotated.secret}

    await ops.revoke_credentials(APP)
    found = await cache.find_ingest_app(ORG, APP)
    assert found is not None
    assert found.secrets == ()


class GatedDirectory:
    """Reads the inner directory, then waits at a gate before answering: a lookup in flight."""

    def __init__(self, inner: FakeIngestDirectory) -> None:
        self.inner = inner
        self.read_done = asyncio.Event()
        self.gate = asyncio.Event()

    async def find_ingest_app(self, org_id: str, app_id: str) -> IngestApp | None:
        app = await self.inner.find_ingest_app(org_id, app_id)
        self.read_done.set()
        await self.gate.wait()
        return app


async def test_an_invalidation_during_a_lookup_in_flight_is_not_lost() -> None:
    inner = FakeIngestDirectory()
    inner.add(ingest_app())
    gated = GatedDirectory(inner)
    cache = CachedIngestDirectory(gated, FakeClock(), TTL)

    in_flight = asyncio.create_task(cache.find_ingest_app(ORG, APP))
    await gated.read_done.wait()  # it has read the app with its secret...
    inner.add(dataclasses.replace(ingest_app(), secrets=()))  # ...the credentials are revoked
    cache.invalidate(ORG, APP)  # ...and this process invalidates, as on_change does
    gated.gate.set()
    await in_flight  # answering the old state once is unavoidable; caching it is not

    after = await cache.find_ingest_app(ORG, APP)
    assert after is not None
    assert after.secrets == ()
