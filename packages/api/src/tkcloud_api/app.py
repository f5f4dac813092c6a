"""The Litestar application: routes, dependency bridges to the container, error mapping."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig

from tkcloud_api import __version__
from tkcloud_api.container import Container, build_container, settle
from tkcloud_api.http.errors import EXCEPTION_HANDLERS
from tkcloud_api.http.health import health
from tkcloud_api.http.ingest import ingest
from tkcloud_api.settings import load_settings


@asynccontextmanager
async def running(container: Container, state: State) -> AsyncIterator[None]:
    """Open the container's resources for the app's lifetime (its Litestar lifespan)."""
    await settle(container.init_resources())
    try:
        # The engine and Redis pool are async resources, so the container hands out awaitables;
        # the request-independent services are resolved once here, not per request.
        state.ingest_batch = await settle(container.ingest_batch())
        state.health_probes = await settle(container.health_probes())
        yield
    finally:
        await settle(container.shutdown_resources())


def create_app(container: Container | None = None) -> Litestar:
    """Build the app around a container; with none, from `TKCLOUD_*` settings (uvicorn's
    factory entry point: `tkcloud_api.app:create_app`)."""
    if container is None:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level.upper())
        container = build_container(settings)
    wired = container

    def lifespan(app: Litestar) -> AbstractAsyncContextManager[None]:
        return running(wired, app.state)

    # Litestar validates handler signatures, so the container is bridged with small Provide
    # functions rather than @inject on handlers.
    def provide_ingest_batch(state: State) -> Any:
        return state.ingest_batch

    def provide_health_probes(state: State) -> Any:
        return state.health_probes

    app = Litestar(
        route_handlers=[ingest, health],
        dependencies={
            "ingest_batch": Provide(provide_ingest_batch, sync_to_thread=False),
            "health_probes": Provide(provide_health_probes, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="telemetry-kit cloud", version=__version__),
    )
    app.state.container = wired
    return app
