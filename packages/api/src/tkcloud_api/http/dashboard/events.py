"""The events explorer and the streamed export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, QueryParameter, SkipValidation
from litestar.response import Stream

from tkcloud_api.http.dashboard.analytics import target_from_path
from tkcloud_application.analytics.explorer import EventExplorer
from tkcloud_application.ports.explorer import EventFilters, StoredEvent
from tkcloud_domain.identity import Principal

Caller = NamedDependency[SkipValidation[Principal]]
Explorer = NamedDependency[SkipValidation[EventExplorer]]
Target = NamedDependency[SkipValidation[str]]


class EventOut(msgspec.Struct):
    event_id: str
    timestamp: datetime
    received_at: datetime
    event_type: str
    user_id: str
    session_id: str | None
    service_name: str
    service_version: str
    os: str | None
    command: str | None
    success: bool | None
    duration_ms: int | None
    exit_code: int | None
    feature: str | None
    event: Any  # the event's full JSON, unknown fields included

    @classmethod
    def of(cls, e: StoredEvent) -> EventOut:
        return cls(
            e.event_id, e.timestamp, e.received_at, e.event_type, e.user_id, e.session_id,
            e.service_name, e.service_version, e.os, e.command, e.success, e.duration_ms,
            e.exit_code, e.feature, msgspec.json.decode(e.raw),
        )  # fmt: skip


class EventPage(msgspec.Struct):
    items: list[EventOut]
    next_cursor: str | None


class EventsController(Controller):
    """Also served read-only under /api/v1/public/{slug}/events when the owner opted in."""

    path = "/api/v1/apps/{app_id:str}/events"
    tags = ["events"]
    dependencies = {"target_app": Provide(target_from_path, sync_to_thread=False)}

    @get("/", summary="Events, newest first, cursor-paginated and filterable")
    async def list_events(
        self, principal: Caller, explorer: Explorer, target_app: Target,
        limit: Annotated[int, QueryParameter(name="limit", ge=1, le=200)] = 50,
        cursor: Annotated[str | None, QueryParameter(name="cursor")] = None,
        event_type: Annotated[str | None, QueryParameter(name="event_type")] = None,
        service_version: Annotated[str | None, QueryParameter(name="service_version")] = None,
        os: Annotated[str | None, QueryParameter(name="os")] = None,
        user_id: Annotated[str | None, QueryParameter(name="user_id")] = None,
    ) -> EventPage:  # fmt: skip
        filters = EventFilters(event_type, service_version, os, user_id)
        items, next_cursor = await explorer.page(principal, target_app, limit, cursor, filters)
        return EventPage([EventOut.of(e) for e in items], next_cursor)

    @get("/{event_id:str}", summary="One event, with its full JSON")
    async def get_event(
        self, principal: Caller, explorer: Explorer, target_app: Target, event_id: FromPath[str]
    ) -> EventOut:
        return EventOut.of(await explorer.get(principal, target_app, event_id))


@get(
    "/api/v1/export/{org_id:str}/{app_id:str}/events",
    summary="Export events as csv, json (NDJSON) or parquet (Pro and above), streamed",
    tags=["events"],
)
async def export_events(
    principal: Caller,
    explorer: Explorer,
    org_id: FromPath[str],
    app_id: FromPath[str],
    export_format: Annotated[str, QueryParameter(name="format")] = "csv",
    start: Annotated[datetime | None, QueryParameter(name="from")] = None,
    end: Annotated[datetime | None, QueryParameter(name="to")] = None,
) -> Response[Any]:
    export = await explorer.export(principal, app_id, export_format, start, end, org_id=org_id)
    return Stream(
        export.chunks,
        media_type=export.media_type,
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )
