"""Apps, their credentials and their usage."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter, SkipValidation

from tkcloud_api.http.dashboard.pagination import Cursor, Limit, paginate
from tkcloud_api.http.dashboard.schemas import (
    AllowanceOut,
    AppOut,
    ConfirmBody,
    CreatedAppOut,
    CredentialOut,
    IssuedCredentialOut,
    NameBody,
    Page,
    PromotedOut,
    RevokedOut,
)
from tkcloud_application.dashboard.apps import AppManagement
from tkcloud_domain.identity import Principal
from tkcloud_domain.tenancy import IssuedCredential

Caller = NamedDependency[SkipValidation[Principal]]
Apps = NamedDependency[SkipValidation[AppManagement]]


def _issued(issued: IssuedCredential) -> IssuedCredentialOut:
    return IssuedCredentialOut(issued.credential.id, issued.token, issued.secret)


class OrgAppsController(Controller):
    path = "/api/v1/orgs/{org_id:str}/apps"
    tags = ["apps"]

    @get("/", summary="An org's apps")
    async def list_apps(
        self, principal: Caller, apps: Apps, state: State, org_id: FromPath[str],
        limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[AppOut]:  # fmt: skip
        listed = [AppOut.of(a, state.public_url) for a in await apps.for_org(principal, org_id)]
        items, next_cursor = paginate(listed, lambda a: a.app_id, limit, cursor)
        return Page(items, next_cursor)

    @post("/", summary="Create an app (starts in staging); credentials are shown once")
    async def create_app(
        self,
        principal: Caller,
        apps: Apps,
        state: State,
        org_id: FromPath[str],
        data: JSONBody[NameBody],
    ) -> CreatedAppOut:
        created = await apps.create(principal, org_id, data.name)
        return CreatedAppOut(AppOut.of(created.app, state.public_url), _issued(created.issued))


class AppController(Controller):
    path = "/api/v1/apps/{app_id:str}"
    tags = ["apps"]

    @get("/", summary="One app")
    async def get_app(
        self, principal: Caller, apps: Apps, state: State, app_id: FromPath[str]
    ) -> AppOut:
        return AppOut.of(await apps.get(principal, app_id), state.public_url)

    @patch("/", summary="Rename an app")
    async def rename_app(
        self,
        principal: Caller,
        apps: Apps,
        state: State,
        app_id: FromPath[str],
        data: JSONBody[NameBody],
    ) -> AppOut:
        return AppOut.of(await apps.rename(principal, app_id, data.name), state.public_url)

    @post("/promote", summary="Staging to production; deletes the staging events", status_code=200)
    async def promote(
        self,
        principal: Caller,
        apps: Apps,
        state: State,
        app_id: FromPath[str],
        data: JSONBody[ConfirmBody],
    ) -> PromotedOut:
        app, deleted = await apps.promote(principal, app_id, data.confirm)
        return PromotedOut(AppOut.of(app, state.public_url), deleted)

    @delete("/", summary="Delete an app and all its events (confirm with ?confirm=<name>)")
    async def delete_app(
        self, principal: Caller, apps: Apps, app_id: FromPath[str],
        confirm: Annotated[str, QueryParameter(name="confirm")],
    ) -> None:  # fmt: skip
        await apps.delete(principal, app_id, confirm)

    @get("/credentials", summary="The app's credentials (never their secrets)")
    async def list_credentials(
        self, principal: Caller, apps: Apps, state: State, app_id: FromPath[str],
        limit: Limit = 50, cursor: Cursor = None,
    ) -> Page[CredentialOut]:  # fmt: skip
        now = state.clock.now()
        listed = [CredentialOut.of(c, now) for c in await apps.credentials(principal, app_id)]
        items, next_cursor = paginate(listed, lambda c: c.credential_id, limit, cursor)
        return Page(items, next_cursor)

    @post(
        "/credentials/rotate",
        summary="New token + secret; old ones live for the grace period",
        status_code=200,
    )
    async def rotate(
        self, principal: Caller, apps: Apps, app_id: FromPath[str]
    ) -> IssuedCredentialOut:
        return _issued(await apps.rotate(principal, app_id))

    @post("/credentials/revoke", summary="Revoke every credential of the app now", status_code=200)
    async def revoke(self, principal: Caller, apps: Apps, app_id: FromPath[str]) -> RevokedOut:
        return RevokedOut(await apps.revoke(principal, app_id))

    @get("/usage", summary="This app's events this month against what limits it")
    async def usage(self, principal: Caller, apps: Apps, app_id: FromPath[str]) -> AllowanceOut:
        return AllowanceOut.of(await apps.app_usage(principal, app_id))

    @get("/staging-usage", summary="A staging app's events against its 1,000 a month")
    async def staging_usage(
        self, principal: Caller, apps: Apps, app_id: FromPath[str]
    ) -> AllowanceOut:
        return AllowanceOut.of(await apps.staging_usage(principal, app_id))
