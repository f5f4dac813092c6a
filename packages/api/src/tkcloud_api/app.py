"""The Litestar application: routes, dependency bridges to the container, error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.types import ControllerRouterHandler

from tkcloud_api import __version__
from tkcloud_api.container import Container, build_container, settle
from tkcloud_api.http.dashboard.analytics import AnalyticsController
from tkcloud_api.http.dashboard.apps import AppController, OrgAppsController
from tkcloud_api.http.dashboard.auth_routes import AuthController, me
from tkcloud_api.http.dashboard.billing import BillingController
from tkcloud_api.http.dashboard.events import EventsController, export_events
from tkcloud_api.http.dashboard.orgs import InviteResponseController, OrgController
from tkcloud_api.http.dashboard.principal import provide_principal
from tkcloud_api.http.dashboard.sharing import (
    PublicAnalyticsController,
    PublicEventsController,
    SharesController,
    badge,
    public_app,
)
from tkcloud_api.http.errors import EXCEPTION_HANDLERS
from tkcloud_api.http.health import health
from tkcloud_api.http.ingest import ingest
from tkcloud_api.http.json_only import require_json_body
from tkcloud_api.http.webhooks import stripe_webhook
from tkcloud_api.settings import load_settings

logger = logging.getLogger("tkcloud.app")

# What controllers receive by name (NamedDependency) -> the container provider behind it.
# All are request-independent, so each is resolved once when the app starts.
SERVICES = {
    "ingest_batch": "ingest_batch",
    "health_probes": "health_probes",
    "authentication": "authentication",
    "organisations": "organisations",
    "invitations": "invitations",
    "api_keys": "api_keys",
    "apps": "app_management",
    "clock": "clock",
    "subscriptions": "subscriptions",
    "analytics": "analytics",
    "explorer": "explorer",
    "sharing": "sharing",
}

ROUTES: list[ControllerRouterHandler] = [
    ingest,
    health,
    AuthController,
    me,
    OrgController,
    InviteResponseController,
    OrgAppsController,
    AppController,
    BillingController,
    stripe_webhook,
    AnalyticsController,
    EventsController,
    export_events,
    SharesController,
    PublicAnalyticsController,
    PublicEventsController,
    public_app,
    badge,
]


@asynccontextmanager
async def running(container: Container, state: State) -> AsyncIterator[None]:
    """Open the container's resources for the app's lifetime (its Litestar lifespan)."""
    await settle(container.init_resources())
    try:
        # The engine and Redis pool are async resources, so the container hands out awaitables.
        for name, provider in SERVICES.items():
            state[name] = await settle(getattr(container, provider)())
        settings = container.settings()
        state.public_url = settings.resolved_public_url
        state.dashboard_url = settings.resolved_dashboard_url
        state.secure_cookies = settings.secure_cookies
        retention = await settle(container.retention())
        rollups = await settle(container.rollups())
        jobs = [
            asyncio.create_task(_every(settings.rollup_job_seconds, rollups.fold_pending)),
            asyncio.create_task(
                _every(settings.billing_job_seconds, state.subscriptions.apply_due)
            ),
            asyncio.create_task(_every(settings.retention_job_seconds, retention.run)),
        ]
        try:
            yield
        finally:
            for job in jobs:
                job.cancel()
            for job in jobs:
                with contextlib.suppress(asyncio.CancelledError):
                    await job
    finally:
        await settle(container.shutdown_resources())


async def _every(seconds: float, work: Callable[[], Awaitable[object]]) -> None:
    """Run `work` every `seconds` for the app's lifetime. Every worker runs it: the work is
    idempotent. A failure (the database being away) is logged and retried next time."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:
            logger.exception("periodic job %s failed", getattr(work, "__qualname__", work))


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
    dependencies = {name: Provide(_from_state(name), sync_to_thread=False) for name in SERVICES}
    dependencies["principal"] = Provide(provide_principal)
    app = Litestar(
        route_handlers=ROUTES,
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=require_json_body,
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(title="telemetry-kit cloud", version=__version__),
    )
    app.state.container = wired
    return app


def _from_state(name: str) -> Callable[[State], Any]:
    def provide(state: State) -> Any:
        return state[name]

    return provide
