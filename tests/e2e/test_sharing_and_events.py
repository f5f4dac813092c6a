"""Share links, badges, the events explorer and exports over HTTP."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from tests.support.sdk import batch_body, sdk_event, signed_request
from tests.support.stack import Stack
from tkcloud_domain.plans import Plan

pytestmark = pytest.mark.fresh_database


async def org_with_events(stack: Stack, count: int = 5) -> tuple[httpx.AsyncClient, str, str]:
    alice = await stack.browser("alice@example.com")
    org_id = (await alice.post("/api/v1/orgs", json={"name": "Acme"})).json()["org_id"]
    created = (await alice.post(f"/api/v1/orgs/{org_id}/apps", json={"name": "cli"})).json()
    app_id, secret = created["app"]["app_id"], created["credentials"]["secret"]
    now = stack.clock.now()
    events = [sdk_event(now - timedelta(minutes=i + 1)) for i in range(count)]
    events[0]["extra"] = {"kept": True}
    request = signed_request(org_id, app_id, secret, batch_body(events), now=now)
    assert (await stack.send(request)).status_code == 200
    return alice, org_id, app_id


async def test_the_events_explorer_pages_newest_first(stack: Stack) -> None:
    alice, _, app_id = await org_with_events(stack, 5)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await alice.get(f"/api/v1/apps/{app_id}/events", params=params)).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5
    assert [e["timestamp"] for e in seen] == sorted((e["timestamp"] for e in seen), reverse=True)
    one = await alice.get(f"/api/v1/apps/{app_id}/events/{seen[0]['event_id']}")
    assert one.json()["event"]["extra"] == {"kept": True}  # the full JSON, unknown fields too
    bad = await alice.get(f"/api/v1/apps/{app_id}/events", params={"cursor": "nonsense"})
    assert bad.status_code == 422


async def test_exports_stream_csv_and_ndjson_and_parquet_only_on_pro(stack: Stack) -> None:
    alice, org_id, app_id = await org_with_events(stack, 5)
    url = f"/api/v1/export/{org_id}/{app_id}/events"
    response = await alice.get(url, params={"format": "csv"})
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 5
    ndjson = (await alice.get(url, params={"format": "json"})).text.splitlines()
    assert len(ndjson) == 5
    assert all(json.loads(line)["schema_version"] == "1.0.0" for line in ndjson)
    refused = await alice.get(url, params={"format": "parquet"})
    assert refused.status_code == 403
    assert "free" in refused.json()["error"]["message"].lower()
    await stack.tenancy.set_plan(org_id, Plan.PRO)
    parquet = await alice.get(url, params={"format": "parquet"})
    assert parquet.status_code == 200
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 5
    other_org = (await alice.post("/api/v1/orgs", json={"name": "Other"})).json()["org_id"]
    assert (await alice.get(f"/api/v1/export/{other_org}/{app_id}/events")).status_code == 404


async def test_a_share_link_shows_one_apps_analytics_and_nothing_else(stack: Stack) -> None:
    alice, org_id, app_id = await org_with_events(stack, 3)
    share = (await alice.post(f"/api/v1/apps/{app_id}/shares", json={})).json()
    assert len(share["slug"]) >= 22
    public = stack.http_client()  # nobody signed in
    base = f"/api/v1/public/{share['slug']}"
    view = await public.get(base)
    assert view.json() == {"app_name": "cli", "environment": "staging", "include_events": False}
    assert "max-age" in view.headers["cache-control"]
    totals = await public.get(f"{base}/analytics/totals", params={"period": "24h"})
    assert totals.status_code == 200
    assert totals.json()["events"]["current"] == 3
    assert (await public.get(f"{base}/events")).status_code == 403  # raw events: not opted in
    assert (await public.get(f"/api/v1/orgs/{org_id}")).status_code == 401

    with_events = (
        await alice.post(f"/api/v1/apps/{app_id}/shares", json={"include_events": True})
    ).json()
    events = await public.get(f"/api/v1/public/{with_events['slug']}/events")
    assert len(events.json()["items"]) == 3

    await alice.delete(f"/api/v1/apps/{app_id}/shares/{share['share_id']}")
    assert (await public.get(base)).status_code == 404
    assert (await public.get(f"{base}/analytics/totals")).status_code == 404
    expiring = (
        await alice.post(
            f"/api/v1/apps/{app_id}/shares",
            json={"expires_at": (stack.clock.now() + timedelta(hours=1)).isoformat()},
        )
    ).json()
    stack.clock.advance(3601)
    assert (await public.get(f"/api/v1/public/{expiring['slug']}")).status_code == 404


async def test_badges_only_for_apps_that_enabled_them(stack: Stack) -> None:
    alice, org_id, app_id = await org_with_events(stack, 3)
    anyone = stack.http_client()
    url = f"/api/v1/badge/{org_id}/{app_id}/events-per-month"
    assert (await anyone.get(url)).status_code == 404
    assert (await alice.put(f"/api/v1/apps/{app_id}/badges", json={"enabled": True})).json() == {
        "enabled": True
    }
    shields = await anyone.get(url)
    assert shields.json() == {
        "schemaVersion": 1,
        "label": "events",
        "message": "3/mo",
        "color": "blue",
    }
    assert "max-age" in shields.headers["cache-control"]
    users = (await anyone.get(f"/api/v1/badge/{org_id}/{app_id}/users-per-month")).json()
    assert users["message"] == "1/mo"
    for style in ("flat", "flat-square", "for-the-badge"):
        svg = await anyone.get(f"{url}.svg", params={"style": style})
        assert svg.headers["content-type"].startswith("image/svg+xml")
        root = ET.fromstring(svg.content)  # noqa: S314 - our own SVG
        assert root.tag.endswith("svg")
    other_org = (await alice.post("/api/v1/orgs", json={"name": "Other"})).json()["org_id"]
    assert (
        await anyone.get(f"/api/v1/badge/{other_org}/{app_id}/events-per-month")
    ).status_code == 404
    assert (await anyone.get(f"/api/v1/badge/{org_id}/{app_id}/downloads")).status_code == 404
