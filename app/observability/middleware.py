"""`RequestObserver`: the one pure-ASGI middleware that watches every HTTP request.

Per request it takes the client's `X-Request-Id` (or makes one), echoes it on the response,
makes the request's `RequestContext` current (for the log lines), starts the server span when
tracing is on, and when the request ends counts it in the Prometheus metrics (by method,
route template and status; per adapter for classifications) and writes the access line.
Everything that can be decided once (the logger, whether to trace, the metrics' label
children) is decided when the app's middleware stack is built or on first use.

It wraps the whole Starlette stack (`install_observer`), outside the error middleware, so
that a 500 from an unhandled error carries the request id too and its log line names it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from app.config.views import ObservabilityView
from app.metrics import METHODS, Metrics
from app.observability.context import SCOPE_KEY, RequestContext, current, request_id
from app.observability.logs import ACCESS_LOGGER, access_fields
from app.observability.tracing import Tracing

if TYPE_CHECKING:
    from fastapi import FastAPI

# FastAPI's own OpenTelemetry instrumentation (FastAPI >= 0.16x) asks the global providers on
# every request even when nothing is configured; our middleware makes the spans instead.
NATIVE_TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False}
REQUEST_ID_NAME = b"x-request-id"


class RequestObserver:
    def __init__(
        self, app: Any, *, metrics: Metrics, access_log: bool, tracing: Tracing | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing
        self.access = logging.getLogger(ACCESS_LOGGER) if access_log else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        context = RequestContext(request_id(scope["headers"]), scope)
        scope[SCOPE_KEY] = context
        echo = (REQUEST_ID_NAME, context.request_id.encode("ascii"))
        method = METHODS.get(scope["method"], "other")
        if self.tracing is not None:
            self.tracing.start(context, method, scope["headers"])

        async def observed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                context.status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        token = current.set(context)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self._finish(context, method, time.perf_counter() - started)
        # Reset on success only: after an unhandled error the server's own log line (in this
        # request's task, whose context ends with it) still names the request.
        current.reset(token)

    def _finish(self, context: RequestContext, method: str, seconds: float) -> None:
        scope = context.scope
        route = scope.get("route_template") or getattr(scope.get("route"), "path", "other")
        status = context.status
        self.metrics.observe_request(method, route, status, seconds)
        if context.adapters is not None:
            self.metrics.observe_adapters(context.adapters, context.texts, status, seconds)
        if self.tracing is not None:
            self.tracing.finish(context, method, route, context.started_ns + int(seconds * 1e9))
        if self.access is not None and self.access.isEnabledFor(logging.INFO):
            fields = access_fields(context, method, route, seconds)
            # No caller lookup (Logger.info walks the stack for it): one line per request.
            line = self.access.makeRecord(
                self.access.name,
                logging.INFO,
                __file__,
                0,
                "%s %s %d",
                (method, route, status),
                None,
                extra={"fields": fields},
            )
            self.access.handle(line)


def install_observer(app: FastAPI, settings: ObservabilityView, metrics: Metrics) -> None:
    """Wrap `app`'s middleware stack (built on its first call) in a `RequestObserver`; the
    tracing is `app.state.tracing` when set, else made from the settings (and kept there)."""
    tracing = getattr(app.state, "tracing", None) or Tracing.from_endpoint(settings.otlp_endpoint)
    app.state.tracing = tracing
    build = app.build_middleware_stack

    def build_observed() -> Any:
        return RequestObserver(
            build(), metrics=metrics, access_log=settings.access_log, tracing=tracing
        )

    app.build_middleware_stack = build_observed  # type: ignore[method-assign]
