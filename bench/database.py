"""The Postgres database a benchmark run owns: created on the admin DSN's server, dropped at the
end whatever happens."""

from __future__ import annotations

import asyncio
import secrets


class Postgres:
    def __init__(self, admin_dsn: str, prefix: str = "bench") -> None:
        self.admin_dsn = admin_dsn
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        base, _, _ = admin_dsn.rpartition("/")
        self.url = f"{base}/{self.name}"
        self.created = False

    def create(self) -> None:
        asyncio.run(_admin_execute(self.admin_dsn, f'CREATE DATABASE "{self.name}"'))
        self.created = True

    def drop(self) -> None:
        if self.created:
            sql = f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'
            asyncio.run(_admin_execute(self.admin_dsn, sql))
            self.created = False

    def count_events(self, app_id: str) -> int:
        async def count() -> int:
            import asyncpg

            conn = await asyncpg.connect(self.url, timeout=5)
            try:
                value = await conn.fetchval("SELECT count(*) FROM events WHERE app_id = $1", app_id)
            finally:
                await conn.close()
            return int(value)

        return asyncio.run(count())


async def _admin_execute(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
