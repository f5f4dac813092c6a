"""What `GET /health` asks of each dependency."""

from __future__ import annotations

from typing import Protocol


class HealthProbe(Protocol):
    @property
    def name(self) -> str:
        """The dependency's name in the health answer: "database" or "cache"."""
        ...

    async def check(self) -> None:
        """Return when the dependency answers; raise ServiceUnavailable when it does not."""
        ...
