"""Public sharing and badges: the domain (human counts, SVG badges, link liveness) and the
`Sharing` use cases over the fakes (no I/O)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.sharing import FakeMonthlyUsers
from tests.fakes.storage import FakeDatabase, FakeEventStore, FakeTenancyUnitOfWork
from tests.fakes.system import FakeClock
from tests.support.sdk import sdk_event
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.identity.access import Access
from tkcloud_application.sharing import Badge, Sharing
from tkcloud_domain.errors import Forbidden, NotFound, ValidationFailed
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.identity import Membership, OperatorPrincipal, Role, User, UserPrincipal
from tkcloud_domain.plans import PLAN_LIMITS, Plan
from tkcloud_domain.sharing import (
    SHARE_SLUG_MIN_LENGTH,
    BadgeMetric,
    BadgeStyle,
    ShareLink,
    badge_message,
    color_hex,
    human_count,
    is_valid_slug,
    month_bounds,
    render_badge_svg,
    text_width,
)
from tkcloud_domain.tenancy import App, Environment, IngestApp, Org

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 12, 4, 15, 21, tzinfo=UTC)


# --- human counts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (7, "7"),
        (999, "999"),
        (1_000, "1k"),
        (1_049, "1k"),
        (1_200, "1.2k"),
        (1_999, "1.9k"),  # truncated: never more than was counted
        (9_999, "9.9k"),
        (10_000, "10k"),
        (12_345, "12k"),
        (999_999, "999k"),
        (1_000_000, "1M"),
        (1_200_000, "1.2M"),
        (12_000_000, "12M"),
        (3_400_000_000, "3.4B"),
        (3_000_000_000, "3B"),
        (5_600_000_000_000, "5.6T"),
    ],
)
def test_human_count(count: int, text: str) -> None:
    assert human_count(count) == text


def test_human_count_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="negative"):
        human_count(-1)


def test_badge_message_is_per_month() -> None:
    assert badge_message(1_234_567) == "1.2M/mo"


# --- SVG badges -------------------------------------------------------------------------------


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 - our own output
    assert root.tag == f"{SVG}svg"
    return root


@pytest.mark.parametrize("style", list(BadgeStyle))
def test_svg_badges_are_well_formed_with_escaped_text(style: BadgeStyle) -> None:
    label, message = "a<b>&\"c'", "1.2M/mo <script>"
    svg = render_badge_svg(label, message, "blue", style)

    root = _parse(svg)
    assert "<script>" not in svg
    shown = (
        (label.upper(), message.upper()) if style is BadgeStyle.FOR_THE_BADGE else (label, message)
    )
    spoken = f"{shown[0]}: {shown[1]}"
    assert root.get("aria-label") == spoken
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    assert title is not None
    assert title.text == spoken
    texts = [t.text for t in root.iter(f"{SVG}text") if t.get("aria-hidden") is None]
    assert texts == list(shown)
    rects = [r for r in root.iter(f"{SVG}rect") if r.get("fill", "").startswith("#")]
    assert [r.get("fill") for r in rects[1:3]] == ["#555", "#007ec6"]
    width = int(root.get("width", "0"))
    label_rect, message_rect = rects[1], rects[2]
    assert int(label_rect.get("width", "0")) + int(message_rect.get("width", "0")) == width


def test_svg_styles_differ_as_shields_io_does() -> None:
    flat = _parse(render_badge_svg("events", "12k/mo", "blue", BadgeStyle.FLAT))
    square = _parse(render_badge_svg("events", "12k/mo", "blue", BadgeStyle.FLAT_SQUARE))
    big = _parse(render_badge_svg("events", "12k/mo", "blue", BadgeStyle.FOR_THE_BADGE))

    assert flat.get("height") == square.get("height") == "20"
    assert big.get("height") == "28"
    assert flat.find(f"{SVG}linearGradient") is not None  # the flat style's sheen
    assert square.find(f"{SVG}linearGradient") is None
    corners = [root.find(f"{SVG}clipPath/{SVG}rect") for root in (flat, square)]
    assert [r.get("rx") if r is not None else None for r in corners] == ["3", "0"]
    assert [t.text for t in big.iter(f"{SVG}text")] == ["EVENTS", "12K/MO"]
    groups = [g for g in big.iter(f"{SVG}g") if g.get("font-weight")]
    assert groups
    assert groups[0].get("font-weight") == "bold"
    assert int(big.get("width", "0")) > int(flat.get("width", "0"))


def test_longer_text_makes_a_wider_badge() -> None:
    short = _parse(render_badge_svg("users", "9/mo", "blue"))
    long = _parse(render_badge_svg("users", "999k/mo", "blue"))
    assert int(long.get("width", "0")) > int(short.get("width", "0"))
    assert text_width("mmm") > text_width("iii")
    assert text_width("abc", bold=True) > text_width("abc")


def test_colours_are_named_or_hex_and_nothing_else() -> None:
    assert color_hex("blue") == "#007ec6"
    assert color_hex("lightgrey") == "#9f9f9f"
    assert color_hex("ABCDEF") == "#abcdef"
    assert color_hex("#fc0") == "#fc0"
    with pytest.raises(ValueError, match="colour"):
        render_badge_svg("a", "b", '"/><script>')


def test_unknown_metrics_and_styles() -> None:
    assert BadgeMetric.parse("users-per-month") is BadgeMetric.USERS_PER_MONTH
    with pytest.raises(NotFound):
        BadgeMetric.parse("revenue")
    assert BadgeStyle.parse(None) is BadgeStyle.FLAT
    assert BadgeStyle.parse("for-the-badge") is BadgeStyle.FOR_THE_BADGE
    with pytest.raises(ValidationFailed):
        BadgeStyle.parse("plastic")


# --- share links ------------------------------------------------------------------------------


def _link(**changes: object) -> ShareLink:
    values: dict[str, object] = {
        "id": "shr_x",
        "org_id": "org",
        "app_id": "app",
        "slug": "s" * SHARE_SLUG_MIN_LENGTH,
        "created_by": None,
        "created_at": NOW,
        **changes,
    }
    return ShareLink(**values)  # type: ignore[arg-type]


def test_link_liveness() -> None:
    assert _link().is_live(NOW + timedelta(days=3650))
    expiring = _link(expires_at=NOW + timedelta(hours=1))
    assert expiring.is_live(NOW + timedelta(minutes=59))
    assert not expiring.is_live(NOW + timedelta(hours=1))
    assert not _link(revoked_at=NOW).is_live(NOW + timedelta(seconds=1))
    assert not _link().include_events


def test_slugs_must_be_long_and_url_safe() -> None:
    assert is_valid_slug("A-_" + "x" * 19)
    assert not is_valid_slug("x" * (SHARE_SLUG_MIN_LENGTH - 1))
    assert not is_valid_slug("x" * 30 + "/")
    assert not is_valid_slug("x" * 30 + "=")


def test_month_bounds() -> None:
    assert month_bounds("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert month_bounds("2026-02")[1] == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="month"):
        month_bounds("2026-13")


# --- use cases ----------------------------------------------------------------------------------


@dataclass
class World:
    db: FakeDatabase = field(default_factory=FakeDatabase)
    clock: FakeClock = field(default_factory=lambda: FakeClock(NOW))

    def __post_init__(self) -> None:
        self.events = FakeEventStore(self.db)
        self.sharing = Sharing(
            uow=self.uow,
            access=Access(self.uow),
            ids=RandomIdGenerator(),
            clock=self.clock,
            usage=self.events,
            users=FakeMonthlyUsers(self.db),
        )

    def uow(self) -> FakeTenancyUnitOfWork:
        return FakeTenancyUnitOfWork(self.db)

    def org(self, name: str) -> Org:
        org = Org(f"org-{name}", name, name.lower(), Plan.PRO, "eu", NOW)
        self.db.orgs[org.id] = org
        return org

    def app(self, org: Org, name: str, environment: Environment = Environment.PRODUCTION) -> App:
        app = App(f"app-{name}", org.id, name, environment, True, NOW)
        self.db.apps[app.id] = app
        return app

    def member(self, org: Org, role: Role) -> UserPrincipal:
        user = User(
            f"usr_{role.value}_{org.id}", f"{role.value}@{org.slug}.example", role.value, NOW
        )
        self.db.users[user.id] = user
        self.db.memberships[(org.id, user.id)] = Membership(org.id, user.id, role, NOW)
        return UserPrincipal(user=user, session=None)

    async def ingest(self, app: App, users: list[str], at: datetime | None = None) -> None:
        moment = at or self.clock.now()
        target = IngestApp(
            app.org_id, app.id, app.environment, True, Plan.PRO, PLAN_LIMITS[Plan.PRO], ()
        )
        events = []
        for i, user in enumerate(users):
            wire = json.dumps(sdk_event(moment, user_id=user)).encode()
            parsed = parse_event(wire, i, now=moment, oldest=None)
            assert isinstance(parsed, EventSchema)
            events.append(parsed)
        await self.events.store(target, events, moment)


@pytest.fixture
def world() -> World:
    return World()


async def test_a_link_resolves_to_its_app_until_revoked(world: World) -> None:
    org = world.org("Acme")
    app = world.app(org, "cli")
    admin = world.member(org, Role.ADMIN)

    link = await world.sharing.create(admin, app.id)

    assert link.id.startswith("shr_")
    assert link.org_id == org.id
    assert link.app_id == app.id
    assert link.created_by == admin.user.id
    assert is_valid_slug(link.slug)
    assert len(link.slug) >= 43
    assert link.expires_at is None
    assert not link.include_events
    assert await world.sharing.resolve(link.slug) == (link, app)
    assert await world.sharing.list(admin, app.id) == [link]

    world.clock.advance(60)
    revoked = await world.sharing.revoke(admin, app.id, link.id)

    assert revoked.revoked_at == world.clock.now()
    with pytest.raises(NotFound):
        await world.sharing.resolve(link.slug)
    assert await world.sharing.list(admin, app.id) == [revoked]


async def test_an_expired_link_is_not_found(world: World) -> None:
    org = world.org("Acme")
    app = world.app(org, "cli")
    owner = world.member(org, Role.OWNER)
    link = await world.sharing.create(
        owner, app.id, expires_at=NOW + timedelta(hours=1), include_events=True
    )
    assert link.include_events
    assert (await world.sharing.resolve(link.slug))[0] == link

    world.clock.advance(3600)

    with pytest.raises(NotFound):
        await world.sharing.resolve(link.slug)


async def test_unknown_and_malformed_slugs_are_not_found(world: World) -> None:
    for slug in ("", "short", "x" * 43, "../" * 20):
        with pytest.raises(NotFound):
            await world.sharing.resolve(slug)


async def test_an_expiry_must_be_in_the_future(world: World) -> None:
    org = world.org("Acme")
    app = world.app(org, "cli")
    owner = world.member(org, Role.OWNER)
    for expires_at in (NOW, NOW - timedelta(seconds=1), datetime(2027, 1, 1)):
        with pytest.raises(ValidationFailed):
            await world.sharing.create(owner, app.id, expires_at=expires_at)
    assert world.db.share_links == {}


async def test_who_may_manage_links(world: World) -> None:
    org, other = world.org("Acme"), world.org("Globex")
    app = world.app(org, "cli")
    observer = world.member(org, Role.OBSERVER)
    stranger = world.member(other, Role.OWNER)

    with pytest.raises(Forbidden):
        await world.sharing.create(observer, app.id)
    with pytest.raises(Forbidden):
        await world.sharing.list(observer, app.id)  # the slugs are the access
    with pytest.raises(NotFound):
        await world.sharing.create(stranger, app.id)
    with pytest.raises(NotFound):
        await world.sharing.set_badges(stranger, app.id, True)
    # An operator may, and is recorded as nobody in particular.
    link = await world.sharing.create(OperatorPrincipal(), app.id)
    assert link.created_by is None


async def test_revoking_another_apps_link_is_not_found(world: World) -> None:
    org = world.org("Acme")
    app, sibling = world.app(org, "cli"), world.app(org, "lib")
    owner = world.member(org, Role.OWNER)
    link = await world.sharing.create(owner, sibling.id)

    with pytest.raises(NotFound):
        await world.sharing.revoke(owner, app.id, link.id)
    with pytest.raises(NotFound):
        await world.sharing.revoke(owner, app.id, "shr_missing")

    assert (await world.sharing.resolve(link.slug))[0] == link


async def test_deleting_the_app_deletes_its_links(world: World) -> None:
    org = world.org("Acme")
    app = world.app(org, "cli")
    owner = world.member(org, Role.OWNER)
    link = await world.sharing.create(owner, app.id)
    async with world.uow() as uow:
        await uow.apps.delete(app.id)
        await uow.commit()
    with pytest.raises(NotFound):
        await world.sharing.resolve(link.slug)


async def test_badges_count_this_months_events_and_users(world: World) -> None:
    org = world.org("Acme")
    app, other_app = world.app(org, "cli"), world.app(org, "lib")
    owner = world.member(org, Role.OWNER)
    assert not await world.sharing.badges_enabled(owner, app.id)
    await world.sharing.set_badges(owner, app.id, True)
    assert await world.sharing.badges_enabled(owner, app.id)

    assert await world.sharing.badge(org.id, app.id, BadgeMetric.EVENTS_PER_MONTH) == Badge(
        "events", "0/mo", "lightgrey"
    )
    a, b, c = ("client_" + ch * 64 for ch in "abc")
    await world.ingest(app, [a, a, b] * 400)  # 1,200 events, 2 users
    await world.ingest(app, [c], at=NOW - timedelta(days=10))  # last month
    await world.ingest(other_app, [c] * 5)

    events = await world.sharing.badge(org.id, app.id, BadgeMetric.EVENTS_PER_MONTH)
    users = await world.sharing.badge(org.id, app.id, BadgeMetric.USERS_PER_MONTH)

    assert events == Badge("events", "1.2k/mo", "blue")
    assert users == Badge("users", "2/mo", "blue")
    assert events.label == events[0]  # a (label, message, color) tuple too


async def test_a_badge_of_an_app_without_badges_is_not_found(world: World) -> None:
    org = world.org("Acme")
    app = world.app(org, "cli")
    owner = world.member(org, Role.OWNER)

    for metric in BadgeMetric:
        with pytest.raises(NotFound):
            await world.sharing.badge(org.id, app.id, metric)

    await world.sharing.set_badges(owner, app.id, True)
    await world.sharing.badge(org.id, app.id, BadgeMetric.EVENTS_PER_MONTH)
    await world.sharing.set_badges(owner, app.id, False)
    with pytest.raises(NotFound):
        await world.sharing.badge(org.id, app.id, BadgeMetric.EVENTS_PER_MONTH)


async def test_a_badge_through_another_org_is_not_found(world: World) -> None:
    org, other = world.org("Acme"), world.org("Globex")
    app = world.app(org, "cli")
    await world.sharing.set_badges(world.member(org, Role.OWNER), app.id, True)

    with pytest.raises(NotFound):
        await world.sharing.badge(other.id, app.id, BadgeMetric.EVENTS_PER_MONTH)
    with pytest.raises(NotFound):
        await world.sharing.badge(org.id, "app-missing", BadgeMetric.USERS_PER_MONTH)


async def test_publishing_is_for_owners_and_admins_only() -> None:
    world = World()
    org = world.org("Acme")
    app = world.app(org, "cli")
    member = world.member(org, Role.MEMBER)
    with pytest.raises(Forbidden):
        await world.sharing.create(member, app.id)
    with pytest.raises(Forbidden):
        await world.sharing.set_badges(member, app.id, True)
    admin = world.member(org, Role.ADMIN)
    assert (await world.sharing.create(admin, app.id)).app_id == app.id
