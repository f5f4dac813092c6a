"""The one place Redis failures become the domain's `ServiceUnavailable("cache")`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from tkcloud_domain.errors import ServiceUnavailable


@contextmanager
def cache_unavailable_on_error() -> Iterator[None]:
    """Wrap every Redis call of an adapter.

    Any Redis error counts, not only connection errors and timeouts: a server that is loading,
    read-only after a failover or out of memory cannot answer either, and the port promises never
    to let a driver exception through. The cause stays chained for the 5xx log.
    """
    try:
        yield
    except (RedisError, OSError) as exc:  # OSError covers socket errors and builtin TimeoutError
        raise ServiceUnavailable("cache") from exc
