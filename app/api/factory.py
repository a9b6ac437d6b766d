"""The FastAPI app both servers build: `build_http_app` (the app, its state, the error handlers,
the routers, then the middleware after the last route), used by `app.main.create_app` and by
`create_ingress_app`, the HTTP app of the Ray Serve ingress (app.cluster).

The ingress serves the same API as one host for everything that reads or classifies: health,
readiness, metrics, `POST /classify`, `GET /adapters[/{name}[/archive]]`. The routes are the
ordinary ones (`app.api.classify`, ...); only the state differs: `batcher` sends each adapter's
part of a request to a replica (`app.cluster.router.ClusterBatcher`), `cache` is the replicas'
residency view and `engine` describes the base model the replicas serve. Admin writes (upload,
delete, load/unload) and training jobs stay on the ordinary API process: here they answer 405
with a message that says where to send them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from adapters_store import AdapterStore
from app.api import adapters, classify, pages
from app.api.errors import error_response, install_error_handlers
from app.api.guard import install_middleware
from app.config import Settings, StoreView
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
    limiter: Any = None,
    **fastapi_args: Any,
) -> FastAPI:
    """`routers` mounted in order, `add_routes(app)` after them; `state` set on `app.state`
    besides settings, metrics and keyring; `limiter` for the quotas instead of the backend's
    (an engine process's, app.procs); `fastapi_args` (title, lifespan, ...) to FastAPI."""
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
    install_middleware(app, settings, keyring, metrics, limiter)
    return app


WRITES = ["POST", "PUT", "PATCH", "DELETE"]
ELSEWHERE = (
    "admin writes and training jobs are served by the API process (python -m app), not by the "
    "Ray ingress; the replicas see new adapter versions through the shared store"
)


def read_only(router: APIRouter) -> APIRouter:
    """The GET routes of `router` (prefix included)."""
    reads = APIRouter()
    reads.routes.extend(
        r for r in router.routes if isinstance(r, APIRoute) and r.methods <= {"GET", "HEAD"}
    )
    return reads


async def _elsewhere(rest: str = "") -> Any:
    return error_response(405, "method_not_allowed", ELSEWHERE, {"Allow": "GET"})


def create_ingress_app(
    settings: Settings,
    *,
    batcher: Any,
    cache: Any,
    engine: Any,
    store: AdapterStore | None = None,
    extra: APIRouter | None = None,
) -> FastAPI:
    """The ingress app; `batcher`, `cache` and `engine` are the cluster's stand-ins."""

    def elsewhere_routes(app: FastAPI) -> None:
        for path in ("/adapters", "/adapters/{rest:path}"):
            app.add_api_route(path, _elsewhere, methods=WRITES, include_in_schema=False)
        for path in ("/train-jobs", "/train-jobs/{rest:path}"):
            app.add_api_route(path, _elsewhere, methods=["GET", *WRITES], include_in_schema=False)
        if extra is not None:
            app.include_router(extra)

    return build_http_app(
        settings,
        (pages.router, classify.router, read_only(adapters.router)),
        keyring=settings.keyring(),
        state={
            "engine": engine,
            "store": store or StoreView.of(settings).open(),
            "cache": cache,
            "batcher": batcher,
        },
        add_routes=elsewhere_routes,
        title="adapter-serve (Ray ingress)",
        summary="Many text-classification adapters on one frozen base model, on Ray Serve",
    )
