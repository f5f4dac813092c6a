"""Counter rows: INSERT a row, or add its counters to the row already there, in one statement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Insert, Table


def adding(insert: Any, table: Table, counters: Iterable[str]) -> Insert:
    """`insert` (a Postgres or SQLite INSERT of `table`) that, on a primary-key conflict, adds
    the new row's `counters` to the existing row's (atomic: concurrent writers never lose one)."""
    return insert.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=list(table.primary_key.columns),
        set_={name: table.c[name] + insert.excluded[name] for name in counters},
    )
