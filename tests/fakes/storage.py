"""In-memory fakes of the storage ports: EventStore, UsageReport, IngestDirectory and the
tenancy unit of work (with the identity repositories of tests/fakes/identity.py and the billing
repository of tests/fakes/billing.py), plus a reversible SecretBox.

They share one `FakeDatabase`, as the SQL adapters share one database, and pass the same
contract tests (tests/integration/test_sql_contract.py, test_identity_contract.py,
test_billing_contract.py). Set
`db.unavailable = True` to make every call raise `ServiceUnavailable("database")`, as an
unreachable database does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from tests.fakes.billing import FakeBillingRepository, StoredPlanChange, StoredStripeEvent
from tests.fakes.identity import (
    FakeApiKeyRepository,
    FakeInviteRepository,
    FakeMagicLinkRepository,
    FakeMembershipRepository,
    FakeOAuthStateRepository,
    FakeSessionRepository,
    FakeUserRepository,
)
from tests.fakes.sharing import FakeBadgeSettings, FakeShareLinkRepository
from tkcloud_application.ports.billing import BillingRepository
from tkcloud_application.ports.identity import (
    ApiKeyRepository,
    InviteRepository,
    MagicLinkRepository,
    MembershipRepository,
    OAuthStateRepository,
    SessionRepository,
    UserRepository,
)
from tkcloud_application.ports.sharing import BadgeSettings, ShareLinkRepository
from tkcloud_application.ports.system import Clock, SecretBox
from tkcloud_application.ports.tenancy import (
    AppRepository,
    AppUsage,
    CredentialRepository,
    OrgRepository,
)
from tkcloud_domain.billing import BillingState
from tkcloud_domain.errors import Conflict, ServiceUnavailable
from tkcloud_domain.events import EventSchema
from tkcloud_domain.identity import (
    ApiKey,
    Invite,
    MagicLink,
    Membership,
    OAuthState,
    Session,
    User,
)
from tkcloud_domain.limits import QuotaScope
from tkcloud_domain.months import month_key
from tkcloud_domain.plans import Plan
from tkcloud_domain.sharing import ShareLink
from tkcloud_domain.tenancy import (
    App,
    Credential,
    Environment,
    IngestApp,
    LiveSecret,
    Org,
)


class FakeSecretBox:
    """Reversible and obviously not encryption: "enc:" + plaintext."""

    PREFIX = "enc:"

    def encrypt(self, plaintext: str) -> str:
        return self.PREFIX + plaintext

    def decrypt(self, ciphertext: str) -> str:
        if not ciphertext.startswith(self.PREFIX):
            raise ValueError("not a FakeSecretBox ciphertext")
        return ciphertext.removeprefix(self.PREFIX)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    org_id: str
    event: EventSchema
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StoredCredential:
    credential: Credential
    secret_ciphertext: str


LockRow = Callable[[Hashable], Awaitable[None]]


class RowLocks:
    """Rows changed by a single-use operation (consume a sign-in link or an OAuth state, close an
    invite) stay locked by their unit of work until it commits or ends, as Postgres row locks
    do: another unit of work changing the same row waits, then sees what the first committed.
    Without this, two interleaved units of work would both consume the same link."""

    def __init__(self) -> None:
        self._holders: dict[Hashable, object] = {}
        self._released = asyncio.Condition()

    async def acquire(self, row: Hashable, holder: object) -> None:
        async with self._released:
            await self._released.wait_for(lambda: self._holders.get(row, holder) is holder)
            self._holders[row] = holder

    async def release_all(self, holder: object) -> None:
        async with self._released:
            for row in [row for row, owner in self._holders.items() if owner is holder]:
                del self._holders[row]
            self._released.notify_all()


@dataclass
class FakeDatabase:
    """The committed state, table by table."""

    orgs: dict[str, Org] = field(default_factory=dict)
    apps: dict[str, App] = field(default_factory=dict)
    credentials: dict[str, StoredCredential] = field(default_factory=dict)
    events: dict[tuple[str, str], StoredEvent] = field(default_factory=dict)  # (app_id, event_id)
    # (app_id, month, environment) -> (org_id, events), like usage_monthly
    usage: dict[tuple[str, str, Environment], tuple[str, int]] = field(default_factory=dict)
    dnt: dict[tuple[str, date], int] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    memberships: dict[tuple[str, str], Membership] = field(default_factory=dict)  # (org, user)
    sessions: dict[str, Session] = field(default_factory=dict)
    magic_links: dict[str, MagicLink] = field(default_factory=dict)
    invites: dict[str, Invite] = field(default_factory=dict)
    api_keys: dict[str, ApiKey] = field(default_factory=dict)
    oauth_states: dict[str, OAuthState] = field(default_factory=dict)  # by state
    # Billing beside each org, by org id; its `plan` is not read: the org's plan is.
    billing: dict[str, BillingState] = field(default_factory=dict)
    stripe_events: dict[str, StoredStripeEvent] = field(default_factory=dict)  # by event id
    plan_changes: dict[int, StoredPlanChange] = field(default_factory=dict)
    # (org_id, kind, period) of the notifications sent
    notifications_sent: dict[tuple[str, str, str], bool] = field(default_factory=dict)
    plan_change_ids: Iterator[int] = field(
        default_factory=lambda: itertools.count(1), compare=False, repr=False
    )
    # Public sharing: share links by id, and the badge switch of each app (a column of `apps`
    # in SQL, so deleting the app drops it).
    share_links: dict[str, ShareLink] = field(default_factory=dict)
    badges: dict[str, bool] = field(default_factory=dict)
    row_locks: RowLocks = field(default_factory=RowLocks, compare=False, repr=False)
    unavailable: bool = False

    def check_available(self) -> None:
        if self.unavailable:
            raise ServiceUnavailable("database")


class FakeEventStore:
    """Implements `EventStore` and `UsageReport`."""

    def __init__(self, db: FakeDatabase | None = None) -> None:
        self.db = db if db is not None else FakeDatabase()

    async def store(
        self, app: IngestApp, events: Sequence[EventSchema], received_at: datetime
    ) -> int:
        self.db.check_available()
        inserted = 0
        for event in events:
            key = (app.app_id, event.event_id)
            if key not in self.db.events:
                self.db.events[key] = StoredEvent(app.org_id, event, received_at)
                inserted += 1
        if inserted:
            usage_key = (app.app_id, month_key(received_at), app.environment)
            _, count = self.db.usage.get(usage_key, (app.org_id, 0))
            self.db.usage[usage_key] = (app.org_id, count + inserted)
        return inserted

    async def events_this_month(self, scope: QuotaScope, month: str) -> int:
        self.db.check_available()
        if scope.kind not in ("org", "app"):
            raise ValueError(f"unknown quota scope kind {scope.kind!r}")
        total = 0
        for (app_id, row_month, environment), (org_id, count) in self.db.usage.items():
            if row_month != month:
                continue
            if scope.kind == "org" and org_id == scope.id and environment is Environment.PRODUCTION:
                total += count
            if scope.kind == "app" and app_id == scope.id and environment is Environment.STAGING:
                total += count
        return total

    async def count_dnt(self, app: IngestApp, day: date) -> None:
        self.db.check_available()
        self.db.dnt[(app.app_id, day)] = self.db.dnt.get((app.app_id, day), 0) + 1

    async def dnt_requests(self, app_id: str, since: date | None = None) -> int:
        self.db.check_available()
        return sum(
            count
            for (counted_app, day), count in self.db.dnt.items()
            if counted_app == app_id and (since is None or day >= since)
        )

    async def monthly_usage(self, month: str, org_id: str | None = None) -> list[AppUsage]:
        self.db.check_available()
        report: list[AppUsage] = []
        for app in sorted(self.db.apps.values(), key=lambda a: (a.org_id, a.id)):
            if org_id is not None and app.org_id != org_id:
                continue
            rows = sorted(
                (environment, count)
                for (app_id, row_month, environment), (_, count) in self.db.usage.items()
                if app_id == app.id and row_month == month
            )
            for environment, count in rows or [(app.environment, 0)]:
                report.append(AppUsage(app.org_id, app.id, environment, month, count))
        return report

    def stored(self, app_id: str) -> list[EventSchema]:
        """The app's stored events, in the order they were first stored (for assertions)."""
        return [s.event for (a, _), s in self.db.events.items() if a == app_id]


