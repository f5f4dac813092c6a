"""Contract tests of the billing repository of the tenancy unit of work (`uow.billing`): the
in-memory fake, SQLite and Postgres pass the same tests.

Postgres is shared by the whole run, so every test works with org, customer and event ids of its
own, and reads `due()` only for its own orgs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.storage import FakeDatabase, FakeTenancyUnitOfWork
from tests.integration.test_sql_contract import NOW, new_org, uid
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.migrate import downgrade, upgrade
from tkcloud_adapters.sql.schema import notifications_sent, orgs
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.billing import BillingState, PlanChange, SubscriptionStatus
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Org

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)


# --- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    new_uow: Callable[[], TenancyUnitOfWork]
    engine: AsyncEngine | None = None


@pytest.fixture(scope="session")
def billing_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'billing.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    # Resolved here, in a plain fixture: the database fixtures run asyncio.run() themselves.
    if request.param == "fake":
        return None
    if request.param == "sqlite":
        return str(request.getfixturevalue("billing_sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def backend(backend_url: str | None) -> AsyncIterator[Backend]:
    if backend_url is None:
        db = FakeDatabase()
        yield Backend("fake", lambda: FakeTenancyUnitOfWork(db))
        return
    engine = create_engine(backend_url)
    try:
        yield Backend(engine.dialect.name, lambda: SqlTenancyUnitOfWork(engine), engine)
    finally:
        await engine.dispose()


# --- data ------------------------------------------------------------------------------------


async def add_orgs(backend: Backend, *added: Org) -> None:
    async with backend.new_uow() as uow:
        for org in added:
            await uow.orgs.add(org)
        await uow.commit()


def full_state(org: Org, **changes: Any) -> BillingState:
    """Every field set, to values no default has."""
    values: dict[str, Any] = {
        "org_id": org.id,
        "plan": Plan.BUSINESS,
        "customer_id": f"cus_{uid()}",
        "subscription_id": f"sub_{uid()}",
        "status": SubscriptionStatus.PAST_DUE,
        "current_period_end": NOW + 20 * DAY,
        "cancel_at_period_end": True,
        "pending_plan": Plan.PRO,
        "pending_at": NOW + 20 * DAY + timedelta(microseconds=1),
        "grace_until": NOW + 7 * DAY,
        "as_of": NOW - timedelta(seconds=3),
        **changes,
    }
    return BillingState(**values)


async def save(backend: Backend, *states: BillingState) -> None:
    async with backend.new_uow() as uow:
        for state in states:
            await uow.billing.save(state)
        await uow.commit()


async def state_of(backend: Backend, org_id: str) -> BillingState | None:
    async with backend.new_uow() as uow:
        return await uow.billing.state(org_id)


async def claim_event(backend: Backend, event_id: str) -> bool:
    async with backend.new_uow() as uow:
        claimed = await uow.billing.claim_event(event_id, "invoice.payment_failed", NOW)
        await uow.commit()
    return claimed


async def claim_notification(backend: Backend, org_id: str, kind: str, period: str) -> bool:
    async with backend.new_uow() as uow:
        claimed = await uow.billing.claim_notification(org_id, kind, period)
        await uow.commit()
    return claimed


# --- state -------------------------------------------------------------------------------------


async def test_a_new_org_has_its_plan_and_no_billing(backend: Backend) -> None:
    org = new_org(Plan.PRO)
    await add_orgs(backend, org)

    async with backend.new_uow() as uow:
        assert await uow.billing.state(org.id) == BillingState(org_id=org.id, plan=Plan.PRO)
        assert await uow.billing.state(f"org_{uid()}") is None
        assert await uow.billing.by_customer(f"cus_{uid()}") is None


async def test_save_and_state_round_trip_every_field(backend: Backend) -> None:
    org, other = new_org(Plan.PRO), new_org(Plan.FREE)
    await add_orgs(backend, org, other)
    # Another zone on the way in is the same instant on the way out.
    saved = full_state(org, as_of=(NOW - DAY).astimezone(timezone(timedelta(hours=-5))))

    await save(backend, saved)

    assert await state_of(backend, org.id) == saved
    stored = await state_of(backend, org.id)
    assert stored is not None
    assert stored.as_of is not None
    assert stored.as_of.utcoffset() == timedelta(0)
    assert await state_of(backend, other.id) == BillingState(other.id, Plan.FREE)

    # And back to nothing: every field can be cleared again.
    cleared = BillingState(org.id, Plan.FREE)
    await save(backend, cleared)
    assert await state_of(backend, org.id) == cleared


@pytest.mark.parametrize("status", list(SubscriptionStatus))
async def test_every_subscription_status_round_trips(
    backend: Backend, status: SubscriptionStatus
) -> None:
    org = new_org()
    await add_orgs(backend, org)
    saved = full_state(org, status=status)

    await save(backend, saved)

    assert await state_of(backend, org.id) == saved


async def test_save_sets_the_orgs_plan_and_keeps_the_rest_of_the_org(backend: Backend) -> None:
    org = new_org(Plan.ENTERPRISE, custom_events_per_month=5_000_000, custom_retention_days=3650)
    await add_orgs(backend, org)

    await save(backend, full_state(org, plan=Plan.PRO))

    async with backend.new_uow() as uow:
        assert await uow.orgs.get(org.id) == replace(org, plan=Plan.PRO)
        assert replace(org, plan=Plan.PRO) in await uow.orgs.list_all()
        # A plan set on the org is the plan billing reads.
        await uow.orgs.set_plan(org.id, Plan.BUSINESS, None, None)
        state = await uow.billing.state(org.id)
    assert state is not None
    assert state.plan is Plan.BUSINESS


async def test_saving_an_unknown_org_changes_nothing(backend: Backend) -> None:
    unknown = f"org_{uid()}"

    await save(backend, BillingState(unknown, Plan.PRO, customer_id=f"cus_{uid()}"))

    assert await state_of(backend, unknown) is None


async def test_save_without_commit_rolls_back(backend: Backend) -> None:
    org = new_org(Plan.FREE)
    await add_orgs(backend, org)
    saved = full_state(org)

    async with backend.new_uow() as uow:
        await uow.billing.save(saved)
        assert await uow.billing.state(org.id) == saved  # the unit of work sees its own writes
        assert await uow.billing.by_customer(str(saved.customer_id)) == saved

    assert await state_of(backend, org.id) == BillingState(org.id, Plan.FREE)
    async with backend.new_uow() as uow:
        assert await uow.billing.by_customer(str(saved.customer_id)) is None


async def test_by_customer_finds_the_org_of_a_customer(backend: Backend) -> None:
    org, other = new_org(), new_org()
    await add_orgs(backend, org, other)
    mine, theirs = full_state(org), full_state(other, plan=Plan.FREE, status=None)
    await save(backend, mine, theirs)

    async with backend.new_uow() as uow:
        assert await uow.billing.by_customer(str(mine.customer_id)) == mine
        assert await uow.billing.by_customer(str(theirs.customer_id)) == theirs
        assert await uow.billing.by_customer(f"cus_{uid()}") is None


async def test_a_customer_of_two_orgs_is_a_bug(backend: Backend) -> None:
    org, other = new_org(), new_org()
    await add_orgs(backend, org, other)
    taken = full_state(org)
    await save(backend, taken)

    async with backend.new_uow() as uow:
        with pytest.raises((ValueError, sa_exc.IntegrityError)):
            await uow.billing.save(BillingState(other.id, Plan.PRO, customer_id=taken.customer_id))

    assert await state_of(backend, other.id) == BillingState(other.id, other.plan)


# --- plan changes ------------------------------------------------------------------------------


async def test_changes_are_listed_newest_first(backend: Backend) -> None:
    org, other = new_org(Plan.FREE), new_org()
    await add_orgs(backend, org, other)
    first = PlanChange(org.id, Plan.FREE, Plan.PRO, "checkout", f"evt_{uid()}", NOW - 2 * DAY)
    third = PlanChange(org.id, Plan.BUSINESS, Plan.PRO, "period ended", "system", NOW)
    second = PlanChange(org.id, Plan.PRO, Plan.BUSINESS, "subscription updated", "x", NOW - DAY)
    # Recorded at the same time as `third`, but after it: the newer of the two.
    fourth = PlanChange(org.id, Plan.PRO, Plan.ENTERPRISE, "operator", "operator", NOW)
    elsewhere = PlanChange(other.id, Plan.PRO, Plan.FREE, "grace period ended", "system", NOW)

    async with backend.new_uow() as uow:
        for change in (first, third, second):
            await uow.billing.record_change(change)
        await uow.commit()
    async with backend.new_uow() as uow:
        await uow.billing.record_change(fourth)
        await uow.billing.record_change(elsewhere)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.billing.changes(org.id) == [fourth, third, second, first]
        assert await uow.billing.changes(other.id) == [elsewhere]
        assert await uow.billing.changes(f"org_{uid()}") == []


async def test_changes_without_commit_are_not_recorded(backend: Backend) -> None:
    org = new_org()
    await add_orgs(backend, org)

    async with backend.new_uow() as uow:
        await uow.billing.record_change(
            PlanChange(org.id, Plan.PRO, Plan.FREE, "subscription ended", "evt", NOW)
        )

    async with backend.new_uow() as uow:
        assert await uow.billing.changes(org.id) == []


async def test_a_change_of_a_missing_org_is_a_bug(backend: Backend) -> None:
    change = PlanChange(f"org_{uid()}", Plan.PRO, Plan.FREE, "operator", "operator", NOW)

    async with backend.new_uow() as uow:
        with pytest.raises((ValueError, sa_exc.IntegrityError)):
            await uow.billing.record_change(change)


# --- provider events ---------------------------------------------------------------------------


async def test_an_event_is_claimed_once(backend: Backend) -> None:
    event_id = f"evt_{uid()}"

    assert await claim_event(backend, event_id) is True
    assert await claim_event(backend, event_id) is False
    async with backend.new_uow() as uow:
        assert await uow.billing.claim_event(event_id, "other.type", NOW + DAY) is False
        fresh = f"evt_{uid()}"
        assert await uow.billing.claim_event(fresh, "checkout.session.completed", NOW) is True
        assert await uow.billing.claim_event(fresh, "checkout.session.completed", NOW) is False


async def test_a_claim_that_is_rolled_back_leaves_the_event_free(backend: Backend) -> None:
    event_id = f"evt_{uid()}"

    async with backend.new_uow() as uow:
        assert await uow.billing.claim_event(event_id, "invoice.paid", NOW) is True

    assert await claim_event(backend, event_id) is True
    assert await claim_event(backend, event_id) is False


@pytest.mark.parametrize("first_commits", [True, False])
async def test_a_claim_waits_for_the_unit_of_work_that_claimed_first(
    backend: Backend, first_commits: bool
) -> None:
    event_id = f"evt_{uid()}"

    first = backend.new_uow()
    async with first:
        assert await first.billing.claim_event(event_id, "invoice.paid", NOW) is True
        second = asyncio.create_task(claim_event(backend, event_id))
        # Time for the second claim to reach the lock; the outcome does not depend on it.
        await asyncio.sleep(0.05)
        assert not second.done()
        if first_commits:
            await first.commit()

    # The second sees what the first left: taken if it committed, free if it rolled back.
    assert await second is not first_commits


async def test_concurrent_claims_of_one_event_have_exactly_one_winner(backend: Backend) -> None:
    event_id = f"evt_{uid()}"

    results = await asyncio.gather(*(claim_event(backend, event_id) for _ in range(10)))

    assert sorted(results) == [False] * 9 + [True]


# --- due ---------------------------------------------------------------------------------------


async def test_due_lists_orgs_whose_change_or_grace_period_has_come(backend: Backend) -> None:
    def org_created(days_ago: int) -> Org:
        return new_org(created_at=NOW - days_ago * DAY)

    pending_now, pending_past, grace_now, grace_past, both = (
        org_created(d) for d in (5, 1, 4, 2, 3)
    )
    pending_later, grace_later, nothing, untouched = (org_created(d) for d in (6, 7, 8, 9))
    await add_orgs(
        backend,
        pending_now,
        pending_past,
        grace_now,
        grace_past,
        both,
        pending_later,
        grace_later,
        nothing,
        untouched,
    )
    later = NOW + timedelta(microseconds=1)

    def scheduled(org: Org, at: datetime) -> BillingState:
        return BillingState(org.id, Plan.BUSINESS, pending_plan=Plan.PRO, pending_at=at)

    def in_grace(org: Org, until: datetime) -> BillingState:
        return BillingState(org.id, Plan.PRO, status=SubscriptionStatus.PAST_DUE, grace_until=until)

    states = {
        pending_now.id: scheduled(pending_now, NOW),
        pending_past.id: scheduled(pending_past, NOW - DAY),
        grace_now.id: in_grace(grace_now, NOW),
        grace_past.id: in_grace(grace_past, NOW - DAY),
        both.id: replace(in_grace(both, later), pending_plan=Plan.FREE, pending_at=NOW - DAY),
        pending_later.id: scheduled(pending_later, later),
        grace_later.id: in_grace(grace_later, later),
        nothing.id: full_state(nothing, pending_at=None, grace_until=None),
    }
    await save(backend, *states.values())
    mine = {org.id for org in (pending_later, grace_later, nothing, untouched)} | states.keys()

    async with backend.new_uow() as uow:
        due = [s for s in await uow.billing.due(NOW) if s.org_id in mine]

    # Oldest org first.
    assert due == [states[o.id] for o in (pending_now, grace_now, both, grace_past, pending_past)]
    async with backend.new_uow() as uow:
        later_due = {s.org_id for s in await uow.billing.due(later) if s.org_id in mine}
    assert later_due == set(states) - {nothing.id}


# --- notifications -----------------------------------------------------------------------------


async def test_a_notification_is_claimed_once_per_org_kind_and_period(backend: Backend) -> None:
    org, other = new_org(), new_org()
    await add_orgs(backend, org, other)

    assert await claim_notification(backend, org.id, "quota_80", "2026-12") is True
    assert await claim_notification(backend, org.id, "quota_80", "2026-12") is False
    assert await claim_notification(backend, org.id, "quota_100", "2026-12") is True
    assert await claim_notification(backend, org.id, "quota_80", "2027-01") is True
    assert await claim_notification(backend, other.id, "quota_80", "2026-12") is True
    async with backend.new_uow() as uow:
        assert await uow.billing.claim_notification(org.id, "quota_100", "2026-12") is False
        assert await uow.billing.claim_notification(org.id, "trial_ending", "2026-12") is True
        assert await uow.billing.claim_notification(org.id, "trial_ending", "2026-12") is False
        # Not committed: claimed again below.

    assert await claim_notification(backend, org.id, "trial_ending", "2026-12") is True


async def test_concurrent_claims_of_one_notification_have_exactly_one_winner(
    backend: Backend,
) -> None:
    org = new_org()
    await add_orgs(backend, org)

    results = await asyncio.gather(
        *(claim_notification(backend, org.id, "quota_80", "2026-12") for _ in range(10))
    )

    assert sorted(results) == [False] * 9 + [True]


async def test_a_notification_of_a_missing_org_is_a_bug(backend: Backend) -> None:
    async with backend.new_uow() as uow:
        with pytest.raises((ValueError, sa_exc.IntegrityError)):
            await uow.billing.claim_notification(f"org_{uid()}", "quota_80", "2026-12")


# --- SQL only ----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("billing_sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


async def test_sql_notifications_record_when_they_were_sent(sql_url: str) -> None:
    org = new_org()
    engine = create_engine(sql_url)
    try:
        async with SqlTenancyUnitOfWork(engine) as uow:
            await uow.orgs.add(org)
            assert await uow.billing.claim_notification(org.id, "quota_80", "2026-12")
            await uow.commit()
        async with engine.connect() as conn:
            query = select(notifications_sent.c.sent_at).where(
                notifications_sent.c.org_id == org.id
            )
            sent_at = (await conn.execute(query)).scalar_one()
    finally:
        await engine.dispose()
    # The database's clock, not the test's: only its shape is known.
    assert isinstance(sent_at, datetime)
    assert sent_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - sent_at) < timedelta(minutes=5)


async def test_the_billing_migration_keeps_orgs_both_ways(migratable_url: str) -> None:
    org = new_org(Plan.BUSINESS)
    saved = full_state(org, plan=Plan.PRO)
    await asyncio.to_thread(downgrade, migratable_url, "0002")
    async with _engine(migratable_url) as engine, engine.begin() as conn:
        # Only the columns of 0002: Core inserts no others (the new ones have server defaults).
        await conn.execute(
            insert(orgs).values(
                id=org.id,
                name=org.name,
                slug=org.slug,
                plan=org.plan.value,
                region=org.region,
                stripe_customer_id="cus_before",
                created_at=org.created_at,
            )
        )

    await asyncio.to_thread(upgrade, migratable_url)

    async with _engine(migratable_url) as engine, SqlTenancyUnitOfWork(engine) as uow:
        # An org from before billing has no billing yet, and keeps its customer id.
        assert await uow.billing.state(org.id) == BillingState(
            org.id, Plan.BUSINESS, customer_id="cus_before"
        )
        await uow.billing.save(saved)
        await uow.commit()

    await asyncio.to_thread(downgrade, migratable_url, "0002")

    async with _engine(migratable_url) as engine, engine.connect() as conn:
        query = text("SELECT id, plan, stripe_customer_id FROM orgs WHERE id = :id")
        rows = (await conn.execute(query, {"id": org.id})).all()
    # The batch migration (a recreated table on SQLite) keeps the rows.
    assert [tuple(row) for row in rows] == [(org.id, "pro", saved.customer_id)]
    await asyncio.to_thread(upgrade, migratable_url)


@asynccontextmanager
async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()
