"""Alembic environment: the service's own async engine (the same PRAGMAs and drivers as at run
time), driven through run_sync.

The URL comes from, in order: `config.attributes["url"]` (tkcloud_adapters.sql.migrate), the
`sqlalchemy.url` option, the `TKCLOUD_DATABASE_URL` environment variable.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, event

from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.schema import include_name, metadata

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("TKCLOUD_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: set TKCLOUD_DATABASE_URL")
    return str(url)


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        include_name=include_name,
        # Batch mode lets later migrations ALTER tables on SQLite (by recreating them).
        render_as_batch=True,
        # SQLite's DDL is transactional too once the engine emits BEGIN itself (engine.py): a
        # failed upgrade leaves the database as it was, on both backends.
        transactional_ddl=True,
        **kwargs,
    )


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    # A batch migration drops and recreates tables; with foreign keys on, SQLite would delete or
    # refuse the rows that reference them. Checked again after the migration.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


def _run_migrations(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
        if connection.dialect.name == "sqlite":
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"migration left dangling foreign keys: {broken[:5]}")


async def _run_online() -> None:
    # No statement timeout: a migration that rewrites a table takes as long as its rows do.
    engine = create_engine(_database_url(), statement_seconds=None)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _foreign_keys_off)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=_database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
