"""The port of the retention job: deleting one app's old events, a bounded batch at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class EventPurger(Protocol):
    async def purge(self, app_id: str, older_than: datetime, batch_size: int) -> int:
        """Delete the app's events whose timestamp is before `older_than`, at most `batch_size`
        rows per transaction, until none is left; returns how many were deleted. Each batch
        commits on its own, so a failure part way keeps the batches already done and a later
        run carries on from there."""
        ...
