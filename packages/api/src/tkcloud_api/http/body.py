"""A bounded reader of the request body: it stops reading past the limit and inflates gzip
without ever holding more than the limit (a small gzip bomb cannot blow up memory)."""

from __future__ import annotations

import zlib
from typing import Any

from litestar import Request

from tkcloud_application.ingestion.ingest_batch import ReceivedBody
from tkcloud_domain.errors import PayloadTooLarge


class BoundedBody:
    def __init__(self, request: Request[Any, Any, Any]) -> None:
        self._request = request

    async def read(self, limit: int) -> ReceivedBody:
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
            return ReceivedBody(sent, sent)
        if encoding in ("gzip", "x-gzip"):
            try:
                return ReceivedBody(sent, _gunzip(sent, limit))
            except _NotGzip as exc:
                return ReceivedBody(sent, b"", f"Body is not valid gzip: {exc}")
        problem = f"Unsupported content-encoding {encoding!r}: send identity or gzip"
        return ReceivedBody(sent, b"", problem)


class _NotGzip(ValueError):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    """Every member of a (possibly multi-member) gzip stream, never more than `limit` bytes."""
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise _NotGzip(str(exc)) from exc
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge("Payload exceeds 5 MiB once decompressed")
        if not inflater.eof:
            raise _NotGzip("truncated")
        rest = inflater.unused_data
    return bytes(out)