class FakeIngestDirectory:
    """Implements `IngestDirectory`: apps registered with `add()`, else (given a database) what
    the tenancy tables say, exactly as the SQL directory reads them."""

    def __init__(
        self,
        db: FakeDatabase | None = None,
        *,
        secret_box: SecretBox | None = None,
        clock: Clock | None = None,
    ) -> None:
        if db is not None and (secret_box is None or clock is None):
            raise ValueError("reading a FakeDatabase needs a secret_box and a clock")
        self._db = db
        self._secret_box = secret_box
        self._clock = clock
        self._added: dict[tuple[str, str], IngestApp] = {}
        self.lookups = 0

    def add(self, app: IngestApp) -> None:
        self._added[(app.org_id, app.app_id)] = app

    async def find_ingest_app(self, org_id: str, app_id: str) -> IngestApp | None:
        self.lookups += 1
        added = self._added.get((org_id, app_id))
        if added is not None or self._db is None:
            return added
        assert self._secret_box is not None
        assert self._clock is not None
        self._db.check_available()
        app = self._db.apps.get(app_id)
        org = self._db.orgs.get(org_id)
        if app is None or org is None or app.org_id != org_id:
            return None
        now = self._clock.now()
        live = sorted(
            (
                s
                for s in self._db.credentials.values()
                if s.credential.app_id == app_id and s.credential.is_live(now)
            ),
            key=lambda s: s.credential.id,
        )
        live.sort(key=lambda s: s.credential.created_at, reverse=True)
        return IngestApp(
            org_id=org_id,
            app_id=app_id,
            environment=app.environment,
            active=app.active,
            plan=org.plan,
            org_limits=org.limits,
            secrets=tuple(
                LiveSecret(
                    token_hash=s.credential.token_hash,
                    secret=self._secret_box.decrypt(s.secret_ciphertext),
                    expires_at=s.credential.expires_at,
                )
                for s in live
            ),
        )


