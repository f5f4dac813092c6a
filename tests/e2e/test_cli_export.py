"""`tkcloud export` as a process, embedded (SQLite in TKCLOUD_DATA_DIR): the org and app come from
the CLI, the events from the real `SqlEventStore` writing to the same database file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.support.sdk import sdk_event
from tkcloud_adapters.sql.engine import create_engine
from tkcloud_adapters.sql.event_store import SqlEventStore
from tkcloud_api.cli.export import Progress, human_size
from tkcloud_domain.events import EventSchema, parse_event
from tkcloud_domain.plans import PLAN_LIMITS, Plan
from tkcloud_domain.tenancy import Environment, IngestApp

NOW = datetime.now(UTC).replace(microsecond=0)


def tkcloud(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tkcloud_api.cli", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tkcloud_json(env: dict[str, str], *args: str, cwd: Path | None = None) -> Any:
    done = tkcloud(env, *args, "--json", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def store(data_dir: Path, org_id: str, app_id: str, moments: list[datetime]) -> list[str]:
    engine = create_engine(f"sqlite+aiosqlite:///{data_dir / 'tkcloud.db'}")
    events = []
    for index, moment in enumerate(moments):
        schema = parse_event(json.dumps(sdk_event(moment)).encode(), index, now=NOW, oldest=None)
        assert isinstance(schema, EventSchema), schema
        events.append(schema)
    target = IngestApp(
        org_id, app_id, Environment.PRODUCTION, True, Plan.FREE, PLAN_LIMITS[Plan.FREE], ()
    )
    try:
        assert await SqlEventStore(engine).store(target, events, NOW) == len(events)
    finally:
        await engine.dispose()
    return [e.event_id for e in events]


@pytest.fixture
def tenant(tmp_path: Path) -> tuple[dict[str, str], str, str, list[str]]:
    """An embedded install with a Free org, one app and five events: four in the last days, one
    40 days old (outside the default 30-day range)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
    data_dir = tmp_path / "data"
    env["TKCLOUD_DATA_DIR"] = str(data_dir)
    org = tkcloud_json(env, "org", "create", "--name", "Exporters")["org_id"]
    app = tkcloud_json(
        env, "app", "create", "--org", org, "--name", "cli", "--environment", "production"
    )["app_id"]
    moments = [NOW - timedelta(days=40), *(NOW - timedelta(hours=h) for h in (50, 30, 20, 1))]
    ids = asyncio.run(store(data_dir, org, app, moments))
    return env, org, app, ids


def test_csv_to_the_export_s_own_file_name(
    tenant: tuple[dict[str, str], str, str, list[str]], tmp_path: Path
) -> None:
    env, _, app, ids = tenant
    out = tmp_path / "out"
    out.mkdir()
    done = tkcloud(env, "export", app, cwd=out)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    [written] = list(out.iterdir())  # no partial file left behind
    assert written.name.startswith(f"events-{app}-")
    assert written.suffix == ".csv"
    rows = list(csv.DictReader(io.StringIO(written.read_text())))
    assert [r["event_id"] for r in rows] == ids[1:]  # oldest first; the 40-day-old one outside
    # Not a terminal: no progress redraws, only the summary line.
    assert done.stderr.count("\n") == 1
    assert "\r" not in done.stderr
    assert done.stderr.startswith("Exported ")
    assert "to " in done.stderr


def test_ndjson_to_stdout_with_a_range(tenant: tuple[dict[str, str], str, str, list[str]]) -> None:
    env, _, app, ids = tenant
    start = (NOW - timedelta(days=41)).isoformat().replace("+00:00", "Z")
    end = (NOW - timedelta(hours=10)).isoformat()
    done = tkcloud(env, "export", app, "--format", "json", "--from", start, "--to", end, "-o", "-")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ids[:4]
    assert "stdout" in done.stderr


def test_json_report_and_explicit_path(
    tenant: tuple[dict[str, str], str, str, list[str]], tmp_path: Path
) -> None:
    env, _, app, ids = tenant
    target = tmp_path / "nested.ndjson"
    report = tkcloud_json(env, "export", app, "--format", "json", "--output", str(target))
    assert report == {"path": str(target), "bytes": target.stat().st_size, "format": "json"}
    assert len(target.read_text().splitlines()) == len(ids) - 1


def test_parquet_is_refused_on_free_and_served_on_pro(
    tenant: tuple[dict[str, str], str, str, list[str]], tmp_path: Path
) -> None:
    env, org, app, ids = tenant
    target = tmp_path / "events.parquet"
    refused = tkcloud(env, "export", app, "--format", "parquet", "-o", str(target))
    assert refused.returncode == 1
    assert "Pro plan" in refused.stderr
    assert "(ERR_" in refused.stderr
    assert not target.exists()
    assert list(tmp_path.glob("*.part")) == []
    as_json = tkcloud(env, "export", app, "--format", "parquet", "-o", str(target), "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["code"].startswith("ERR_")

    tkcloud_json(env, "org", "set-plan", org, "pro")
    report = tkcloud_json(env, "export", app, "--format", "parquet", "-o", str(target))
    assert report["bytes"] == target.stat().st_size
    table = pq.read_table(target)
    assert table.num_rows == len(ids) - 1
    assert table.column("event_id").to_pylist() == ids[1:]


def test_an_unknown_app_is_an_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
    env["TKCLOUD_DATA_DIR"] = str(tmp_path / "data")
    done = tkcloud(env, "export", "00000000-0000-4000-8000-000000000000", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ")
    assert not list(tmp_path.glob("events-*"))
    bad_time = tkcloud(env, "export", "x", "--from", "yesterday")
    assert bad_time.returncode == 2
    assert "RFC 3339" in bad_time.stderr


def test_progress_redraws_at_most_ten_times_a_second() -> None:
    stream = io.StringIO()
    clock = [0.0]
    progress = Progress(stream, live=True, now=lambda: clock[0])
    for _ in range(50):  # 50 chunks in 0.49 s: drawn at 0.0, 0.1, 0.2, 0.3, 0.4
        progress.add(1024)
        clock[0] += 0.01
    assert stream.getvalue().count("\r") == 5
    progress.finish("done")
    assert stream.getvalue().endswith("\r\x1b[Kdone\n")
    assert progress.bytes == 50 * 1024

    quiet = io.StringIO()
    silent = Progress(quiet, live=False, now=lambda: 0.0)
    silent.add(10)
    silent.finish("done")
    assert quiet.getvalue() == "done\n"


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 5 * 1024**2, 3 * 1024**4)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "5.0 MiB",
        "3072.0 GiB",
    ]
