"""Keeping the analytics rollups: the background fold and the operator's rebuild."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tkcloud_application.ports.rollups import RollupMaintainer
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.errors import NotFound


@dataclass(frozen=True, slots=True)
class Rebuilt:
    org_id: str
    app_id: str
    events: int


class Rollups:
    def __init__(self, uow: Callable[[], TenancyUnitOfWork], maintainer: RollupMaintainer) -> None:
        self._uow = uow
        self._maintainer = maintainer

    async def fold_pending(self) -> int:
        """The background job: fold what is queued, unless another process is folding (it
        will fold it, or the next run will)."""
        return await self._maintainer.catch_up(wait=0)

    async def rebuild(self, org_id: str | None = None, app_id: str | None = None) -> list[Rebuilt]:
        """Rebuild the rollups of one app, one org's apps, or every app."""
        async with self._uow() as uow:  # read only: leaving without commit rolls back
            if app_id is not None:
                app = await uow.apps.get(app_id)
                if app is None or (org_id is not None and app.org_id != org_id):
                    raise NotFound(f"No app {app_id}" + (f" in org {org_id}" if org_id else ""))
                apps = [app]
            elif org_id is not None:
                if await uow.orgs.get(org_id) is None:
                    raise NotFound(f"No org {org_id}")
                apps = await uow.apps.list_for_org(org_id)
            else:
                apps = [
                    a
                    for org in await uow.orgs.list_all()
                    for a in await uow.apps.list_for_org(org.id)
                ]
        return [Rebuilt(a.org_id, a.id, await self._maintainer.rebuild(a.id)) for a in apps]
