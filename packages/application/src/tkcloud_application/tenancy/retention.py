"""The retention job: every app's events older than its retention are deleted.

A production app keeps its org's plan retention (Free 90 days, Pro 365, Business 730, Enterprise
as agreed, or forever); a staging app keeps 30 days whatever the plan. Age is the event's own
timestamp, the one the explorer, the analytics and the export filter on. The job only reads the
tenancy (one short transaction); the deletes go through the `EventPurger` in small batches, so
that no run holds a long transaction or a lock on the hot path's table.

Each run also keeps the storage ready: it first makes room for the coming months (Postgres
partitions), then drops whole months no app keeps any event of (cheaper than deleting their rows
one by one), then deletes what is left past each app's retention in batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from tkcloud_application.ports.retention import EventPurger
from tkcloud_application.ports.system import Clock
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.plans import STAGING_RETENTION_DAYS
from tkcloud_domain.tenancy import App, Environment, Org

PURGE_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Purge:
    """What one run did to one app: the events before `older_than` are gone, `deleted` of them
    by this run."""

    org_id: str
    app_id: str
    environment: Environment
    retention_days: int
    older_than: datetime
    deleted: int


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """What one run did: storage made ahead and dropped (by name), and one `Purge` per app with
    a retention."""

    prepared: list[str]
    dropped: list[str]
    purges: list[Purge]


def retention_days(org: Org, app: App) -> int | None:
    """How many days an app's events are kept; None: forever."""
    if app.environment is Environment.STAGING:
        return STAGING_RETENTION_DAYS
    return org.limits.retention_days


class RetentionJob:
    def __init__(
        self,
        uow: Callable[[], TenancyUnitOfWork],
        store: EventPurger,
        clock: Clock,
        *,
        batch_size: int = PURGE_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._uow = uow
        self._store = store
        self._clock = clock
        self._batch_size = batch_size

    async def run(self, now: datetime | None = None) -> RetentionRun:
        """Prepare the storage, drop what no app keeps, purge every app with a retention; one
        `Purge` per such app (deleted may be 0), none for the apps kept forever. Idempotent: a
        run that fails part way is finished by the next."""
        now = now or self._clock.now()
        # First: the coming months must have their place even when a purge below fails.
        prepared = await self._store.prepare(now)
        async with self._uow() as uow:  # read only: leaving without commit rolls back
            tenants = [
                (org, await uow.apps.list_for_org(org.id)) for org in await uow.orgs.list_all()
            ]
        retained = [(org, app, retention_days(org, app)) for org, apps in tenants for app in apps]
        cutoffs = {
            app.id: None if days is None else now - timedelta(days=days)
            for _, app, days in retained
        }
        dropped = await self._store.drop_expired(cutoffs, self._batch_size)
        purges = []
        for org, app, days in retained:
            older_than = cutoffs[app.id]
            if days is None or older_than is None:
                continue
            deleted = await self._store.purge(app.id, older_than, self._batch_size)
            purges.append(Purge(org.id, app.id, app.environment, days, older_than, deleted))
        return RetentionRun(prepared, dropped, purges)
