"""Run the alembic migrations programmatically (the CLI's `migrate` and the tests use this)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR_ENV = "TKCLOUD_MIGRATIONS_DIR"


def migrations_dir() -> Path:
    """`$TKCLOUD_MIGRATIONS_DIR`, else the repository's `migrations/` (this file lives in
    <repo>/packages/adapters/src/tkcloud_adapters/sql/)."""
    configured = os.environ.get(MIGRATIONS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[5] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Passed as an attribute, not an option: the ini parser would interpolate a `%` in a password.
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at `url` up to `revision`. Blocking; safe to call from any thread."""
    _run_outside_event_loop(lambda: command.upgrade(alembic_config(url), revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`base` drops everything)."""
    _run_outside_event_loop(lambda: command.downgrade(alembic_config(url), revision))


def _run_outside_event_loop(run: Callable[[], None]) -> None:
    # env.py drives the async engine with asyncio.run(), which refuses to start inside a running
    # loop: called from async code, the migration runs (and this call blocks) in a fresh thread.
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        run()
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result()
