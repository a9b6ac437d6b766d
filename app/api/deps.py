"""Dependencies as Annotated aliases: add a dependency (auth, rate limit) in one place."""

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


def _state(request: Request, name: str) -> Any:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise NotReady("the service is starting or stopping; retry shortly")
    return value


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_store(request: Request) -> AdapterStore:
    return _state(request, "store")


def get_engine(request: Request) -> Engine:
    return _state(request, "engine")


def get_cache(request: Request) -> AdapterCache:
    return _state(request, "cache")


def get_batcher(request: Request) -> Batcher:
    return _state(request, "batcher")


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key, needed when the server has keys configured (APP_API_KEYS).",
)
BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _authorize(request: Request, credentials: HTTPAuthorizationCredentials | None, scope: str):
    keyring: KeyRing = request.app.state.keyring
    header = f"Bearer {credentials.credentials}" if credentials else None
    request.state.principal = keyring.authorize(header, scope)


async def require_classify(request: Request, credentials: BearerCredentials) -> None:
    """Classify and read-only adapter routes: a key with the `classify` scope (if keys are set)."""
    _authorize(request, credentials, "classify")


async def require_admin(request: Request, credentials: BearerCredentials) -> None:
    """Routes that change adapters, and training jobs: a key with the `admin` scope."""
    _authorize(request, credentials, "admin")


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[AdapterStore, Depends(get_store)]
EngineDep = Annotated[Engine, Depends(get_engine)]
CacheDep = Annotated[AdapterCache, Depends(get_cache)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
ClassifyAccess = Annotated[None, Depends(require_classify)]
AdminAccess = Annotated[None, Depends(require_admin)]
