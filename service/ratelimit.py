"""The predict rate: a token bucket per tenant and process, one token per input. Its refusal,
:class:`RateLimited`, carries the seconds until the tokens are back (the API answers 429 with
``Retry-After``); limits: ``GRAFT_PREDICT_RATE_PER_S`` and ``GRAFT_PREDICT_BURST`` (docs/security.md)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar


class RateLimited(Exception):
    """The tenant's predict rate is spent; ``retry_after_s`` says when a token is back."""

    code: ClassVar[str] = "rate_limited"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per tenant, in this process: ``rate`` tokens a second, at most ``burst`` saved.

    Predict charges one token per input, so a request of 256 inputs costs what 256 one-input
    requests cost. A request costing more than ``burst`` is charged ``burst`` (it needs a full
    bucket), so every request the API accepts can eventually pass."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_tenants: int = 100_000
    ) -> None:
        self.rate, self.burst, self.clock, self.max_tenants = rate, max(1, burst), clock, max_tenants
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, tenant_id: str, cost: int = 1) -> None:
        """Spend ``cost`` tokens (one per input), or raise :class:`RateLimited` with the seconds until they are back."""
        if self.rate <= 0:
            return
        need = float(min(max(1, cost), self.burst))
        with self._lock:
            now = self.clock()
            bucket = self._buckets.get(tenant_id)
            if bucket is None:
                if len(self._buckets) >= self.max_tenants:
                    self._buckets.clear()  # idle buckets are full anyway: forgetting them refunds nothing
                bucket = self._buckets[tenant_id] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            if bucket.tokens >= need:
                bucket.tokens -= need
                return
            wait = (need - bucket.tokens) / self.rate
        raise RateLimited(
            f"predict rate limit of {self.rate:g} inputs/s (burst {self.burst}) reached by {cost} input(s); "
            f"retry after {math.ceil(wait)} s or send fewer inputs",
            retry_after_s=wait,
        )