K = TypeVar("K")
V = TypeVar("V")


class Staged(Generic[K, V]):
    """A table inside a unit of work: reads see the committed rows plus this unit's writes;
    writes reach the committed rows only on commit."""

    def __init__(self, committed: dict[K, V]) -> None:
        self._committed = committed
        self._pending: dict[K, V | None] = {}  # None: deleted by this unit of work

    def get(self, key: K) -> V | None:
        return self._pending[key] if key in self._pending else self._committed.get(key)

    def items(self) -> list[tuple[K, V]]:
        merged = {**self._committed, **self._pending}
        return [(key, value) for key, value in merged.items() if value is not None]

    def rows(self) -> list[V]:
        return [value for _, value in self.items()]

    def put(self, key: K, value: V) -> None:
        self._pending[key] = value

    def delete(self, key: K) -> None:
        self._pending[key] = None

    def commit(self) -> None:
        for key, value in self._pending.items():
            if value is None:
                self._committed.pop(key, None)
            else:
                self._committed[key] = value
        self._pending.clear()


class FakeOrgRepository:
    def __init__(self, orgs: Staged[str, Org]) -> None:
        self._orgs = orgs

    async def add(self, org: Org) -> None:
        if self._orgs.get(org.id) is not None or any(o.slug == org.slug for o in self._orgs.rows()):
            raise Conflict(f"org id {org.id!r} or slug {org.slug!r} is taken")
        self._orgs.put(org.id, org)

    async def get(self, org_id: str) -> Org | None:
        return self._orgs.get(org_id)

    async def list_all(self) -> list[Org]:
        return sorted(self._orgs.rows(), key=lambda o: (o.created_at, o.id))

    async def rename(self, org_id: str, name: str) -> None:
        org = self._orgs.get(org_id)
        if org is not None:
            self._orgs.put(org_id, dataclasses.replace(org, name=name))

    async def set_plan(
        self,
        org_id: str,
        plan: Plan,
        custom_events_per_month: int | None,
        custom_retention_days: int | None,
    ) -> None:
        org = self._orgs.get(org_id)
        if org is not None:
            self._orgs.put(
                org_id,
                Org(
                    id=org.id,
                    name=org.name,
                    slug=org.slug,
                    plan=plan,
                    region=org.region,
                    created_at=org.created_at,
                    custom_events_per_month=custom_events_per_month,
                    custom_retention_days=custom_retention_days,
                ),
            )


