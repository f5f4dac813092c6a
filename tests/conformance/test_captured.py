"""Every request the real SDK sent (../shared/protocol/captured/) is accepted, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.stack import Stack
from tkcloud_domain.plans import Plan
from tkcloud_domain.tenancy import Environment

pytestmark = pytest.mark.fresh_database

CAPTURED = Path(__file__).resolve().parents[2].parent / "shared" / "protocol" / "captured"
ORG_ID = "550e8400-e29b-41d4-a716-446655440000"
APP_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
SECRET = "harness-secret-0001"


class Captured:
    def __init__(self, path: Path) -> None:
        raw = path.read_bytes()
        head, _, self.body = raw.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode().split("\r\n")
        self.method, self.path, _ = request_line.split(" ")
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        assert int(self.headers["content-length"]) == len(self.body)

    @property
    def sent_at(self) -> datetime:
        return datetime.fromtimestamp(int(self.headers["x-timestamp"]), UTC)

    def forwarded_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k not in {"host", "content-length"}}


def captured_files() -> list[Path]:
    files = sorted(CAPTURED.rglob("*.raw.txt"))
    assert files, f"no captured requests under {CAPTURED}"
    return files


async def harness_app(stack: Stack) -> None:
    await stack.new_app(
        plan=Plan.PRO,
        environment=Environment.PRODUCTION,
        org_id=ORG_ID,
        app_id=APP_ID,
        secret=SECRET,
    )


async def replay(stack: Stack, captured: Captured):  # type: ignore[no-untyped-def]
    stack.clock.set(captured.sent_at)
    return await stack.client.request(
        captured.method, captured.path, content=captured.body, headers=captured.forwarded_headers()
    )


@pytest.mark.parametrize("path", captured_files(), ids=lambda p: str(p.relative_to(CAPTURED)))
async def test_every_captured_request_is_accepted(stack: Stack, path: Path) -> None:
    await harness_app(stack)
    captured = Captured(path)
    response = await replay(stack, captured)
    assert response.status_code == 200, response.text
    events = int(captured.headers["x-batch-size"])
    assert response.json() == {
        "status": "success",
        "accepted": events,
        "rejected": 0,
        "message": "All events ingested successfully",
        "duplicates": 0,
    }
    usage = await stack.tenancy.usage(ORG_ID, captured.sent_at.strftime("%Y-%m"))
    assert sum(row.events for row in usage) == events


async def test_the_retry_pair_stores_its_events_once_and_both_are_accepted(stack: Stack) -> None:
    await harness_app(stack)
    first = Captured(CAPTURED / "retry-after-429" / "01-first-attempt.raw.txt")
    retry = Captured(CAPTURED / "retry-after-429" / "02-retry.raw.txt")
    assert first.body == retry.body
    assert first.headers["x-nonce"] != retry.headers["x-nonce"]

    answers = [await replay(stack, first), await replay(stack, retry)]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json()["accepted"] == 3
    assert answers[0].json()["duplicates"] == 0
    assert answers[1].json()["accepted"] == 3
    assert answers[1].json()["duplicates"] == 3
    usage = await stack.tenancy.usage(ORG_ID, "2026-12")
    assert sum(row.events for row in usage) == 3


async def test_a_captured_request_replayed_as_is_is_refused(stack: Stack) -> None:
    await harness_app(stack)
    captured = Captured(CAPTURED / "01-command_execution.raw.txt")
    assert (await replay(stack, captured)).status_code == 200
    again = await replay(stack, captured)
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "ERR_REPLAY_ATTACK"
