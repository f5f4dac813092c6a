"""Ports of the events explorer and the export: one app's stored events, row by row.

Both are read with keyset pagination on (timestamp, event_id) rather than OFFSET: a page costs
one index range scan however deep the reader goes, and events inserted meanwhile never shift
the pages already served (no duplicates, no gaps among the events that were there).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

# Where a page starts: the (timestamp, event_id) of the last event already served.
Position = tuple[datetime, str]


@dataclass(frozen=True, slots=True)
class EventFilters:
    """Exact-match filters of the explorer; None matches everything."""

    event_type: str | None = None
    service_version: str | None = None
    os: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event: the flat columns the store extracted, and the event's JSON."""

    event_id: str
    timestamp: datetime
    received_at: datetime
    event_type: str
    user_id: str
    session_id: str | None
    service_name: str
    service_version: str
    os: str | None
    arch: str | None
    ci: bool | None
    shell: str | None
    sdk_version: str | None
    command: str | None
    success: bool | None
    duration_ms: int | None
    exit_code: int | None
    feature: str | None
    # The event's JSON as text, never decoded on the read path: exports pass it through as is.
    # On SQLite it is the text as sent; Postgres (jsonb) gives back an equivalent normalised text.
    raw: str


class EventReader(Protocol):
    async def page(
        self,
        app_id: str,
        *,
        before: Position | None,
        limit: int,
        filters: EventFilters,
    ) -> list[StoredEvent]:
        """At most `limit` events of the app matching `filters`, newest first by (timestamp,
        event_id), strictly after `before` in that order (from the newest if None)."""
        ...

    async def get(self, app_id: str, event_id: str) -> StoredEvent | None:
        """The app's event with that id (a well-formed UUID), or None: another app's event is
        None too."""
        ...

    def stream(
        self, app_id: str, start: datetime, end: datetime, *, batch_size: int
    ) -> AsyncIterator[list[StoredEvent]]:
        """Every event of the app with start <= timestamp < end, oldest first by (timestamp,
        event_id), in non-empty batches of at most `batch_size`: memory stays bounded by one
        batch whatever the number of events."""
        ...


class ParquetEncoder(Protocol):
    """Turns batches of events into one Parquet file, a chunk of bytes per batch (a row group
    each), so the file never has to be held whole. A port because the core may not import
    pyarrow."""

    def encode(self, batches: AsyncIterator[list[StoredEvent]]) -> AsyncIterator[bytes]: ...
