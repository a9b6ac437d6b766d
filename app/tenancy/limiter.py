"""Per-key limits, in process: token buckets (requests/s, texts/s) and texts in flight.

No HTTP here: `take` raises `RateLimited` (429 with Retry-After, app/api/errors.py) or returns
a `Hold` that `release` gives back. The rules, shared with the Redis backend
(app/tenancy/limiter_redis.py), which keeps the same state in Redis for many processes:

- A bucket holds at most `rate` tokens (one second's worth) and refills at `rate` per second. A
  request costing `cost` needs `min(cost, rate)` tokens and takes `cost` (the bucket may go
  below zero), so a request larger than the burst still passes when the bucket is full, and the
  debt delays the next ones: the long-run rate holds. Refused: Retry-After is the time until
  the bucket holds what was needed (seconds, rounded up, at least 1).
- In flight: a key holding `held` texts may take `n` more while `held + n <= limit`, or when
  it holds none (a request larger than the limit runs alone). Refused: Retry-After 1.
- Either every limit of a check is taken or none is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from app.serving.errors import ServiceError


class RateLimited(ServiceError):
    """A key over one of its limits (429); `retry_after_s` becomes Retry-After."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s))


class TooManyInFlight(RateLimited):
    code = "too_many_in_flight"


LIMIT_NAMES = {"rps": "requests per second", "tps": "texts per second"}


@dataclass(frozen=True)
class Bucket:
    name: str  # "rps" | "tps": part of the state's key
    rate: float  # tokens per second (also the burst)
    cost: float


@dataclass(frozen=True)
class Ask:
    """One check: the buckets to take from and, optionally, texts to hold in flight."""

    tenant: str
    buckets: tuple[Bucket, ...] = ()
    inflight_limit: int | None = None
    inflight: int = 0


@dataclass
class Hold:
    """Texts held in flight until released (`member`: the Redis entry, None in process)."""

    tenant: str
    n: int
    member: str | None = None
    released: bool = False


def refused_bucket(bucket: Bucket, wait_s: float) -> RateLimited:
    what = LIMIT_NAMES.get(bucket.name, bucket.name)
    return RateLimited(
        f"this API key is over its limit of {bucket.rate:g} {what}; retry later",
        retry_after_s=math.ceil(wait_s),
    )


def refused_inflight(limit: int) -> TooManyInFlight:
    return TooManyInFlight(
        f"this API key has its limit of {limit} texts in flight; retry when some finish"
    )


def refill(tokens: float, elapsed_s: float, rate: float) -> float:
    return min(rate, tokens + max(elapsed_s, 0.0) * rate)


@dataclass
class LocalLimiter:
    """The limits of one process (one event loop: no locks needed)."""

    clock: Callable[[], float] = time.monotonic
    buckets: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)

    async def take(self, ask: Ask) -> Hold | None:
        return self.take_now(ask)

    def take_now(self, ask: Ask) -> Hold | None:
        now = self.clock()
        levels = []
        wait, short = 0.0, None
        for bucket in ask.buckets:
            tokens, last = self.buckets.get((ask.tenant, bucket.name), (bucket.rate, now))
            tokens = refill(tokens, now - last, bucket.rate)
            levels.append(tokens)
            need = min(bucket.cost, bucket.rate)
            if tokens < need and (need - tokens) / bucket.rate >= wait:
                wait, short = (need - tokens) / bucket.rate, bucket
        if short is not None:
            raise refused_bucket(short, wait)
        held = self.held.get(ask.tenant, 0)
        limit = ask.inflight_limit
        if limit is not None and held and held + ask.inflight > limit:
            raise refused_inflight(limit)
        for bucket, tokens in zip(ask.buckets, levels, strict=True):
            self.buckets[(ask.tenant, bucket.name)] = (tokens - bucket.cost, now)
        return self.hold(ask.tenant, ask.inflight) if ask.inflight else None

    def hold(self, tenant: str, n: int) -> Hold:
        """Count `n` more texts in flight for `tenant`, unchecked."""
        self.held[tenant] = self.held.get(tenant, 0) + n
        return Hold(tenant, n)

    async def release(self, hold: Hold) -> None:
        self.release_now(hold)

    def release_now(self, hold: Hold) -> None:
        if hold.released:
            return
        hold.released = True
        left = self.held.get(hold.tenant, 0) - hold.n
        if left > 0:
            self.held[hold.tenant] = left
        else:
            self.held.pop(hold.tenant, None)

    def holding(self, tenant: str) -> int:
        return self.held.get(tenant, 0)

    async def close(self) -> None:
        pass
