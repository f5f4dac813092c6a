"""SQL storage: Postgres (asyncpg) in production, SQLite (aiosqlite) as the embedded default.

Both run the same SQLAlchemy Core statements against the schema the alembic migrations create.
"""
