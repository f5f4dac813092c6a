"""`POST /v1/ingest/{org_id}/{app_id}`: the SDK's endpoint (PROTOCOL.md).

The body is read here as raw bytes (bounded) and decoded by the domain's typed msgspec decoder,
never by Litestar's `data:` parameter: the signature covers the exact bytes, and strict typed
decoding is both faster and refuses a number where a string belongs.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath, SkipValidation

from tkcloud_api.http.bodies import EventError, IngestPartial, IngestSuccess, encoder
from tkcloud_api.http.body import BoundedBody
from tkcloud_api.http.errors import rate_limit_headers
from tkcloud_application.ingestion.ingest_batch import (
    IngestBatch,
    IngestHeaders,
    IngestRequest,
    IngestResult,
)


@post(
    "/v1/ingest/{org_id:str}/{app_id:str}",
    status_code=200,
    request_max_body_size=None,  # BoundedBody enforces 5 MiB itself, after the app check
    summary="Ingest a signed batch of events",
    description="The telemetry-kit SDK's endpoint. See docs/SYNC_PROTOCOL.md.",
    tags=["ingestion"],
)
async def ingest(
    org_id: FromPath[str],
    app_id: FromPath[str],
    request: Request[Any, Any, Any],
    ingest_batch: NamedDependency[SkipValidation[IngestBatch]],
) -> Response[bytes]:
    h = request.headers
    headers = IngestHeaders(
        signature=h.get("x-signature"),
        timestamp=h.get("x-timestamp"),
        nonce=h.get("x-nonce"),
        batch_size=h.get("x-batch-size"),
        authorization=h.get("authorization"),
        dnt=h.get("dnt", "").strip() == "1",
    )
    result = await ingest_batch(IngestRequest(org_id, app_id, headers, BoundedBody(request)))
    return _response(result)


def _response(result: IngestResult) -> Response[bytes]:
    headers = rate_limit_headers(result.rate_limit)
    if result.dnt:
        return Response(b"", status_code=204, headers=headers)
    if result.rejected == 0:
        body: IngestSuccess | IngestPartial = IngestSuccess(
            status="success",
            accepted=result.accepted,
            rejected=0,
            message="All events ingested successfully",
            duplicates=result.duplicates,
        )
        status = 200
    else:
        body = IngestPartial(
            status="partial",
            accepted=result.accepted,
            rejected=result.rejected,
            message=f"{result.rejected} event{'s' if result.rejected != 1 else ''} rejected",
            errors=[EventError(r.event_id, r.index, r.error, r.message) for r in result.rejections],
            duplicates=result.duplicates,
        )
        status = 207
    return Response(
        encoder.encode(body), status_code=status, media_type="application/json", headers=headers
    )
