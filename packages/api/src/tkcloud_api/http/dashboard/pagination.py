"""Cursor pagination over lists ordered by the store: the cursor is the last id served."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from litestar.params import QueryParameter

from tkcloud_domain.errors import ValidationFailed

T = TypeVar("T")
MAX_LIMIT = 200

Limit = Annotated[int, QueryParameter(name="limit", ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, QueryParameter(name="cursor")]


def paginate(
    items: Sequence[T], key: Callable[[T], str], limit: int, cursor: str | None
) -> tuple[list[T], str | None]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit: expected 1 to {MAX_LIMIT}", details={"field": "limit"})
    start = 0
    if cursor:
        try:
            after = base64.urlsafe_b64decode(cursor.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValidationFailed(
                "cursor: not a cursor this API gave", details={"field": "cursor"}
            ) from None
        ids = [key(item) for item in items]
        if after not in ids:
            raise ValidationFailed(
                "cursor: not a cursor this API gave", details={"field": "cursor"}
            )
        start = ids.index(after) + 1
    page = list(items[start : start + limit])
    more = start + limit < len(items)
    next_cursor = (
        base64.urlsafe_b64encode(key(page[-1]).encode()).decode() if more and page else None
    )
    return page, next_cursor
