"""The real thing: `tkcloud` commands and `tkcloud serve` as processes, spoken to over TCP the way
an SDK configured with the printed credentials would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import create_postgres_database, drop_postgres_database
from tests.support.sdk import batch_body, sdk_event, signed_request
from tkcloud_adapters.crypto import generate_key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tkcloud(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tkcloud_api.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tkcloud_json(env: dict[str, str], *args: str) -> Any:
    done = tkcloud(env, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Server:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tkcloud_api.cli", "serve", "--port", str(self.port), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"server exited: {self.process.stdout.read() if self.process.stdout else ''}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become healthy")

    def stop(self) -> str:
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return out or ""


@pytest.fixture
def production_env(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[dict[str, str]]:
    url = create_postgres_database("server")
    env = {
        **os.environ,
        "TKCLOUD_DATABASE_URL": url,
        "TKCLOUD_REDIS_URL": redis_url,
        "TKCLOUD_REDIS_PREFIX": redis_prefix,
        "TKCLOUD_SECRET_KEY": generate_key(),
        "TKCLOUD_DATA_DIR": str(tmp_path),
    }
    try:
        yield env
    finally:
        drop_postgres_database(url)


async def test_an_sdk_with_the_printed_credentials_gets_its_events_stored_across_workers(
    production_env: dict[str, str],
) -> None:
    org = tkcloud_json(production_env, "org", "create", "--name", "Acme CLI", "--plan", "pro")
    app = tkcloud_json(
        production_env,
        "app",
        "create",
        "--org",
        org["org_id"],
        "--name",
        "acme",
        "--environment",
        "production",
    )
    assert app["org_id"] == org["org_id"]
    assert app["token"].startswith("tk_")
    assert app["secret"].startswith("tks_")

    server = Server(production_env, "--workers", "2")
    try:
        await asyncio.to_thread(server.wait_healthy)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for _ in range(3):
                now = datetime.now(UTC)
                body = batch_body([sdk_event(now) for _ in range(10)])
                request = signed_request(
                    org["org_id"], app["app_id"], app["secret"], body, now=now, batch_size=10
                )
                response = await client.post(
                    request.path, content=request.body, headers=request.headers
                )
                assert response.status_code == 200, response.text
                assert response.json()["accepted"] == 10

            # One signed request raced over both worker processes: the nonce is shared in Redis.
            now = datetime.now(UTC)
            body = batch_body([sdk_event(now) for _ in range(5)])
            request = signed_request(org["org_id"], app["app_id"], app["secret"], body, now=now)
            responses = await asyncio.gather(
                *(
                    client.post(request.path, content=request.body, headers=request.headers)
                    for _ in range(20)
                )
            )
            assert Counter(r.status_code for r in responses) == {200: 1, 401: 19}
    finally:
        server.stop()

    usage = tkcloud_json(production_env, "usage", "--org", org["org_id"])
    assert [(row["app_id"], row["events"]) for row in usage["items"]] == [(app["app_id"], 35)]


def test_serve_with_no_configuration_runs_embedded(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
    env["TKCLOUD_DATA_DIR"] = str(tmp_path / "data")
    server = Server(env, "--demo")
    try:
        server.wait_healthy()
        health = httpx.get(f"{server.url}/health").json()
        assert health["status"] == "ok"
        assert health["checks"] == {"database": "ok", "cache": "ok"}
    finally:
        output = server.stop()
    assert f"listening on http://127.0.0.1:{server.port}" in output
    assert "SQLite" in output
    assert "in-process caches" in output
    assert "secret:" in output
    assert "org_id:" in output
    assert (tmp_path / "data" / "tkcloud.db").exists()
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o077 == 0


def test_a_bad_setting_stops_start_up_with_a_message_naming_it(tmp_path: Path) -> None:
    env = {**os.environ, "TKCLOUD_PORT": "eighty", "TKCLOUD_DATA_DIR": str(tmp_path)}
    done = tkcloud(env, "serve")
    assert done.returncode == 2
    assert "TKCLOUD_PORT" in done.stderr
    assert "'eighty'" in done.stderr


def test_several_workers_without_redis_are_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
    env["TKCLOUD_DATA_DIR"] = str(tmp_path)
    done = tkcloud(env, "serve", "--workers", "2")
    assert done.returncode == 2
    assert "TKCLOUD_REDIS_URL" in done.stderr


def test_operator_commands_round_trip(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
    env["TKCLOUD_DATA_DIR"] = str(tmp_path)
    org = tkcloud_json(env, "org", "create", "--name", "Ops")
    assert org["plan"] == "free"
    assert org["events_per_month"] == 10_000
    changed = tkcloud_json(
        env, "org", "set-plan", org["org_id"], "enterprise", "--custom-quota", "5000000"
    )
    assert changed["plan"] == "enterprise"
    assert changed["events_per_month"] == 5_000_000
    app = tkcloud_json(env, "app", "create", "--org", org["org_id"], "--name", "tool")
    assert app["environment"] == "staging"
    listed = tkcloud_json(env, "app", "list", "--org", org["org_id"])
    assert [a["app_id"] for a in listed["items"]] == [app["app_id"]]
    rotated = tkcloud_json(env, "app", "credentials", "rotate", app["app_id"])
    assert rotated["secret"] != app["secret"]
    revoked = tkcloud_json(env, "app", "credentials", "revoke", app["app_id"])
    assert revoked["revoked"] == 2  # the new one and the old one still in its grace period
    missing = tkcloud(env, "org", "show", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1
    assert "ERR_NOT_FOUND" in missing.stderr
    bad_plan = tkcloud(env, "org", "set-plan", org["org_id"], "pro", "--custom-quota", "5")
    assert bad_plan.returncode == 1
    assert "ERR_VALIDATION" in bad_plan.stderr


def test_operator_people_commands(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
    env["TKCLOUD_DATA_DIR"] = str(tmp_path)
    org = tkcloud_json(env, "org", "create", "--name", "People")["org_id"]
    added = tkcloud_json(env, "org", "members", "add", org, "Bob@Example.com", "owner")
    assert (added["email"], added["role"]) == ("bob@example.com", "owner")
    tkcloud_json(env, "org", "members", "add", org, "carol@example.com", "member")
    promoted = tkcloud_json(env, "org", "members", "set-role", org, "carol@example.com", "admin")
    assert promoted["role"] == "admin"
    members = tkcloud_json(env, "org", "members", "list", org)["items"]
    assert [(m["email"], m["role"]) for m in members] == [
        ("bob@example.com", "owner"),
        ("carol@example.com", "admin"),
    ]
    last_owner = tkcloud(env, "org", "members", "remove", org, "bob@example.com")
    assert last_owner.returncode == 1
    assert "ERR_CONFLICT" in last_owner.stderr

    invite = tkcloud_json(env, "invite", "create", org, "olga@example.com")
    assert invite["role"] == "observer"
    outbox = tkcloud_json(env, "mail", "outbox", "--to", "olga@example.com")["items"]
    assert outbox[0]["kind"] == "invite"
    assert "/invites/accept?token=" in outbox[0]["text"]
    listed = tkcloud_json(env, "invite", "list", org)["items"]
    assert [(i["invite_id"], i["status"]) for i in listed] == [(invite["invite_id"], "pending")]
    tkcloud_json(env, "invite", "revoke", org, invite["invite_id"])
    assert tkcloud_json(env, "invite", "list", org)["items"][0]["status"] == "revoked"

    key = tkcloud_json(env, "apikey", "create", org, "--name", "ci", "--scope", "manage")
    assert key["secret"].startswith("tkk_")
    assert key["scopes"] == ["manage"]
    tkcloud_json(env, "apikey", "revoke", org, key["key_id"])
    assert tkcloud_json(env, "apikey", "list", org)["items"][0]["revoked"] is True

    shown = tkcloud_json(env, "user", "show", "carol@example.com")
    assert shown["orgs"] == [{"org_id": org, "org": "People", "role": "admin"}]
    assert tkcloud_json(env, "user", "sign-out", "carol@example.com") == {"sessions_revoked": 0}
    unknown = tkcloud(env, "user", "show", "nobody@example.com")
    assert unknown.returncode == 1
    assert "ERR_NOT_FOUND" in unknown.stderr


def test_retention_run_command(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TKCLOUD_")}
    env["TKCLOUD_DATA_DIR"] = str(tmp_path)
    org = tkcloud_json(env, "org", "create", "--name", "Kept")["org_id"]
    app = tkcloud_json(env, "app", "create", "--org", org, "--name", "tool")["app_id"]
    result = tkcloud_json(env, "retention", "run")
    assert result["deleted"] == 0
    assert [(i["app_id"], i["retention_days"]) for i in result["items"]] == [(app, 30)]
