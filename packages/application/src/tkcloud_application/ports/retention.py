"""The port of the retention job: the event storage's upkeep, and deleting one app's old events a
bounded batch at a time."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol


class EventPurger(Protocol):
    async def prepare(self, now: datetime) -> list[str]:
        """Make room ahead for the events of the current month and the next ones (Postgres:
        their monthly partitions); returns what was made, by name. Idempotent."""
        ...

    async def drop_expired(
        self, cutoffs: Mapping[str, datetime | None], batch_size: int
    ) -> list[str]:
        """Drop whole stored periods (Postgres: monthly partitions) every event of which is past
        its app's retention. `cutoffs` maps every app id to the start of what the app keeps
        (None: everything), and a period holding an event of an app not in it is kept. Returns
        what was dropped, by name; a storage without such periods drops nothing."""
        ...

    async def purge(self, app_id: str, older_than: datetime, batch_size: int) -> int:
        """Delete the app's events whose timestamp is before `older_than`, at most `batch_size`
        rows per transaction, until none is left; returns how many were deleted. Each batch
        commits on its own, so a failure part way keeps the batches already done and a later
        run carries on from there."""
        ...
