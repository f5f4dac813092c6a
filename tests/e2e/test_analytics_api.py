"""The analytics endpoints over HTTP: the query parameters, the bodies, who may read.
(The metrics themselves are checked against a hand-computed fixture in
tests/integration/test_analytics.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.sdk import batch_body, sdk_event, signed_request
from tests.support.stack import Stack

pytestmark = pytest.mark.fresh_database

ENDPOINTS = [
    "totals", "series", "active-users", "commands", "features", "breakdown/os", "retention",
    "failing-commands", "dnt",
]  # fmt: skip


async def test_analytics_of_an_app_over_http(stack: Stack) -> None:
    alice = await stack.browser("alice@example.com")
    org_id = (await alice.post("/api/v1/orgs", json={"name": "Acme"})).json()["org_id"]
    created = (await alice.post(f"/api/v1/orgs/{org_id}/apps", json={"name": "cli"})).json()
    app_id, secret = created["app"]["app_id"], created["credentials"]["secret"]
    now = stack.clock.now()
    events = [
        sdk_event(now - timedelta(hours=1)),
        sdk_event(now - timedelta(hours=2), user_id="client_" + "cd" * 32),
        sdk_event(
            now - timedelta(hours=2),
            event={
                "type": "command_execution",
                "data": {"command": "test", "success": False, "exit_code": 2},
            },
        ),
    ]
    request = signed_request(org_id, app_id, secret, batch_body(events), now=now)
    assert (await stack.send(request)).status_code == 200

    base = f"/api/v1/apps/{app_id}/analytics"
    totals = (await alice.get(f"{base}/totals", params={"period": "24h"})).json()
    assert totals["events"] == {"current": 3, "previous": 0, "change": None}
    assert totals["users"]["current"] == 2
    series = (
        await alice.get(f"{base}/series", params={"period": "24h", "tz": "Europe/Berlin"})
    ).json()
    assert len(series) in (24, 25)
    assert sum(p["events"] for p in series) == 3
    assert series[0]["bucket"].endswith("+01:00")
    commands = (await alice.get(f"{base}/commands", params={"period": "7d"})).json()
    assert [(c["command"], c["count"]) for c in commands] == [("build", 2), ("test", 1)]
    failing = (await alice.get(f"{base}/failing-commands")).json()
    assert failing[0]["command"] == "test"
    assert failing[0]["exit_codes"] == [{"key": "2", "count": 1}]
    by_os = (await alice.get(f"{base}/breakdown/os")).json()
    assert by_os == [{"key": "linux", "count": 3}]
    filtered = (await alice.get(f"{base}/totals", params={"period": "24h", "os": "macos"})).json()
    assert filtered["events"]["current"] == 0
    for endpoint in ENDPOINTS:
        response = await alice.get(f"{base}/{endpoint}", params={"period": "30d"})
        assert response.status_code == 200, (endpoint, response.text)

    # Bad questions get clear answers.
    for params in (
        {"period": "1y"},
        {"tz": "Mars/Olympus"},
        {"from": "2026-12-01T00:00:00Z"},
        {"limit": "0"},
        {"from": "2026-12-01T00:00:00", "to": "2026-12-02T00:00:00"},
    ):
        response = await alice.get(f"{base}/totals", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["code"] == "ERR_VALIDATION"
    assert (await alice.get(f"{base}/breakdown/colour")).status_code == 422

    # An API key with the read scope reads analytics; an outsider gets 404.
    key = (await alice.post(f"/api/v1/orgs/{org_id}/api-keys", json={"name": "grafana"})).json()
    program = await stack.api_client(key["secret"])
    assert (await program.get(f"{base}/totals")).status_code == 200
    mallory = await stack.browser("mallory@example.com")
    assert (await mallory.get(f"{base}/totals")).status_code == 404
