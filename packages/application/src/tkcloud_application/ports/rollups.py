"""What keeps the analytics rollups: folding stored batches into them, and rebuilding them."""

from __future__ import annotations

from typing import Protocol


class RollupMaintainer(Protocol):
    async def catch_up(
        self, app_id: str | None = None, max_batches: int | None = None, wait: float | None = None
    ) -> int:
        """Fold the stored batches not yet in the rollups (one app's, or all), at most
        `max_batches`, waiting at most `wait` seconds for a fold in progress elsewhere (None:
        as long as it takes). Returns the batches folded."""
        ...

    async def rebuild(self, app_id: str) -> int:
        """Recompute one app's rollups from its stored events; returns the events read."""
        ...
