"""`TenancyOperations`, the operator's use cases, over the fake unit of work: orgs, plans, apps,
credentials (issued once, stored hashed or encrypted, rotated with a grace period, revoked) and
usage."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest

from tests.fakes.storage import (
    FakeDatabase,
    FakeEventStore,
    FakeIngestDirectory,
    FakeSecretBox,
    FakeTenancyUnitOfWork,
)
from tests.fakes.system import FakeClock
from tkcloud_adapters.crypto import FernetSecretBox, generate_key
from tkcloud_adapters.system import RandomIdGenerator
from tkcloud_application.ports.system import SecretBox
from tkcloud_application.ports.tenancy import AppUsage
from tkcloud_application.tenancy.operations import TenancyOperations
from tkcloud_domain.errors import Conflict, NotFound, ValidationFailed
from tkcloud_domain.plans import PLAN_LIMITS, Plan, PlanLimits
from tkcloud_domain.tenancy import Credential, Environment, Org

UUID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
CREDENTIAL_ID_FORM = re.compile(r"crd_[a-z2-7]{20}\Z")
GRACE = timedelta(hours=24)
MISSING = "00000000-0000-4000-8000-000000000000"


@dataclass
class World:
    db: FakeDatabase = field(default_factory=FakeDatabase)
    clock: FakeClock = field(default_factory=FakeClock)
    box: SecretBox = field(default_factory=FakeSecretBox)
    changes: list[tuple[str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ops = TenancyOperations(
            uow=lambda: FakeTenancyUnitOfWork(self.db),
            usage=FakeEventStore(self.db),
            ids=RandomIdGenerator(),
            secret_box=self.box,
            clock=self.clock,
            region="eu-1",
            on_change=lambda org_id, app_id: self.changes.append((org_id, app_id)),
        )

    def credentials(self, app_id: str) -> dict[str, Credential]:
        return {
            c.credential.id: c.credential
            for c in self.db.credentials.values()
            if c.credential.app_id == app_id
        }

    async def org(self, plan: Plan = Plan.FREE) -> Org:
        return await self.ops.create_org("Acme", plan)


# --- orgs ----------------------------------------------------------------------------------------


async def test_create_org_gives_a_uuid_id_a_slug_and_the_plan_region_and_time() -> None:
    w = World()
    org = await w.ops.create_org("Acme Corp", Plan.PRO)
    assert UUID_FORM.match(org.id)
    assert org.slug == f"acme-corp-{org.id[-6:]}"
    assert (org.name, org.plan, org.region, org.created_at) == (
        "Acme Corp",
        Plan.PRO,
        "eu-1",
        w.clock.now(),
    )
    assert (org.custom_events_per_month, org.custom_retention_days) == (None, None)
    assert w.db.orgs == {org.id: org}  # committed


async def test_a_new_org_is_on_the_free_plan_by_default() -> None:
    w = World()
    org = await w.ops.create_org("Acme")
    assert org.plan is Plan.FREE
    assert org.limits == PLAN_LIMITS[Plan.FREE]


async def test_the_name_is_trimmed_and_inner_whitespace_collapsed() -> None:
    w = World()
    org = await w.ops.create_org("  Acme \t  Corp\n ")
    assert org.name == "Acme Corp"


@pytest.mark.parametrize(
    ("name", "slug_part"),
    [
        ("ACME Corp!", "acme-corp"),
        ("--Über  Tools--", "ber-tools"),
        ("!!!", "org"),
        ("日本", "org"),
        ("x" * 60, "x" * 48),
    ],
)
async def test_the_slug_is_lowercase_ascii_words_then_the_ids_last_six_characters(
    name: str, slug_part: str
) -> None:
    w = World()
    org = await w.ops.create_org(name)
    assert org.slug == f"{slug_part}-{org.id[-6:]}"


async def test_two_orgs_with_the_same_name_get_different_ids_and_slugs() -> None:
    w = World()
    first, second = await w.ops.create_org("Acme"), await w.ops.create_org("Acme")
    assert first.id != second.id
    assert first.slug != second.slug
    assert {o.id for o in await w.ops.list_orgs()} == {first.id, second.id}


@pytest.mark.parametrize("name", ["", "   ", "\t\n"])
async def test_an_empty_name_is_refused_and_nothing_is_stored(name: str) -> None:
    w = World()
    with pytest.raises(ValidationFailed, match="name must not be empty") as raised:
        await w.ops.create_org(name)
    assert raised.value.details == {"field": "name"}
    assert w.db.orgs == {}


async def test_a_name_over_100_characters_after_cleaning_is_refused() -> None:
    w = World()
    with pytest.raises(ValidationFailed, match="longer than 100") as raised:
        await w.ops.create_org("x" * 101)
    assert raised.value.details == {"field": "name"}
    assert (await w.ops.create_org("  " + "x" * 100 + "  ")).name == "x" * 100
    assert (await w.ops.create_org("a " * 50 + "  ")).name == ("a " * 50).strip()


async def test_creating_an_org_with_a_taken_id_is_a_conflict() -> None:
    w = World()
    org_id = str(uuid.uuid4())
    await w.ops.create_org("First", org_id=org_id)
    with pytest.raises(Conflict):
        await w.ops.create_org("Second", org_id=org_id)
    assert w.db.orgs[org_id].name == "First"


async def test_get_org_of_an_unknown_id_is_not_found() -> None:
    with pytest.raises(NotFound):
        await World().ops.get_org(MISSING)


# --- plans ---------------------------------------------------------------------------------------


async def test_enterprise_gets_its_custom_quota_and_retention_and_no_rate_limit() -> None:
    w = World()
    org = await w.org()
    updated = await w.ops.set_plan(
        org.id, Plan.ENTERPRISE, custom_events_per_month=5_000_000, custom_retention_days=1_000
    )
    assert updated.plan is Plan.ENTERPRISE
    assert updated.limits == PlanLimits(
        requests_per_minute=None, events_per_month=5_000_000, retention_days=1_000
    )
    assert w.db.orgs[org.id] == updated
    assert w.changes == [(org.id, None)]


async def test_enterprise_without_custom_terms_is_unlimited() -> None:
    w = World()
    org = await w.org()
    updated = await w.ops.set_plan(org.id, Plan.ENTERPRISE)
    assert updated.limits == PlanLimits(None, None, None)


@pytest.mark.parametrize("plan", [Plan.FREE, Plan.PRO, Plan.BUSINESS])
@pytest.mark.parametrize(
    "custom", [{"custom_events_per_month": 1_000}, {"custom_retention_days": 10}]
)
async def test_custom_terms_are_refused_on_a_non_enterprise_plan(
    plan: Plan, custom: dict[str, int]
) -> None:
    w = World()
    org = await w.org()
    with pytest.raises(ValidationFailed, match="enterprise plan only"):
        await w.ops.set_plan(org.id, plan, **custom)
    assert w.db.orgs[org.id].plan is Plan.FREE
    assert w.changes == []


@pytest.mark.parametrize(
    "custom",
    [
        {"custom_events_per_month": 0},
        {"custom_events_per_month": -5},
        {"custom_retention_days": 0},
    ],
)
async def test_custom_terms_must_be_positive(custom: dict[str, int]) -> None:
    w = World()
    org = await w.org()
    with pytest.raises(ValidationFailed, match="positive"):
        await w.ops.set_plan(org.id, Plan.ENTERPRISE, **custom)
    assert w.db.orgs[org.id].plan is Plan.FREE


async def test_leaving_enterprise_drops_the_custom_terms() -> None:
    w = World()
    org = await w.org()
    await w.ops.set_plan(org.id, Plan.ENTERPRISE, custom_events_per_month=50)
    updated = await w.ops.set_plan(org.id, Plan.PRO)
    assert updated.custom_events_per_month is None
    assert updated.limits == PLAN_LIMITS[Plan.PRO]


async def test_set_plan_of_an_unknown_org_is_not_found_and_changes_nothing() -> None:
    w = World()
    with pytest.raises(NotFound):
        await w.ops.set_plan(MISSING, Plan.PRO)
    assert w.db.orgs == {}
    assert w.changes == []


# --- apps ----------------------------------------------------------------------------------------


async def test_a_new_app_starts_active_in_staging_with_a_uuid_id() -> None:
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "  My   CLI ")
    app = created.app
    assert UUID_FORM.match(app.id)
    assert (app.org_id, app.name, app.environment, app.active, app.created_at) == (
        org.id,
        "My CLI",
        Environment.STAGING,
        True,
        w.clock.now(),
    )
    assert w.db.apps == {app.id: app}
    assert w.changes == [(org.id, app.id)]


async def test_an_app_can_be_created_in_production() -> None:
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI", Environment.PRODUCTION)
    assert created.app.environment is Environment.PRODUCTION


async def test_the_issued_credential_is_shown_once_with_token_and_secret_prefixes() -> None:
    w = World()
    org = await w.org()
    issued = (await w.ops.create_app(org.id, "CLI")).issued
    assert issued.token.startswith("tk_")
    assert issued.secret.startswith("tks_")
    assert len(issued.token) > 40
    assert len(issued.secret) > 40
    assert CREDENTIAL_ID_FORM.match(issued.credential.id)
    assert issued.credential.created_at == w.clock.now()
    assert issued.credential.is_live(w.clock.now() + timedelta(days=3650))


async def test_the_token_is_stored_only_as_its_sha256_and_the_secret_only_encrypted() -> None:
    w = World(box=FernetSecretBox(generate_key()))
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI")
    issued = created.issued
    [stored] = w.db.credentials.values()
    assert stored.credential == issued.credential
    assert stored.credential.token_hash == hashlib.sha256(issued.token.encode()).hexdigest()
    assert w.box.decrypt(stored.secret_ciphertext) == issued.secret
    everything_stored = repr(w.db)
    assert issued.token not in everything_stored
    assert issued.secret not in everything_stored


async def test_the_stored_ciphertext_is_what_the_secret_box_made_of_the_secret() -> None:
    w = World()
    org = await w.org()
    issued = (await w.ops.create_app(org.id, "CLI")).issued
    stored = w.db.credentials[issued.credential.id]
    assert stored.secret_ciphertext == FakeSecretBox().encrypt(issued.secret)


async def test_every_app_gets_its_own_token_and_secret() -> None:
    w = World()
    org = await w.org()
    first = (await w.ops.create_app(org.id, "One")).issued
    second = (await w.ops.create_app(org.id, "Two")).issued
    assert first.token != second.token
    assert first.secret != second.secret


async def test_an_existing_sdk_configuration_can_be_imported_with_its_app_id_and_secret() -> None:
    w = World()
    org = await w.org()
    app_id = str(uuid.uuid4())
    created = await w.ops.create_app(org.id, "Imported", app_id=app_id, secret="harness-secret")
    assert created.app.id == app_id
    assert created.issued.secret == "harness-secret"
    assert w.box.decrypt(w.db.credentials[created.issued.credential.id].secret_ciphertext) == (
        "harness-secret"
    )


async def test_a_created_app_is_served_to_ingestion_with_its_secret_and_token() -> None:
    w = World()
    org = await w.org(Plan.PRO)
    created = await w.ops.create_app(org.id, "CLI", Environment.PRODUCTION)
    directory = FakeIngestDirectory(w.db, secret_box=w.box, clock=w.clock)
    found = await directory.find_ingest_app(org.id, created.app.id)
    assert found is not None
    assert [s.secret for s in found.live_secrets(w.clock.now())] == [created.issued.secret]
    assert found.accepts_token(created.issued.token, w.clock.now())
    assert found.org_limits == PLAN_LIMITS[Plan.PRO]


async def test_create_app_in_an_unknown_org_is_not_found_and_stores_nothing() -> None:
    w = World()
    with pytest.raises(NotFound):
        await w.ops.create_app(MISSING, "CLI")
    assert (w.db.apps, w.db.credentials, w.changes) == ({}, {}, [])


async def test_create_app_with_a_taken_app_id_is_a_conflict_and_rolls_back() -> None:
    w = World()
    org = await w.org()
    first = await w.ops.create_app(org.id, "First")
    with pytest.raises(Conflict):
        await w.ops.create_app(org.id, "Second", app_id=first.app.id)
    assert w.db.apps[first.app.id].name == "First"
    assert len(w.db.credentials) == 1


@pytest.mark.parametrize("name", ["", "  ", "y" * 101])
async def test_create_app_validates_the_name(name: str) -> None:
    w = World()
    org = await w.org()
    with pytest.raises(ValidationFailed):
        await w.ops.create_app(org.id, name)
    assert w.db.apps == {}


async def test_list_apps_of_an_unknown_org_is_not_found() -> None:
    with pytest.raises(NotFound):
        await World().ops.list_apps(MISSING)


# --- rotation and revocation ---------------------------------------------------------------------


async def test_rotation_gives_the_old_credential_the_grace_period_and_issues_a_live_new_one() -> (
    None
):
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI")
    old = created.issued
    w.clock.advance(3600)
    w.changes.clear()

    new = await w.ops.rotate_credentials(created.app.id)
    now = w.clock.now()
    stored = w.credentials(created.app.id)
    assert stored[old.credential.id].expires_at == now + GRACE
    assert stored[new.credential.id].expires_at is None
    assert stored[new.credential.id].created_at == now
    assert new.token != old.token
    assert new.secret != old.secret
    assert w.changes == [(org.id, created.app.id)]

    directory = FakeIngestDirectory(w.db, secret_box=w.box, clock=w.clock)
    during = await directory.find_ingest_app(org.id, created.app.id)
    assert during is not None
    assert [s.secret for s in during.secrets] == [new.secret, old.secret]
    w.clock.set(now + GRACE)
    after = await directory.find_ingest_app(org.id, created.app.id)
    assert after is not None
    assert [s.secret for s in after.secrets] == [new.secret]


async def test_the_grace_period_is_configurable() -> None:
    w = World()
    ops = TenancyOperations(
        uow=lambda: FakeTenancyUnitOfWork(w.db),
        usage=FakeEventStore(w.db),
        ids=RandomIdGenerator(),
        secret_box=w.box,
        clock=w.clock,
        region="eu-1",
        rotation_grace=timedelta(minutes=5),
    )
    org = await ops.create_org("Acme")
    created = await ops.create_app(org.id, "CLI")
    await ops.rotate_credentials(created.app.id)
    expiry = w.credentials(created.app.id)[created.issued.credential.id].expires_at
    assert expiry == w.clock.now() + timedelta(minutes=5)


async def test_rotating_twice_within_the_grace_keeps_the_first_expiry_and_retires_the_second() -> (
    None
):
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI")
    first = created.issued.credential
    t0 = w.clock.now()
    second = (await w.ops.rotate_credentials(created.app.id)).credential
    w.clock.advance(3600)
    t1 = w.clock.now()
    third = (await w.ops.rotate_credentials(created.app.id)).credential

    stored = w.credentials(created.app.id)
    # The first is not given a longer life by the second rotation.
    assert stored[first.id].expires_at == t0 + GRACE
    assert stored[second.id].expires_at == t1 + GRACE
    assert stored[third.id].expires_at is None
    assert all(stored[c.id].is_live(t1) for c in (first, second, third))
    assert [c.id for c in stored.values() if c.is_live(t0 + GRACE)] == [second.id, third.id]
    assert [c.id for c in stored.values() if c.is_live(t1 + GRACE)] == [third.id]


async def test_rotating_an_unknown_app_is_not_found() -> None:
    w = World()
    with pytest.raises(NotFound):
        await w.ops.rotate_credentials(MISSING)
    assert w.changes == []


async def test_revoke_revokes_every_live_credential_at_once_and_returns_how_many() -> None:
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI")
    await w.ops.rotate_credentials(created.app.id)  # the old one is still live (grace)
    w.clock.advance(60)
    w.changes.clear()

    assert await w.ops.revoke_credentials(created.app.id) == 2
    now = w.clock.now()
    stored = w.credentials(created.app.id)
    assert [c.revoked_at for c in stored.values()] == [now, now]
    assert not any(c.is_live(now) for c in stored.values())
    assert w.changes == [(org.id, created.app.id)]

    directory = FakeIngestDirectory(w.db, secret_box=w.box, clock=w.clock)
    found = await directory.find_ingest_app(org.id, created.app.id)
    assert found is not None
    assert found.secrets == ()


async def test_revoke_leaves_credentials_past_their_grace_alone_and_does_not_count_them() -> None:
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI")
    await w.ops.rotate_credentials(created.app.id)
    w.clock.advance(GRACE.total_seconds() + 1)
    assert await w.ops.revoke_credentials(created.app.id) == 1
    old = w.credentials(created.app.id)[created.issued.credential.id]
    assert old.revoked_at is None
    assert await w.ops.revoke_credentials(created.app.id) == 0


async def test_rotation_after_a_revocation_issues_a_live_credential_again() -> None:
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI")
    await w.ops.revoke_credentials(created.app.id)
    new = await w.ops.rotate_credentials(created.app.id)
    stored = w.credentials(created.app.id)
    assert [c.id for c in stored.values() if c.is_live(w.clock.now())] == [new.credential.id]
    assert stored[created.issued.credential.id].expires_at is None  # revoked, not expired


async def test_revoking_an_unknown_app_is_not_found() -> None:
    w = World()
    with pytest.raises(NotFound):
        await w.ops.revoke_credentials(MISSING)
    assert w.changes == []


# --- usage ---------------------------------------------------------------------------------------


async def test_usage_of_an_unknown_org_is_not_found() -> None:
    with pytest.raises(NotFound):
        await World().ops.usage(MISSING)


async def test_usage_defaults_to_this_month_and_lists_quiet_apps_with_zero() -> None:
    w = World()
    org = await w.org()
    created = await w.ops.create_app(org.id, "CLI")
    w.db.usage[(created.app.id, "2026-11", Environment.STAGING)] = (org.id, 7)
    assert await w.ops.usage(org.id) == [
        AppUsage(org.id, created.app.id, Environment.STAGING, "2026-12", 0)
    ]
    assert await w.ops.usage(org.id, "2026-11") == [
        AppUsage(org.id, created.app.id, Environment.STAGING, "2026-11", 7)
    ]


async def test_usage_without_an_org_covers_every_org() -> None:
    w = World()
    first, second = await w.org(), await w.org()
    a = await w.ops.create_app(first.id, "A")
    b = await w.ops.create_app(second.id, "B")
    rows = await w.ops.usage()
    assert {(r.org_id, r.app_id) for r in rows} == {(first.id, a.app.id), (second.id, b.app.id)}


# --- ids imported from an SDK configuration ------------------------------------------------------

SDK_FORMS_OF_ONE_UUID = [
    "7C9E6679-7425-40DE-944B-E07FC1F90AE7",  # Uuid::parse_str accepts it, Display prints lowercase
    "7c9e6679742540de944be07fc1f90ae7",  # the simple form, also accepted by Uuid::parse_str
]
CANONICAL = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize("imported", SDK_FORMS_OF_ONE_UUID)
async def test_an_imported_app_id_is_stored_in_the_form_the_sdk_sends_or_refused(
    imported: str,
) -> None:
    w = World()
    org = await w.org()
    try:
        created = await w.ops.create_app(org.id, "Imported", app_id=imported)
    except ValidationFailed:
        return  # refusing a non-canonical id is as good as normalising it
    assert created.app.id == CANONICAL


@pytest.mark.parametrize("imported", SDK_FORMS_OF_ONE_UUID)
async def test_an_imported_org_id_is_stored_in_the_form_the_sdk_sends_or_refused(
    imported: str,
) -> None:
    w = World()
    try:
        org = await w.ops.create_org("Imported", org_id=imported)
    except ValidationFailed:
        return
    assert org.id == CANONICAL
