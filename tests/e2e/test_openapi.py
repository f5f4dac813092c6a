"""The OpenAPI schema the app serves documents every route of the API."""

from __future__ import annotations

import re

from litestar.routes import HTTPRoute

from tests.support.stack import Stack


async def test_every_route_is_in_the_served_openapi_schema(stack: Stack) -> None:
    response = await stack.client.get("/schema/openapi.json")
    assert response.status_code == 200
    documented = response.json()["paths"]
    missing = []
    for route in stack.app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/schema"):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        methods = {m.lower() for h in route.route_handlers for m in h.http_methods} - {
            "options",
            "head",
        }
        for method in methods:
            operation = documented.get(path, {}).get(method)
            if operation is None or not operation.get("summary"):
                missing.append((method, path))
    assert missing == []
    assert len(documented) >= 40
