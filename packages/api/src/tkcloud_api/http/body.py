"""A bounded reader of the request body: it stops reading past the limit and inflates gzip
without ever holding more than the limit (a small gzip bomb cannot blow up memory)."""

from __future__ import annotations

import zlib
from typing import Any

from litestar import Request

from tkcloud_domain.errors import InvalidRequest, PayloadTooLarge


class BoundedBody:
    def __init__(self, request: Request[Any, Any, Any]) -> None:
        self._request = request

    async def read(self, limit: int) -> tuple[bytes, bytes]:
        headers = self._request.headers
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge()
        chunks: list[bytes] = []
        size = 0
        async for chunk in self._request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge()
            chunks.append(chunk)
        sent = b"".join(chunks)
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("", "identity"):
            return sent, sent
        if encoding in ("gzip", "x-gzip"):
            return sent, _gunzip(sent, limit)
        raise InvalidRequest(f"Unsupported content-encoding {encoding!r}: send identity or gzip")


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        inflated = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"Body is not valid gzip: {exc}") from exc
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge("Payload exceeds 5 MiB once decompressed")
    if not inflater.eof:
        raise InvalidRequest("Body is not valid gzip: truncated")
    return inflated
