"""In-process implementations of the hot-path cache ports: the embedded default, one process."""

from tkcloud_adapters.memory.limits import (
    InProcessNonceStore,
    InProcessQuotaCounter,
    InProcessRateLimiter,
)

__all__ = ["InProcessNonceStore", "InProcessQuotaCounter", "InProcessRateLimiter"]
