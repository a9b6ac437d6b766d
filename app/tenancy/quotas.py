"""Per-key quotas and the key's share of the queue, answered with 429 and Retry-After. No HTTP.

Two checks, each one call to the limiter (app/tenancy/limiter.py in process,
app/tenancy/limiter_redis.py when `APP_REDIS_URL` is set, shared by every API process):

- requests per second (`rps=`), by app.api.edge.QuotaMiddleware right after the request
  guard has found the key, before the body is read; it counts every request of the key on a
  route that needs a key;
- texts per second (`tps=`) and texts in flight (`inflight=`), by `admitted` around the
  classifier call of app.inference (every protocol), when the texts are known: a text counts
  once per adapter it is classified with. The texts stay held until the request ends,
  succeeded, failed or abandoned by its client.

A key without an option of its own gets the default (`APP_DEFAULT_KEY_RPS`, `_TPS`,
`_INFLIGHT`; unset: unlimited). Besides its quota, a key may hold at most
`APP_KEY_QUEUE_SHARE` of `APP_MAX_QUEUE` texts in the queue (`QueueShare`), so a flooding key
meets its own 429 before the shared queue is full (503 for everyone). The queue is the
engine's: in one process `Quotas` counts the share; behind an engine process (app.procs) the
engine counts it too, across every API process (each API process's own count is a part of it:
it refuses early, before the body, never later than the engine). Without API keys there is one
tenant and none of this applies (the queue's 503 as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from app.config import LimiterView, Settings
from app.metrics import Metrics
from app.security import KeyLimits, Principal
from app.tenancy.limiter import (
    Ask,
    Bucket,
    Hold,
    LocalLimiter,
    RateLimited,
    TooManyInFlight,
    refused_inflight,
)

LEASE_MARGIN_S = 30.0  # a hold outlives the request timeout by this much before it lapses


def build_limiter(view: LimiterView) -> Any:
    """The per-key limiter of the backend chosen once (`BackendView`): in process for sqlite
    (one process), in Redis (shared by every API process) for redis."""
    if view.backend.kind == "sqlite":
        return LocalLimiter()
    from app.tenancy.limiter_redis import RedisLimiter

    return RedisLimiter(str(view.backend.redis_url), lease_s=view.lease_s)


class QueueShare:
    """A key's share of the queue: `share` texts in flight (a key that holds none may always
    start one request, so one larger than the share runs alone)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.share = max(1, math.floor(settings.key_queue_share * settings.max_queue))
        self.metrics = metrics
        self.counts = LocalLimiter()

    def full(self, tenant: str) -> bool:
        return self.counts.holding(tenant) >= self.share

    def take(self, tenant: str, n: int) -> Hold:
        """Hold `n` texts of `tenant` (TooManyInFlight, counted, when over the share)."""
        held = self.counts.holding(tenant)
        if held and held + n > self.share:
            raise self.refused()
        return self.counts.hold(tenant, n)

    def release(self, hold: Hold) -> None:
        self.counts.release_now(hold)

    def refused(self) -> TooManyInFlight:
        if self.metrics is not None:
            self.metrics.rejected.labels("rate_limited").inc()
        return TooManyInFlight(
            f"this API key holds its share of the queue ({self.share} texts); retry when some "
            "finish"
        )

    @contextlib.contextmanager
    def held(self, tenant: str | None, n: int) -> Iterator[None]:
        """Around the queue's work for `tenant`'s `n` texts (no-op without keys)."""
        hold = None if tenant is None else self.take(tenant, n)
        try:
            yield
        finally:
            if hold is not None:
                self.release(hold)


class Quotas:
    """The limits of one app: the limiter, the defaults, the queue share."""

    def __init__(
        self, settings: Settings, metrics: Metrics | None = None, *, limiter: Any = None
    ) -> None:
        """`limiter`: one of the same interface to use instead (an engine process's, app.procs)."""
        self.defaults = KeyLimits(
            rps=settings.default_key_rps,
            tps=settings.default_key_tps,
            inflight=settings.default_key_inflight,
        )
        self.queue = QueueShare(settings, metrics)  # this process's part of the queue
        self.delay_s = settings.quota_refusal_delay_s
        self.metrics = metrics
        self.limiter: Any = limiter or build_limiter(
            LimiterView.of(settings, margin_s=LEASE_MARGIN_S)
        )

    def limits(self, principal: Principal) -> KeyLimits:
        own, default = principal.limits, self.defaults
        return KeyLimits(
            rps=own.rps if own.rps is not None else default.rps,
            tps=own.tps if own.tps is not None else default.tps,
            inflight=own.inflight if own.inflight is not None else default.inflight,
        )

    async def check_request(self, principal: Principal) -> None:
        """Take one request from the key's requests/s bucket (RateLimited when empty)."""
        rps = self.limits(principal).rps
        if rps is not None:
            await self._take(Ask(principal.key_id, (Bucket("rps", rps, 1),)))

    def check_room(self, principal: Principal) -> None:
        """Refuse a key that holds its share of the queue or its texts in flight already (in
        this process; a Redis-shared in-flight limit is checked with the texts)."""
        tenant = principal.key_id
        if self.queue.full(tenant):
            raise self.queue.refused()
        inflight = self.limits(principal).inflight
        local = self.limiter if isinstance(self.limiter, LocalLimiter) else None
        if inflight is not None and local is not None and local.holding(tenant) >= inflight:
            self._count()
            raise refused_inflight(inflight)

    @contextlib.asynccontextmanager
    async def texts(self, principal: Principal, n: int) -> AsyncIterator[None]:
        """Hold `n` texts of the key while the body runs (RateLimited when over a limit, also
        when the body raises it: an engine process's share; answered after the pause, with
        nothing held meanwhile)."""
        try:
            with self.queue.held(principal.key_id, n):
                hold = await self._take_texts(principal, n)
                try:
                    yield
                finally:
                    if hold is not None:
                        await asyncio.shield(self.limiter.release(hold))
        except RateLimited as exc:
            await self.pause(exc)
            raise

    async def _take_texts(self, principal: Principal, n: int) -> Hold | None:
        limits = self.limits(principal)
        if limits.tps is None and limits.inflight is None:
            return None
        buckets = (Bucket("tps", limits.tps, n),) if limits.tps is not None else ()
        in_flight = n if limits.inflight is not None else 0
        return await self._take(Ask(principal.key_id, buckets, limits.inflight, in_flight))

    async def _take(self, ask: Ask) -> Any:
        try:
            return await self.limiter.take(ask)
        except RateLimited:
            self._count()
            raise

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels("rate_limited").inc()

    async def pause(self, exc: RateLimited) -> None:
        """Wait before a refusal is answered: a client retrying at once then costs one
        request per pause, not a busy loop (the wait costs no CPU)."""
        if self.delay_s > 0:
            await asyncio.sleep(min(self.delay_s, exc.retry_after_s))

    async def close(self) -> None:
        await self.limiter.close()


@contextlib.asynccontextmanager
async def admitted(
    quotas: Quotas | None, principal: Principal | None, n: int
) -> AsyncIterator[None]:
    """Around a classification of `n` texts x adapters: the key's quotas (no-op without keys)."""
    if quotas is None or principal is None:
        yield
        return
    async with quotas.texts(principal, n):
        yield
