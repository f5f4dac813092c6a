"""`tkcloud analytics rebuild` as a process, embedded: the rollups of stored events are
recomputed, the queue of batches to fold is emptied, and unknown ids are errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.e2e.test_cli_export import tenant, tkcloud, tkcloud_json
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.schema import rollup_counts, rollup_queue

__all__ = ["tenant"]  # the fixture, shared with the export tests


async def _rollups(data_dir: Path, app_id: str) -> tuple[int, int]:
    """(batches queued, events in the app's day rows of the "total" counter, all slices "")."""
    engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'tkcloud.db'}")
    try:
        async with engine.connect() as conn:
            queued = await conn.scalar(
                select(func.count())
                .select_from(rollup_queue)
                .where(rollup_queue.c.app_id == app_id)
            )
            total = await conn.scalar(
                select(func.coalesce(func.sum(rollup_counts.c.events), 0)).where(
                    rollup_counts.c.app_id == app_id,
                    rollup_counts.c.slice == "",
                    rollup_counts.c.kind == "total",
                    rollup_counts.c.grain == "d",
                )
            )
            return int(queued or 0), int(total or 0)
    finally:
        await engine.dispose()


def test_rebuild_one_app_one_org_and_all(
    tenant: tuple[dict[str, str], str, str, list[Any]],
) -> None:
    env, org, app, ids = tenant
    data_dir = Path(env["TKCLOUD_DATA_DIR"])
    assert asyncio.run(_rollups(data_dir, app)) == (1, 0)  # stored, not folded yet
    report = tkcloud_json(env, "analytics", "rebuild", "--app", app)
    assert report == {"items": [{"org_id": org, "app_id": app, "events": len(ids)}], "events": 5}
    assert asyncio.run(_rollups(data_dir, app)) == (0, len(ids))
    # Again, by org and for everything: the same rows, not twice as many.
    assert tkcloud_json(env, "analytics", "rebuild", "--org", org)["events"] == len(ids)
    assert tkcloud_json(env, "analytics", "rebuild")["events"] == len(ids)
    assert asyncio.run(_rollups(data_dir, app)) == (0, len(ids))
    done = tkcloud(env, "analytics", "rebuild")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Rebuilt the rollups of 1 app(s) from {len(ids)} stored event(s)"


def test_unknown_ids_are_errors(tenant: tuple[dict[str, str], str, str, list[Any]]) -> None:
    env, org, _, _ = tenant
    for args in (
        ("--app", "app_missing"),
        ("--org", "org_missing"),
        ("--org", "org_x", "--app", "a"),
    ):
        done = tkcloud(env, "analytics", "rebuild", *args)
        assert done.returncode == 1
        assert "No " in done.stderr
    other_org = tkcloud_json(env, "org", "create", "--name", "Other")["org_id"]
    app = tkcloud_json(env, "app", "create", "--org", org, "--name", "second")["app_id"]
    done = tkcloud(env, "analytics", "rebuild", "--org", other_org, "--app", app)
    assert done.returncode == 1, "an app is only found in its own org"
