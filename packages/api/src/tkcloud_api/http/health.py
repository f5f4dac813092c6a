"""`GET /health`: 200 when every dependency answers, 503 naming the one that does not."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.params import SkipValidation

from tkcloud_api import __version__
from tkcloud_api.http.bodies import HealthBody, encoder
from tkcloud_application.ports.health import HealthProbe
from tkcloud_domain.errors import ServiceUnavailable


@get("/health", summary="Service health", tags=["operations"])
async def health(
    health_probes: NamedDependency[SkipValidation[Sequence[HealthProbe]]],
) -> Response[bytes]:
    results = await asyncio.gather(*(p.check() for p in health_probes), return_exceptions=True)
    checks: dict[str, str] = {}
    for probe, result in zip(health_probes, results, strict=True):
        if isinstance(result, ServiceUnavailable):
            checks[probe.name] = "unavailable"
        elif isinstance(result, BaseException):
            raise result
        else:
            checks[probe.name] = "ok"
    healthy = all(v == "ok" for v in checks.values())
    body = HealthBody(status="ok" if healthy else "unavailable", version=__version__, checks=checks)
    headers = {} if healthy else {"Retry-After": "5"}
    return Response(
        encoder.encode(body),
        status_code=200 if healthy else 503,
        media_type="application/json",
        headers=headers,
    )
