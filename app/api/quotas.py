"""Per-key quotas and the key's share of the queue, answered with 429 and Retry-After.

Two checks, each one call to the limiter (app/api/limiter.py in process, app/api/limiter_redis.py
when `APP_REDIS_URL` is set, shared by every API process):

- requests per second (`rps=`), by `QuotaMiddleware` right after the request guard has found
  the key, before the body is read; it counts every request of the key on a route that needs
  a key;
- texts per second (`tps=`) and texts in flight (`inflight=`), by `admitted` around the
  batcher call of every classification protocol, when the texts are known: a text counts
  once per adapter it is classified with. The texts stay held until the request ends,
  succeeded, failed or abandoned by its client.

A key without an option of its own gets the default (`APP_DEFAULT_KEY_RPS`, `_TPS`,
`_INFLIGHT`; unset: unlimited). Besides its quota, a key may hold at most
`APP_KEY_QUEUE_SHARE` of `APP_MAX_QUEUE` texts in flight in one process, so a flooding key
meets its own 429 before the shared queue is full (503 for everyone). Without API keys there
is one tenant and none of this applies (the queue's 503 as before).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from app.api.deps import PRINCIPAL_KEY
from app.api.errors import domain_error_response
from app.api.limiter import Ask, Bucket, LocalLimiter, RateLimited, TooManyInFlight
from app.config import Settings
from app.metrics import Metrics
from app.security import KeyLimits, Principal

QUOTAS_KEY = "adapter_serve.quotas"
LEASE_MARGIN_S = 30.0  # a hold outlives the request timeout by this much before it lapses


class Quotas:
    """The limits of one app: the limiter, the defaults, the queue share."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.defaults = KeyLimits(
            rps=settings.default_key_rps,
            tps=settings.default_key_tps,
            inflight=settings.default_key_inflight,
        )
        self.share = max(1, math.floor(settings.key_queue_share * settings.max_queue))
        self.metrics = metrics
        self.local = LocalLimiter()  # the queue share: this process's own queue
        self.limiter: Any = LocalLimiter()
        if settings.redis_url:
            from app.api.limiter_redis import RedisLimiter

            lease_s = settings.request_timeout_s + LEASE_MARGIN_S
            self.limiter = RedisLimiter(settings.redis_url, lease_s=lease_s)

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

    @contextlib.asynccontextmanager
    async def texts(self, principal: Principal, n: int) -> AsyncIterator[None]:
        """Hold `n` texts of the key while the body runs (RateLimited when over a limit)."""
        tenant, limits = principal.key_id, self.limits(principal)
        held = self.local.holding(tenant)
        if held and held + n > self.share:
            self._count()
            raise TooManyInFlight(
                f"this API key holds its share of the queue ({self.share} texts); retry when "
                "some finish"
            )
        share = self.local.take_now(Ask(tenant, inflight=n))
        try:
            hold = None
            if limits.tps is not None or limits.inflight is not None:
                buckets = (Bucket("tps", limits.tps, n),) if limits.tps is not None else ()
                in_flight = n if limits.inflight is not None else 0
                hold = await self._take(Ask(tenant, buckets, limits.inflight, in_flight))
            try:
                yield
            finally:
                if hold is not None:
                    await asyncio.shield(self.limiter.release(hold))
        finally:
            if share is not None:
                self.local.release_now(share)

    async def _take(self, ask: Ask) -> Any:
        try:
            return await self.limiter.take(ask)
        except RateLimited:
            self._count()
            raise

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels("rate_limited").inc()

    async def close(self) -> None:
        await self.limiter.close()


@contextlib.asynccontextmanager
async def admitted(request: Request, n: int) -> AsyncIterator[None]:
    """Around a classification of `n` texts x adapters: the key's quotas (no-op without keys)."""
    quotas: Quotas | None = request.scope.get(QUOTAS_KEY)
    principal: Principal | None = request.scope.get(PRINCIPAL_KEY)
    if quotas is None or principal is None:
        yield
        return
    async with quotas.texts(principal, n):
        yield


def tenant(request: Request) -> str | None:
    """Whose request, for the batcher's fair share: the key's id (None without keys)."""
    principal = request.scope.get(PRINCIPAL_KEY)
    return principal.key_id if principal is not None else None


class QuotaMiddleware:
    """Pure ASGI, inside the request guard: the requests/s check before the body is read."""

    def __init__(self, app: Any, *, settings: Settings, metrics: Metrics | None = None) -> None:
        self.app = app
        self.quotas = Quotas(settings, metrics)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[QUOTAS_KEY] = self.quotas
            principal = scope.get(PRINCIPAL_KEY)
            if principal is not None:
                try:
                    await self.quotas.check_request(principal)
                except RateLimited as exc:
                    await refusal(scope, exc)(scope, receive, send)
                    return
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: dict, receive: Any, send: Any) -> None:
        async def sent(message: dict) -> None:
            if message["type"].startswith("lifespan.shutdown"):
                await self.quotas.close()
            await send(message)

        await self.app(scope, receive, sent)


def refusal(scope: dict, exc: RateLimited) -> JSONResponse:
    """The 429 in the route's error shape; the connection closes (the body was not read)."""
    headers = {"Connection": "close"}
    if scope.get("route_template", "").startswith("/v2"):  # the Open Inference Protocol's
        headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse({"error": exc.message}, status_code=429, headers=headers)
    return domain_error_response(exc, headers)
