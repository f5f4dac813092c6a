"""A whole service for a test: the real container and Litestar app, a fake clock, and either
Postgres + Redis (production wiring) or SQLite + in-process caches (embedded wiring)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from dependency_injector import providers
from litestar import Litestar

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
    app: Litestar
    _clients: list[httpx.AsyncClient] = field(default_factory=list)
    _next_ip: int = 10

    def http_client(self, *, ip: str | None = None) -> httpx.AsyncClient:
        """Another client of the app (its own cookies), from its own address."""
        if ip is None:
            self._next_ip += 1
            ip = f"127.0.0.{self._next_ip}"
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        self._clients.append(client)
        return client

    async def last_link_to(self, email: str) -> str:
        """The link in the newest mail to that address, from the development outbox."""
        outbox = await settle(self.container.outbox())
        mails = await outbox.recent(limit=1, to=email.strip().lower())
        assert mails, f"no mail to {email}"
        match = re.search(r"https?://\S+", mails[0].message.text)
        assert match, mails[0].message.text
        return match.group(0)

    async def browser(self, email: str) -> httpx.AsyncClient:
        """A client signed in as `email` (by magic link), sending its CSRF token on every
        request as the dashboard would."""
        client = self.http_client()
        self.clock.advance(1)  # the outbox's newest mail is then this one, never an older link
        response = await client.post("/api/v1/auth/magic-link", json={"email": email})
        assert response.status_code == 202, response.text
        token = parse_qs(urlsplit(await self.last_link_to(email)).query)["token"][0]
        response = await client.post("/api/v1/auth/magic-link/verify", json={"token": token})
        assert response.status_code == 200, response.text
        client.headers["x-csrf-token"] = response.json()["csrf_token"]
        return client

    async def api_client(self, secret: str) -> httpx.AsyncClient:
        client = self.http_client()
        client.headers["authorization"] = f"Bearer {secret}"
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()

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
    kind: str,
    *,
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    prefix: str,
    **overrides: Any,
) -> Settings:
    common: dict[str, Any] = {
        **overrides,
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
        stack = Stack(kind, container, client, clock, await settle(container.tenancy()), app)
        try:
            yield stack
        finally:
            await stack.close()
