"""Dependencies as Annotated aliases: add a dependency (auth, rate limit) in one place.

Every dependency is `async def`: FastAPI runs a plain `def` dependency on the AnyIO thread pool,
a thread hop per dependency per request (the hot path's biggest avoidable cost, issue 19).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters_store import AdapterStore
from app.api.errors import NotReady
from app.config import Settings
from app.metrics import Metrics
from app.security import KeyRing
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.engine import Engine
from app.tenancy.principal import PRINCIPAL_KEY


def _state(request: Request, name: str) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReady("the service is starting or stopping; retry shortly")
    return value


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_store(request: Request) -> AdapterStore:
    return _state(request, "store")


async def get_engine(request: Request) -> Engine:
    return _state(request, "engine")


async def get_cache(request: Request) -> AdapterCache:
    return _state(request, "cache")


async def get_batcher(request: Request) -> Batcher:
    return _state(request, "batcher")


bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key, needed when the server has keys configured (APP_API_KEYS).",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


# Where app.api.guard leaves the policy of the request's route (app.api.guard.Policy: scopes,
# body cap, error shape, ...); the principal it has authorized is under app.tenancy.principal's
# PRINCIPAL_KEY.
POLICY_KEY = "adapter_serve.policy"

# What a route's body is, declared as route metadata in its `openapi_extra` (an OpenAPI
# vendor extension) and read off the router's table by app.api.guard: an inference route's
# body is capped at APP_MAX_REQUEST_BYTES and its key checked for room in the queue before
# the body is read, an upload's at APP_MAX_UPLOAD_BYTES, any other route's at 1 MiB.
ROUTE_KIND = "x-route-kind"
INFERENCE_ROUTE = {ROUTE_KIND: "inference"}
UPLOAD_ROUTE = {ROUTE_KIND: "upload"}


def requirement(*scopes: str) -> Any:
    """A dependency that needs a key with any one of `scopes` (when keys are configured).

    The request guard (app.api.guard) reads `.scopes` off the route's dependencies and checks
    the key before the body is read; the dependency then only picks up its verdict (and checks
    the key itself where no guard runs).
    """
    wanted = frozenset(scopes)

    async def require(request: Request, credentials: BearerCredentials) -> None:
        if PRINCIPAL_KEY in request.scope:
            request.state.principal = request.scope[PRINCIPAL_KEY]
            return
        keyring: KeyRing = request.app.state.keyring
        header = f"Bearer {credentials.credentials}" if credentials else None
        request.state.principal = keyring.authorize(header, wanted)

    require.scopes = wanted  # type: ignore[attr-defined]
    return require


# Classify and read-only adapter routes; weights (downloads); changes, training, datasets.
require_classify = requirement("classify")
require_download = requirement("download", "admin")
require_admin = requirement("admin")


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[AdapterStore, Depends(get_store)]
EngineDep = Annotated[Engine, Depends(get_engine)]
CacheDep = Annotated[AdapterCache, Depends(get_cache)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
ClassifyAccess = Annotated[None, Depends(require_classify)]
DownloadAccess = Annotated[None, Depends(require_download)]
AdminAccess = Annotated[None, Depends(require_admin)]
