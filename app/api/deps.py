"""Dependencies as Annotated aliases: add a dependency (auth, rate limit) in one place."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from adapters_store import AdapterStore
from app.adapter_cache import AdapterCache
from app.api.errors import NotReady
from app.batcher import Batcher
from app.config import Settings
from app.engine import Engine
from app.metrics import Metrics


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


async def require_classify() -> None:
    """Access check for classify and read-only adapter routes (no auth configured yet)."""


async def require_admin() -> None:
    """Access check for routes that change adapters (no auth configured yet)."""


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
StoreDep = Annotated[AdapterStore, Depends(get_store)]
EngineDep = Annotated[Engine, Depends(get_engine)]
CacheDep = Annotated[AdapterCache, Depends(get_cache)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
ClassifyAccess = Annotated[None, Depends(require_classify)]
AdminAccess = Annotated[None, Depends(require_admin)]
