"""The FastAPI app both servers build (`app.main.create_app`, the Ray ingress): the app, its
state, the error handlers, the routers, then the middleware (after the last route)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI

from app.api.errors import install_error_handlers
from app.api.guard import install_middleware
from app.config import Settings
from app.metrics import Metrics
from app.observability.middleware import NATIVE_TELEMETRY_OFF
from app.security import KeyRing


def build_http_app(
    settings: Settings,
    routers: Iterable[APIRouter],
    *,
    keyring: KeyRing,
    state: dict[str, Any],
    add_routes: Callable[[FastAPI], None] | None = None,
    **fastapi_args: Any,
) -> FastAPI:
    """`routers` mounted in order, `add_routes(app)` after them; `state` set on `app.state`
    besides settings, metrics and keyring; `fastapi_args` (title, lifespan, ...) to FastAPI."""
    metrics = Metrics(top_adapters=settings.metrics_top_adapters)
    app = FastAPI(version="0.1.0", telemetry=NATIVE_TELEMETRY_OFF, **fastapi_args)
    app.state.settings, app.state.metrics = settings, metrics
    for name, value in state.items():
        setattr(app.state, name, value)
    app.state.keyring = keyring
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    if add_routes is not None:
        add_routes(app)
    install_middleware(app, settings, keyring, metrics)
    return app
