"""Async engines for Postgres (asyncpg) and SQLite (aiosqlite), configured for this service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Plain scheme names an operator may write, mapped to the async drivers this service uses.
_ASYNC_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}

_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)


def create_engine(url: str, statement_seconds: float | None = 10) -> AsyncEngine:
    """An engine for `postgresql+asyncpg://…` or `sqlite+aiosqlite:///path` (plain `postgresql://`
    and `sqlite:///` are accepted and given the async driver). On Postgres a statement that takes
    longer than `statement_seconds` fails (the request answers 503); None: no limit (migrations,
    whose statements take as long as the data they rewrite)."""
    parsed = make_url(url)
    parsed = parsed.set(drivername=_ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername))
    if parsed.drivername == "postgresql+asyncpg":
        return _postgres_engine(parsed, statement_seconds)
    if parsed.drivername == "sqlite+aiosqlite":
        return _sqlite_engine(parsed)
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _postgres_engine(url: URL, statement_seconds: float | None) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        # Waiting longer for a pooled connection only delays the 503 the client will retry.
        pool_timeout=5,
        pool_pre_ping=True,
        pool_recycle=1800,
        # Fail fast when the server is unreachable or stuck: the request answers 503.
        connect_args={"timeout": 3, "command_timeout": statement_seconds},
    )


def _sqlite_engine(url: URL) -> AsyncEngine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url)
    event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
    return engine


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # The sqlite3 driver starts transactions lazily (only before DML) and breaks SAVEPOINT;
    # turning its handling off and emitting BEGIN ourselves gives real transactions.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    # `sqlite_begin_immediate`: take the write lock at BEGIN (a transaction that reads and
    # then writes would otherwise fail when another writer commits in between).
    immediate = connection.get_execution_options().get("sqlite_begin_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
