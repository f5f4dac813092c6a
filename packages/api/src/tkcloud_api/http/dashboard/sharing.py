"""Public share links, their read-only views, and README badges."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter, SkipValidation

from tkcloud_api.http.dashboard.analytics import AnalyticsController
from tkcloud_api.http.dashboard.events import EventsController
from tkcloud_application.sharing.links import Sharing
from tkcloud_domain.identity import SharePrincipal
from tkcloud_domain.sharing import BadgeMetric, BadgeStyle, ShareLink, render_badge_svg

Caller = NamedDependency[SkipValidation[Any]]
Shares = NamedDependency[SkipValidation[Sharing]]
PUBLIC_CACHE = "public, max-age=60"
BADGE_CACHE = "public, max-age=300"


class ShareRequest(msgspec.Struct):
    expires_at: datetime | None = None
    include_events: bool = False  # also show raw events to anyone with the link


class ShareOut(msgspec.Struct):
    share_id: str
    url: str
    slug: str
    include_events: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, link: ShareLink, public_url: str) -> ShareOut:
        return cls(
            link.id, f"{public_url}/api/v1/public/{link.slug}", link.slug, link.include_events,
            link.created_at, link.expires_at, link.revoked_at,
        )  # fmt: skip


class BadgesBody(msgspec.Struct):
    enabled: bool


class SharesController(Controller):
    path = "/api/v1/apps/{app_id:str}"
    tags = ["sharing"]

    @get("/shares", summary="The app's share links (apps:write)")
    async def list_shares(
        self, principal: Caller, sharing: Shares, state: State, app_id: FromPath[str]
    ) -> list[ShareOut]:
        return [ShareOut.of(s, state.public_url) for s in await sharing.list(principal, app_id)]

    @post("/shares", summary="Create a public, read-only link to the app's analytics")
    async def create_share(
        self, principal: Caller, sharing: Shares, state: State, app_id: FromPath[str],
        data: JSONBody[ShareRequest],
    ) -> ShareOut:  # fmt: skip
        link = await sharing.create(principal, app_id, data.expires_at, data.include_events)
        return ShareOut.of(link, state.public_url)

    @delete("/shares/{share_id:str}", summary="Revoke a share link")
    async def revoke_share(
        self, principal: Caller, sharing: Shares, app_id: FromPath[str], share_id: FromPath[str]
    ) -> None:
        await sharing.revoke(principal, app_id, share_id)

    @get("/badges", summary="Whether the app's badges are public")
    async def get_badges(
        self, principal: Caller, sharing: Shares, app_id: FromPath[str]
    ) -> BadgesBody:
        return BadgesBody(await sharing.badges_enabled(principal, app_id))

    @put("/badges", summary="Turn the app's public badges on or off")
    async def set_badges(
        self, principal: Caller, sharing: Shares, app_id: FromPath[str],
        data: JSONBody[BadgesBody],
    ) -> BadgesBody:  # fmt: skip
        await sharing.set_badges(principal, app_id, data.enabled)
        return data


# --- the public side: no sign-in, one app, read-only -------------------------------------------


async def share_principal(slug: FromPath[str], sharing: Shares) -> SharePrincipal:
    link, app = await sharing.resolve(slug)
    return SharePrincipal(app_id=app.id, include_events=link.include_events)


def target_from_share(principal: NamedDependency[SkipValidation[SharePrincipal]]) -> str:
    return principal.app_id


_PUBLIC: dict[str, Provide | Callable[..., Any]] = {
    "principal": Provide(share_principal),
    "target_app": Provide(target_from_share, sync_to_thread=False),
}


class PublicAnalyticsController(AnalyticsController):
    path = "/api/v1/public/{slug:str}/analytics"
    tags = ["public"]
    dependencies = {**AnalyticsController.dependencies, **_PUBLIC}
    response_headers = {"Cache-Control": PUBLIC_CACHE}


class PublicEventsController(EventsController):
    path = "/api/v1/public/{slug:str}/events"
    tags = ["public"]
    dependencies = _PUBLIC
    response_headers = {"Cache-Control": PUBLIC_CACHE}


class PublicAppOut(msgspec.Struct):
    app_name: str
    environment: str
    include_events: bool


@get("/api/v1/public/{slug:str}", summary="What a share link shows", tags=["public"])
async def public_app(sharing: Shares, slug: FromPath[str]) -> Response[PublicAppOut]:
    link, app = await sharing.resolve(slug)
    body = PublicAppOut(app.name, app.environment.value, link.include_events)
    return Response(body, headers={"Cache-Control": PUBLIC_CACHE})


class ShieldsOut(msgspec.Struct, rename="camel"):
    schema_version: int
    label: str
    message: str
    color: str


@get(
    "/api/v1/badge/{org_id:str}/{app_id:str}/{metric:str}",
    summary="A badge: shields.io endpoint JSON, or SVG with `.svg` (?style=…)",
    description="style: flat (default), flat-square or for-the-badge.",
    tags=["public"],
)
async def badge(
    sharing: Shares,
    org_id: FromPath[str],
    app_id: FromPath[str],
    metric: FromPath[str],
    style: Annotated[str | None, QueryParameter(name="style")] = None,
) -> Response[Any]:
    svg = metric.endswith(".svg")
    found = await sharing.badge(org_id, app_id, BadgeMetric.parse(metric.removesuffix(".svg")))
    headers = {"Cache-Control": BADGE_CACHE}
    if svg:
        image = render_badge_svg(found.label, found.message, found.color, BadgeStyle.parse(style))
        return Response(image.encode(), media_type="image/svg+xml", headers=headers)
    return Response(ShieldsOut(1, found.label, found.message, found.color), headers=headers)