class FakeAppRepository:
    def __init__(self, tables: StagedTables) -> None:
        # Deleting an app reaches into its credentials, events, usage and DNT counts.
        self._tables = tables
        self._apps = tables.apps
        self._orgs = tables.orgs

    async def add(self, app: App) -> None:
        if self._apps.get(app.id) is not None:
            raise Conflict(f"app id {app.id!r} is taken")
        if self._orgs.get(app.org_id) is None:
            # The SQL adapters fail on the foreign key: a use case must not add orphans.
            raise ValueError(f"org {app.org_id!r} does not exist")
        self._apps.put(app.id, app)

    async def get(self, app_id: str) -> App | None:
        return self._apps.get(app_id)

    async def list_for_org(self, org_id: str) -> list[App]:
        found = [a for a in self._apps.rows() if a.org_id == org_id]
        return sorted(found, key=lambda a: (a.created_at, a.id))

    async def set_environment(self, app_id: str, environment: Environment) -> None:
        app = self._apps.get(app_id)
        if app is not None:
            self._apps.put(
                app_id,
                App(app.id, app.org_id, app.name, environment, app.active, app.created_at),
            )

    async def rename(self, app_id: str, name: str) -> None:
        app = self._apps.get(app_id)
        if app is not None:
            self._apps.put(app_id, dataclasses.replace(app, name=name))

    async def delete(self, app_id: str) -> None:
        t = self._tables
        for credential_id, stored in t.credentials.items():
            if stored.credential.app_id == app_id:
                t.credentials.delete(credential_id)
        await self.delete_events(app_id)
        # Usage stays, as in SQL: the quota counts accepted events.
        for dnt_key, _ in t.dnt.items():
            if dnt_key[0] == app_id:
                t.dnt.delete(dnt_key)
        for share_id, link in t.share_links.items():
            if link.app_id == app_id:
                t.share_links.delete(share_id)
        t.badges.delete(app_id)
        self._apps.delete(app_id)

    async def delete_events(self, app_id: str) -> int:
        doomed = [key for key, _ in self._tables.events.items() if key[0] == app_id]
        for key in doomed:
            self._tables.events.delete(key)
        return len(doomed)


class FakeCredentialRepository:
    def __init__(self, credentials: Staged[str, StoredCredential], apps: Staged[str, App]) -> None:
        self._credentials = credentials
        self._apps = apps

    async def add(self, credential: Credential, secret_ciphertext: str) -> None:
        taken = any(
            s.credential.token_hash == credential.token_hash for s in self._credentials.rows()
        )
        if self._credentials.get(credential.id) is not None or taken:
            raise Conflict(f"credential {credential.id!r} or its token exists")
        if self._apps.get(credential.app_id) is None:
            raise ValueError(f"app {credential.app_id!r} does not exist")
        self._credentials.put(credential.id, StoredCredential(credential, secret_ciphertext))

    async def list_for_app(self, app_id: str) -> list[Credential]:
        found = [s.credential for s in self._credentials.rows() if s.credential.app_id == app_id]
        return sorted(found, key=lambda c: (c.created_at, c.id), reverse=True)

    async def expire(self, credential_id: str, at: datetime) -> None:
        self._change(credential_id, expires_at=at)

    async def revoke(self, credential_id: str, at: datetime) -> None:
        self._change(credential_id, revoked_at=at)

    def _change(self, credential_id: str, **changes: datetime) -> None:
        stored = self._credentials.get(credential_id)
        if stored is None:
            return
        c = stored.credential
        values = {"expires_at": c.expires_at, "revoked_at": c.revoked_at, **changes}
        credential = Credential(c.id, c.app_id, c.token_hash, c.created_at, **values)
        self._credentials.put(credential_id, StoredCredential(credential, stored.secret_ciphertext))


