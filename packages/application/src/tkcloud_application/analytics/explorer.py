"""The events explorer (one app's events, newest first, one page at a time) and the export of an
app's events as CSV, JSON Lines or Parquet, streamed so that memory stays bounded whatever the
number of events.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from tkcloud_application.identity.access import Access
from tkcloud_application.ports.explorer import (
    EventFilters,
    EventReader,
    ParquetEncoder,
    Position,
    StoredEvent,
)
from tkcloud_application.ports.system import Clock
from tkcloud_application.ports.tenancy import TenancyUnitOfWork
from tkcloud_domain.errors import Forbidden, NotFound, ValidationFailed
from tkcloud_domain.identity import Action, Principal
from tkcloud_domain.plans import Plan

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
EXPORT_BATCH_SIZE = 1_000
DEFAULT_EXPORT_RANGE = timedelta(days=30)
MAX_EXPORT_RANGE = timedelta(days=731)  # two years, a leap day included
PARQUET_PLANS = frozenset({Plan.PRO, Plan.BUSINESS, Plan.ENTERPRISE})

# The CSV and Parquet columns: StoredEvent's fields, raw (the event's JSON) last.
EXPORT_COLUMNS = tuple(f.name for f in fields(StoredEvent))


class ExportFormat(StrEnum):
    CSV = "csv"
    # JSON Lines (NDJSON): one event's JSON per line, not one JSON array, so that a consumer can
    # process the file as it arrives and neither side ever holds the whole set.
    JSON = "json"
    PARQUET = "parquet"


_MEDIA_TYPES = {
    ExportFormat.CSV: "text/csv",  # the HTTP layer adds "; charset=utf-8" to text types
    ExportFormat.JSON: "application/x-ndjson",
    ExportFormat.PARQUET: "application/vnd.apache.parquet",
}
_EXTENSIONS = {
    ExportFormat.CSV: "csv",
    ExportFormat.JSON: "ndjson",
    ExportFormat.PARQUET: "parquet",
}


@dataclass(frozen=True, slots=True)
class EventExport:
    """A validated, authorised export, not started yet: iterating it runs the queries, so that
    every refusal happens before the first byte (and the HTTP status) is sent. Single use: the
    chunks are a generator, iterated once."""

    format: ExportFormat
    media_type: str
    filename: str
    start: datetime
    end: datetime
    chunks: AsyncIterator[bytes]

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks


class EventExplorer:
    def __init__(
        self,
        access: Access,
        reader: EventReader,
        parquet: ParquetEncoder,
        uow: Callable[[], TenancyUnitOfWork],
        clock: Clock,
        *,
        batch_size: int = EXPORT_BATCH_SIZE,
    ) -> None:
        self._access = access
        self._reader = reader
        self._parquet = parquet
        self._uow = uow
        self._clock = clock
        self._batch_size = batch_size

    async def page(
        self,
        principal: Principal,
        app_id: str,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        filters: EventFilters | None = None,
    ) -> tuple[list[StoredEvent], str | None]:
        """Newest first; `next_cursor` is None on the last page."""
        await self._access.require_app(principal, app_id, Action.EVENTS_READ)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValidationFailed(
                f"limit: expected 1 to {MAX_PAGE_SIZE}", details={"field": "limit"}
            )
        before = decode_cursor(cursor) if cursor else None
        # One more than asked tells whether another page exists without a count.
        found = await self._reader.page(
            app_id, before=before, limit=limit + 1, filters=filters or EventFilters()
        )
        items = found[:limit]
        next_cursor = encode_cursor(items[-1]) if len(found) > limit else None
        return items, next_cursor

    async def get(self, principal: Principal, app_id: str, event_id: str) -> StoredEvent:
        await self._access.require_app(principal, app_id, Action.EVENTS_READ)
        try:
            canonical = str(uuid.UUID(event_id))
        except ValueError:
            raise NotFound(f"No event {event_id}") from None
        event = await self._reader.get(app_id, canonical)
        if event is None:
            raise NotFound(f"No event {event_id}")
        return event

    async def export(
        self,
        principal: Principal,
        app_id: str,
        fmt: str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        org_id: str | None = None,
    ) -> EventExport:
        """The app's events with start <= timestamp < end, oldest first. `end` defaults to now,
        `start` to 30 days before `end`; at most two years."""
        app = await self._access.require_app(principal, app_id, Action.EVENTS_READ)
        if org_id is not None and app.org_id != org_id:
            raise NotFound(f"No app {app_id}")  # the export URL names both: they must agree
        try:
            export_format = ExportFormat(fmt)
        except ValueError:
            expected = ", ".join(f.value for f in ExportFormat)
            raise ValidationFailed(
                f"format: expected one of {expected}", details={"field": "format"}
            ) from None
        start, end = self._range(start, end)
        if export_format is ExportFormat.PARQUET:
            await self._require_parquet_plan(app.org_id)

        batches = self._reader.stream(app_id, start, end, batch_size=self._batch_size)
        if export_format is ExportFormat.CSV:
            chunks = _csv_chunks(batches)
        elif export_format is ExportFormat.JSON:
            chunks = _ndjson_chunks(batches)
        else:
            chunks = self._parquet.encode(batches)
        stamp = "%Y%m%dT%H%M%SZ"
        return EventExport(
            format=export_format,
            media_type=_MEDIA_TYPES[export_format],
            filename=f"events-{app_id}-{start:{stamp}}-{end:{stamp}}.{_EXTENSIONS[export_format]}",
            start=start,
            end=end,
            chunks=chunks,
        )

    def _range(self, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
        for name, value in (("from", start), ("to", end)):
            if value is not None and value.tzinfo is None:
                raise ValidationFailed(
                    f"{name}: give a time zone (RFC 3339)", details={"field": name}
                )
        end = (end or self._clock.now()).astimezone(UTC)
        start = (start or end - DEFAULT_EXPORT_RANGE).astimezone(UTC)
        if not start < end:
            raise ValidationFailed("from: must be before to", details={"field": "from"})
        if end - start > MAX_EXPORT_RANGE:
            raise ValidationFailed("from/to: at most two years apart", details={"field": "from"})
        return start, end

    async def _require_parquet_plan(self, org_id: str) -> None:
        async with self._uow() as uow:
            org = await uow.orgs.get(org_id)
        if org is None:  # the app's org vanished since the access check: as if never there
            raise NotFound(f"No org {org_id}")
        if org.plan not in PARQUET_PLANS:
            raise Forbidden(
                f"Parquet export needs the Pro plan or above; this org is on the "
                f"{org.plan.value.capitalize()} plan. CSV and JSON exports are available.",
                details={"plan": org.plan.value, "format": ExportFormat.PARQUET.value},
            )


# --- cursors ---------------------------------------------------------------------------------
# Opaque to clients: the position of the last event served, "<RFC 3339 timestamp>|<event id>"
# in URL-safe base64 without padding.


def encode_cursor(event: StoredEvent) -> str:
    text = f"{event.timestamp.astimezone(UTC).isoformat()}|{event.event_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, event_id = text.partition("|")
        timestamp = datetime.fromisoformat(stamp)
        if timestamp.tzinfo is None:
            raise ValueError("naive timestamp")
        return timestamp.astimezone(UTC), str(uuid.UUID(event_id))
    except (binascii.Error, UnicodeError, ValueError):
        raise ValidationFailed(
            "cursor: not a cursor this API gave", details={"field": "cursor"}
        ) from None


# --- formats ---------------------------------------------------------------------------------


async def _csv_chunks(batches: AsyncIterator[list[StoredEvent]]) -> AsyncIterator[bytes]:
    """RFC 4180 CSV: a header, then a row per event; one chunk per batch."""
    yield _csv_rows([EXPORT_COLUMNS])
    async for batch in batches:
        yield _csv_rows([[_csv_cell(getattr(e, name)) for name in EXPORT_COLUMNS] for e in batch])


def _csv_rows(rows: list[list[str]] | list[tuple[str, ...]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode()


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_time(value)
    return str(value)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, as every export writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _ndjson_chunks(batches: AsyncIterator[list[StoredEvent]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        yield "".join(_one_line(e.raw) + "\n" for e in batch).encode()


def _one_line(raw: str) -> str:
    # The JSON as sent may have been pretty-printed: line breaks can only be whitespace between
    # tokens (inside strings they are escaped), so re-encoding compactly removes them. Rare, so
    # the common case passes the text through untouched.
    if "\n" in raw or "\r" in raw:
        return json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)
    return raw
