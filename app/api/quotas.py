"""Per-key quotas over HTTP: the checks that need no body, in ASGI before it is read, and the
429 in the route's error shape. The quotas themselves (requests/s, texts/s, texts in flight,
the key's share of the queue) are app.tenancy.quotas's.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from app.api.deps import POLICY_KEY
from app.api.errors import domain_error_response
from app.config import Settings
from app.metrics import Metrics
from app.tenancy.limiter import RateLimited
from app.tenancy.principal import PRINCIPAL_KEY
from app.tenancy.quotas import Quotas

QUOTAS_KEY = "adapter_serve.quotas"
DRAIN_BYTES = 64 * 1024  # a refused request's body up to this is read, keeping the connection


class QuotaMiddleware:
    """Pure ASGI, inside the request guard: the checks that need no body, before it is read.

    Requests/s on every route that needs a key; on the inference routes (the route policy the
    guard found) also a key already at its texts in flight or its share of the queue, which
    would be refused whatever the body holds: a flood's refusals then cost no body parsing.
    """

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
                    if getattr(scope.get(POLICY_KEY), "inference", False):
                        self.quotas.check_room(principal)
                except RateLimited as exc:
                    keep_alive = await drained(scope, receive)
                    await self.quotas.pause(exc)
                    await refusal(scope, exc, keep_alive)(scope, receive, send)
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


async def drained(scope: dict, receive: Any) -> bool:
    """Read and drop a small body (the connection can then stay open); False when it is big
    or chunked: the answer closes the connection instead of reading it."""
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length", b"0")
    if b"transfer-encoding" in headers or not declared.isdigit() or int(declared) > DRAIN_BYTES:
        return False
    more = int(declared) > 0
    while more:
        message = await receive()
        more = message["type"] == "http.request" and message.get("more_body", False)
    return True


def refusal(scope: dict, exc: RateLimited, keep_alive: bool = False) -> JSONResponse:
    """The 429 in the route's error shape."""
    headers = {} if keep_alive else {"Connection": "close"}
    if getattr(scope.get(POLICY_KEY), "oip", False):  # the Open Inference Protocol's
        headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse({"error": exc.message}, status_code=429, headers=headers)
    return domain_error_response(exc, headers)