@dataclass(frozen=True)
class StagedTables:
    """Every table of a FakeDatabase, staged for one unit of work."""

    orgs: Staged[str, Org]
    apps: Staged[str, App]
    credentials: Staged[str, StoredCredential]
    events: Staged[tuple[str, str], StoredEvent]
    usage: Staged[tuple[str, str, Environment], tuple[str, int]]
    dnt: Staged[tuple[str, date], int]
    users: Staged[str, User]
    memberships: Staged[tuple[str, str], Membership]
    sessions: Staged[str, Session]
    magic_links: Staged[str, MagicLink]
    invites: Staged[str, Invite]
    api_keys: Staged[str, ApiKey]
    oauth_states: Staged[str, OAuthState]
    billing: Staged[str, BillingState]
    stripe_events: Staged[str, StoredStripeEvent]
    plan_changes: Staged[int, StoredPlanChange]
    notifications_sent: Staged[tuple[str, str, str], bool]
    share_links: Staged[str, ShareLink]
    badges: Staged[str, bool]

    @classmethod
    def of(cls, db: FakeDatabase) -> StagedTables:
        tables: dict[str, Any] = {
            f.name: Staged(getattr(db, f.name)) for f in dataclasses.fields(cls)
        }
        return cls(**tables)

    def commit(self) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).commit()


class FakeTenancyUnitOfWork:
    """Implements `TenancyUnitOfWork` over a FakeDatabase shared by every unit of work."""

    orgs: OrgRepository
    apps: AppRepository
    credentials: CredentialRepository
    users: UserRepository
    memberships: MembershipRepository
    sessions: SessionRepository
    magic_links: MagicLinkRepository
    invites: InviteRepository
    api_keys: ApiKeyRepository
    oauth_states: OAuthStateRepository
    billing: BillingRepository
    share_links: ShareLinkRepository
    badges: BadgeSettings

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self._tables: StagedTables
        self._active = False
        self.commits = 0

    async def __aenter__(self) -> Self:
        if self._active:
            raise RuntimeError("this unit of work is already in use")
        self.db.check_available()
        t = self._tables = StagedTables.of(self.db)
        lock_row: LockRow = partial(self.db.row_locks.acquire, holder=self)
        self.orgs = FakeOrgRepository(t.orgs)
        self.apps = FakeAppRepository(t)
        self.credentials = FakeCredentialRepository(t.credentials, t.apps)
        self.users = FakeUserRepository(t.users)
        self.memberships = FakeMembershipRepository(t.memberships, t.orgs, t.users)
        self.sessions = FakeSessionRepository(t.sessions, t.users)
        self.magic_links = FakeMagicLinkRepository(t.magic_links, lock_row)
        self.invites = FakeInviteRepository(t.invites, t.orgs, lock_row)
        self.api_keys = FakeApiKeyRepository(t.api_keys, t.orgs)
        self.oauth_states = FakeOAuthStateRepository(t.oauth_states, lock_row)
        self.billing = FakeBillingRepository(
            orgs=t.orgs,
            billing=t.billing,
            stripe_events=t.stripe_events,
            plan_changes=t.plan_changes,
            notifications_sent=t.notifications_sent,
            plan_change_ids=self.db.plan_change_ids,
            lock_row=lock_row,
        )
        self.share_links = FakeShareLinkRepository(t.share_links, t.apps)
        self.badges = FakeBadgeSettings(t.badges, t.apps)
        self._active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._active = False  # what was not committed is dropped with the staged tables
        await self.db.row_locks.release_all(self)

    async def commit(self) -> None:
        if not self._active:
            raise RuntimeError("commit() outside `async with`")
        self.db.check_available()
        self._tables.commit()
        self.commits += 1
        await self.db.row_locks.release_all(self)
