"""Contract tests of the sharing ports: share links and the badge switch of the tenancy unit of
work (`uow.share_links`, `uow.badges`) and `MonthlyUsers`. The in-memory fakes, SQLite and
Postgres pass the same tests.

Postgres is shared by the whole run, so every test works with ids and slugs of its own.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.sharing import FakeMonthlyUsers
from tests.fakes.storage import FakeDatabase, FakeEventStore, FakeTenancyUnitOfWork
from tests.integration.test_sql_contract import NOW, event, ingest_app, new_app, new_org, uid
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_adapters.sql.sharing import SqlMonthlyUsers
from tkcloud_adapters.sql.tenancy import SqlTenancyUnitOfWork
from tkcloud_application.ports.sharing import MonthlyUsers
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.errors import Conflict
from tkcloud_domain.events import EventSchema
from tkcloud_domain.sharing import ShareLink
from tkcloud_domain.tenancy import App, Org

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)


@dataclass
class Backend:
    name: str
    new_uow: Callable[[], TenancyUnitOfWork]
    store: FakeEventStore | SqlEventStore
    users: MonthlyUsers
    engine: AsyncEngine | None = None


@pytest.fixture(scope="session")
def sharing_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tkcloud_adapters.sql.migrate import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'sharing.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["fake", "sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    # Resolved here, in a plain fixture: the database fixtures run asyncio.run() themselves.
    if request.param == "fake":
        return None
    if request.param == "sqlite":
        return str(request.getfixturevalue("sharing_sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def backend(backend_url: str | None) -> AsyncIterator[Backend]:
    if backend_url is None:
        db = FakeDatabase()
        yield Backend(
            "fake", lambda: FakeTenancyUnitOfWork(db), FakeEventStore(db), FakeMonthlyUsers(db)
        )
        return
    engine = create_engine(backend_url)
    try:
        yield Backend(
            engine.dialect.name,
            lambda: SqlTenancyUnitOfWork(engine),
            SqlEventStore(engine),
            SqlMonthlyUsers(engine),
            engine,
        )
    finally:
        await engine.dispose()


def new_link(app: App, **changes: object) -> ShareLink:
    values: dict[str, object] = {
        "id": f"shr_{uid()}",
        "org_id": app.org_id,
        "app_id": app.id,
        "slug": secrets.token_urlsafe(32),
        "created_by": f"usr_{uid()}",
        "created_at": NOW,
        **changes,
    }
    return ShareLink(**values)  # type: ignore[arg-type]


async def add_links(backend: Backend, *links: ShareLink) -> None:
    async with backend.new_uow() as uow:
        for link in links:
            await uow.share_links.add(link)
        await uow.commit()


async def org_with_apps(backend: Backend, count: int = 1) -> tuple[Org, list[App]]:
    org = new_org()
    apps = [new_app(org) for _ in range(count)]
    async with backend.new_uow() as uow:
        await uow.orgs.add(org)
        for app in apps:
            await uow.apps.add(app)
        await uow.commit()
    return org, apps


# --- share links ---------------------------------------------------------------------------------


async def test_a_link_round_trips_by_id_and_by_slug(backend: Backend) -> None:
    _, [app] = await org_with_apps(backend)
    # Another zone on the way in is the same instant, in UTC, on the way out.
    plus_two = timezone(timedelta(hours=2))
    link = new_link(
        app,
        created_at=NOW.astimezone(plus_two),
        expires_at=(NOW + HOUR).astimezone(plus_two),
        include_events=True,
    )
    await add_links(backend, link)

    expected = replace(link, created_at=NOW, expires_at=NOW + HOUR)
    async with backend.new_uow() as uow:
        assert await uow.share_links.get(link.id) == expected
        assert await uow.share_links.by_slug(link.slug) == expected
        assert (await uow.share_links.get(link.id)).created_at.tzinfo == UTC  # type: ignore[union-attr]
        assert await uow.share_links.get(f"shr_{uid()}") is None
        assert await uow.share_links.by_slug(secrets.token_urlsafe(32)) is None
        # A slug is matched exactly, not by prefix.
        assert await uow.share_links.by_slug(link.slug[:-1]) is None


async def test_defaults_of_a_link(backend: Backend) -> None:
    _, [app] = await org_with_apps(backend)
    link = new_link(app, created_by=None)
    await add_links(backend, link)
    async with backend.new_uow() as uow:
        stored = await uow.share_links.get(link.id)
    assert stored == link
    assert stored is not None
    assert not stored.include_events
    assert stored.expires_at is None


async def test_a_taken_id_or_slug_is_a_conflict(backend: Backend) -> None:
    _, [app] = await org_with_apps(backend)
    link = new_link(app)
    await add_links(backend, link)

    for clash in (new_link(app, id=link.id), new_link(app, slug=link.slug)):
        async with backend.new_uow() as uow:
            with pytest.raises(Conflict):
                await uow.share_links.add(clash)
            # The unit of work stays usable after the conflict.
            assert await uow.share_links.get(link.id) == link


async def test_links_are_listed_per_app_newest_first(backend: Backend) -> None:
    _, [app, sibling] = await org_with_apps(backend, 2)
    old = new_link(app, created_at=NOW - HOUR)
    new = new_link(app, created_at=NOW)
    theirs = new_link(sibling)
    await add_links(backend, old, new, theirs)

    async with backend.new_uow() as uow:
        assert await uow.share_links.list_for_app(app.id) == [new, old]
        assert await uow.share_links.list_for_app(sibling.id) == [theirs]
        assert await uow.share_links.list_for_app(f"app_{uid()}") == []


async def test_revoke_keeps_the_first_time(backend: Backend) -> None:
    _, [app] = await org_with_apps(backend)
    link, other = new_link(app), new_link(app)
    await add_links(backend, link, other)

    for at in (NOW + HOUR, NOW + 2 * HOUR):
        async with backend.new_uow() as uow:
            await uow.share_links.revoke(link.id, at)
            await uow.share_links.revoke(f"shr_{uid()}", at)  # nothing to revoke: no error
            await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.share_links.by_slug(link.slug) == replace(link, revoked_at=NOW + HOUR)
        assert await uow.share_links.get(other.id) == other


async def test_uncommitted_links_are_rolled_back(backend: Backend) -> None:
    _, [app] = await org_with_apps(backend)
    link = new_link(app)
    async with backend.new_uow() as uow:
        await uow.share_links.add(link)
        assert await uow.share_links.by_slug(link.slug) == link  # seen by its own unit
    async with backend.new_uow() as uow:
        assert await uow.share_links.get(link.id) is None


async def test_deleting_an_app_deletes_its_links_and_its_switch(backend: Backend) -> None:
    _, [app, sibling] = await org_with_apps(backend, 2)
    link, kept = new_link(app), new_link(sibling)
    await add_links(backend, link, kept)
    async with backend.new_uow() as uow:
        await uow.badges.set_badges(app.id, True)
        await uow.commit()

    async with backend.new_uow() as uow:
        await uow.apps.delete(app.id)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.share_links.get(link.id) is None
        assert await uow.share_links.get(kept.id) == kept
        assert not await uow.badges.badges_enabled(app.id)


# --- badges ---------------------------------------------------------------------------------------


async def test_badges_are_off_until_enabled(backend: Backend) -> None:
    _, [app, sibling] = await org_with_apps(backend, 2)
    async with backend.new_uow() as uow:
        assert not await uow.badges.badges_enabled(app.id)
        await uow.badges.set_badges(app.id, True)
        assert await uow.badges.badges_enabled(app.id)
        await uow.commit()

    async with backend.new_uow() as uow:
        assert await uow.badges.badges_enabled(app.id)
        assert not await uow.badges.badges_enabled(sibling.id)
        await uow.badges.set_badges(app.id, False)
        await uow.badges.set_badges(f"app_{uid()}", True)  # no such app: nothing changes
        await uow.commit()

    async with backend.new_uow() as uow:
        assert not await uow.badges.badges_enabled(app.id)
        assert not await uow.badges.badges_enabled(f"app_{uid()}")
        # The App entity stays as it was: the switch is read through its own port.
        assert await uow.apps.get(app.id) == app


async def test_an_uncommitted_switch_is_rolled_back(backend: Backend) -> None:
    _, [app] = await org_with_apps(backend)
    async with backend.new_uow() as uow:
        await uow.badges.set_badges(app.id, True)
    async with backend.new_uow() as uow:
        assert not await uow.badges.badges_enabled(app.id)


# --- monthly users --------------------------------------------------------------------------------


async def test_users_this_month_counts_distinct_users_of_the_app_in_the_month(
    backend: Backend,
) -> None:
    org, [app, sibling] = await org_with_apps(backend, 2)
    a, b, c = (f"client_{ch * 64}" for ch in "abc")

    def at(moment: datetime, user: str) -> EventSchema:
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return event(user_id=user, timestamp=stamp)

    december = [
        at(datetime(2026, 12, 1, tzinfo=UTC), a),  # the first instant of the month
        at(datetime(2026, 12, 3, tzinfo=UTC), a),
        at(datetime(2026, 12, 4, 15, tzinfo=UTC), b),
    ]
    november = [at(datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC), c)]
    await backend.store.store(ingest_app(org, app), [*december, *november], NOW)
    await backend.store.store(
        ingest_app(org, sibling),
        [at(datetime(2026, 12, 2, tzinfo=UTC), c)],
        NOW,
    )

    assert await backend.users.users_this_month(app.id, "2026-12") == 2
    assert await backend.users.users_this_month(app.id, "2026-11") == 1
    assert await backend.users.users_this_month(app.id, "2027-01") == 0
    assert await backend.users.users_this_month(sibling.id, "2026-12") == 1
    assert await backend.users.users_this_month(f"app_{uid()}", "2026-12") == 0
