"""The one place where database driver errors become domain errors.

Connection-level failures (unreachable server, dropped connection, pool exhausted, timeouts,
a locked SQLite file, a deadlock) become `ServiceUnavailable`, which the client retries. Unique
violations become `Conflict` where a repository documents it. Anything else is a bug and
propagates unchanged: it must never be disguised as a 503.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from tkcloud_domain.errors import Conflict, ServiceUnavailable

DEPENDENCY = "database"

# SQLSTATE classes of transient Postgres failures: 08 connection exception, 40 transaction
# rollback (deadlock, serialization), 53 insufficient resources, 57 operator intervention
# (shutdown, query cancelled by command_timeout), 58 system error (I/O).
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_UNIQUE_VIOLATION_SQLSTATE = "23505"

# Primary SQLite result codes of an unavailable database: BUSY, LOCKED, NOMEM, READONLY, IOERR,
# FULL, CANTOPEN, PROTOCOL. SQLITE_ERROR (a syntax error, a missing table) is a bug.
_TRANSIENT_SQLITE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_SQLITE_UNIQUE_CODES = frozenset({1555, 2067})  # CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE


@contextmanager
def database_errors(conflict: str | None = None) -> Iterator[None]:
    """Translate driver errors raised inside the block (awaits included).

    `conflict`: the message of the `Conflict` raised for a unique violation; without it a
    unique violation is a bug and propagates.
    """
    try:
        yield
    except sa_exc.IntegrityError as exc:
        if conflict is not None and _is_unique_violation(exc):
            raise Conflict(conflict) from exc
        raise
    except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as exc:
        if _is_unavailable(exc):
            raise ServiceUnavailable(DEPENDENCY) from exc
        raise


def _is_unavailable(exc: BaseException) -> bool:
    # OSError covers refused connections, ConnectionError and (since 3.11) asyncio.TimeoutError;
    # sqlalchemy's TimeoutError is the pool having no connection to give.
    if isinstance(exc, OSError | sa_exc.TimeoutError | sa_exc.InterfaceError):
        return True
    assert isinstance(exc, sa_exc.DBAPIError)
    if exc.connection_invalidated:
        return True
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in _TRANSIENT_SQLITE_CODES
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return isinstance(exc, sa_exc.OperationalError)


def _is_unique_violation(exc: sa_exc.IntegrityError) -> bool:
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int):
        return sqlite_code in _SQLITE_UNIQUE_CODES
    return getattr(exc.orig, "sqlstate", None) == _UNIQUE_VIOLATION_SQLSTATE
