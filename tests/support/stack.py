"""A whole service for a test: the real container and Litestar app, a fake clock, and either
Postgres + Redis (production wiring) or SQLite + in-process caches (embedded wiring)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from dependency_injector import providers

from tests.fakes.system import FakeClock
from tests.support.sdk import SignedRequest
from tkcloud_adapters.crypto import generate_key
from tkcloud_api.app import create_app, running
from tkcloud_api.container import Container, build_container, settle
from tkcloud_api.settings import Settings
from tkcloud_application.tenancy.operations import CreatedApp, TenancyOperations
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Environment, Org


@dataclass
class Stack:
    kind: str
    container: Container
    client: httpx.AsyncClient
    clock: FakeClock

    tenancy: TenancyOperations

    async def new_app(
        self,
        *,
        plan: Plan = Plan.FREE,
        environment: Environment = Environment.PRODUCTION,
        org_id: str | None = None,
        app_id: str | None = None,
        secret: str | None = None,
    ) -> tuple[Org, CreatedApp]:
        org = await self.tenancy.create_org("Test org", plan, org_id=org_id)
        created = await self.tenancy.create_app(
            org.id, "test-app", environment, app_id=app_id, secret=secret
        )
        return org, created

    async def send(self, request: SignedRequest) -> httpx.Response:
        return await self.client.post(request.path, content=request.body, headers=request.headers)


def settings_for(
    kind: str, *, tmp_path: Path, postgres_url: str, redis_url: str, prefix: str
) -> Settings:
    common = {
        "secret_key": generate_key(),
        "app_cache_seconds": 0.0,  # tests change plans and credentials between requests
        "auto_migrate": False,
        "data_dir": str(tmp_path),
    }
    if kind == "postgres":
        return Settings(
            database_url=postgres_url, redis_url=redis_url, redis_prefix=prefix, **common
        )  # type: ignore[arg-type]
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tkcloud.db'}", **common)  # type: ignore[arg-type]


@asynccontextmanager
async def running_stack(settings: Settings, kind: str) -> AsyncIterator[Stack]:
    container = build_container(settings)
    clock = FakeClock()
    container.clock.override(providers.Object(clock))
    if kind != "postgres":
        await asyncio.to_thread(container.migrate)
    app = create_app(container)
    # Same event loop as the test (Litestar's AsyncTestClient runs the app on another one, and
    # the test shares the app's engine and pools).
    transport = httpx.ASGITransport(app=app)
    async with (
        running(container, app.state),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield Stack(kind, container, client, clock, await settle(container.tenancy()))
