"""Shared fixtures: every test run owns its data.

A run creates its own Postgres database (dropped at the end) and uses its own Redis key prefix
(deleted at the end), so runs never see each other's state or what a previous run left behind.
Postgres or Redis being unreachable is an error, never a skip: CI must not pass without them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest
import redis.asyncio as redis_asyncio

if TYPE_CHECKING:
    from tests.support.stack import Stack

POSTGRES_ADMIN_DSN = os.environ.get(
    "TKCLOUD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_TEST_URL = os.environ.get("TKCLOUD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

RUN_ID = secrets.token_hex(4)


def _sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def _admin_execute(sql: str) -> None:
    try:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"Postgres is unreachable at {POSTGRES_ADMIN_DSN} ({exc}); start it (see README)"
        ) from exc
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_postgres_database(label: str) -> str:
    """Create a fresh, empty database and return its SQLAlchemy URL."""
    name = f"tkc_{RUN_ID}_{label}_{secrets.token_hex(3)}"
    asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
    base, _, _ = POSTGRES_ADMIN_DSN.rpartition("/")
    return _sqlalchemy_url(f"{base}/{name}")


def drop_postgres_database(url: str) -> None:
    name = url.rpartition("/")[2]
    asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated Postgres database of this run (alembic upgrade head)."""
    from tkcloud_adapters.sql.migrate import upgrade

    url = create_postgres_database("main")
    try:
        upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


@contextmanager
def own_database(backend: str, folder: Path, label: str, *, migrated: bool = True) -> Iterator[str]:
    """A database of the caller's alone: on "sqlite" a file in `folder`, on "postgres" one
    created here and dropped afterwards; migrated to head unless `migrated` is False."""
    from tkcloud_adapters.sql.migrate import upgrade

    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / f'{label}.db'}"
        if migrated:
            upgrade(url)
        yield url
        return
    url = create_postgres_database(label)
    try:
        if migrated:
            upgrade(url)
        yield url
    finally:
        drop_postgres_database(url)


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A migrated Postgres database for one test alone, dropped afterwards."""
    from tkcloud_adapters.sql.migrate import upgrade

    url = await asyncio.to_thread(create_postgres_database, "fresh")
    try:
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await asyncio.to_thread(drop_postgres_database, url)


@pytest.fixture
async def fresh_postgres_url() -> AsyncIterator[str]:
    """For tests with fixed ids or emails, which would collide in the run's shared database."""
    async with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def migratable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of the test's own, on each backend: the test migrates it down and
    up."""
    with own_database(request.param, tmp_path, "migratable") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_TEST_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix no other test or run uses; its keys are deleted afterwards."""
    prefix = f"tkt:{RUN_ID}:{secrets.token_hex(4)}:"
    client = redis_asyncio.Redis.from_url(redis_url, socket_connect_timeout=3)
    try:
        await client.ping()
    except (OSError, redis_asyncio.RedisError) as exc:
        await client.aclose()
        raise RuntimeError(
            f"Redis is unreachable at {redis_url} ({exc}); start it (see README)"
        ) from exc
    try:
        yield prefix
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(params=["postgres", "embedded"])
async def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
) -> AsyncIterator[Stack]:
    """The whole service, once with Postgres + Redis and once embedded (SQLite, in-process)."""
    from tests.support.stack import running_stack, settings_for

    kind: str = request.param
    async with AsyncExitStack() as resources:
        if kind == "postgres" and request.node.get_closest_marker("fresh_database"):
            postgres_url = await resources.enter_async_context(fresh_database())
        settings = settings_for(
            kind,
            tmp_path=tmp_path,
            postgres_url=postgres_url,
            redis_url=redis_url,
            prefix=redis_prefix,
        )
        yield await resources.enter_async_context(running_stack(settings, kind))
