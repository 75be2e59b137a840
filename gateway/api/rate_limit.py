"""Per-caller token buckets, in this process: a request costs one unit, or one per event.

With N gateway processes the effective limit is N times the setting (docs/operations.md).
Callers are keyed by secret key, by customer (session tokens) or by client address (failed
authentication). Buckets of callers that have refilled are forgotten when there are many.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.requests import Request

from gateway.callers.auth import Caller


class RateLimited(Exception):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"rate limit of {limit} units per minute exceeded")
        self.limit = limit
        self.retry_after = retry_after


class RateLimiter:
    """Token buckets per caller key, in this process (see the module docstring)."""

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # tokens per second
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def hit(self, key: str, cost: int = 1) -> float | None:
        """Take ``cost`` tokens for ``key``: None when allowed (all taken), else the seconds
        until that many are available (none taken). A cost above the capacity never fits."""
        if self.per_minute <= 0 or cost <= 0:
            return None
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self.rate)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            if len(self._buckets) > self.max_keys:
                self._prune(now)
            return None
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget callers whose bucket has refilled: they are indistinguishable from new ones."""
        full = float(self.per_minute)
        idle = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= full]
        for key in idle:
            del self._buckets[key]

    @staticmethod
    def key(caller: Caller | None, request: Request) -> str:
        if caller is not None and caller.is_secret_key:
            return f"key:{caller.key_id}"
        if caller is not None and caller.is_customer:
            return f"customer:{caller.customer_id}"
        return f"ip:{request.client.host if request.client else 'unknown'}"

    def check(self, request: Request, caller: Caller | None, cost: int = 1) -> None:
        """Charge ``cost`` tokens to ``caller`` (None: failed authentication); RateLimited
        (nothing charged) if it has not that many."""
        wait = self.hit(self.key(caller, request), cost)
        if wait is not None:
            raise RateLimited(self.per_minute, max(1, math.ceil(wait - 1e-9)))
