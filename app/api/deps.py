"""Dependencies as Annotated aliases: add a dependency (auth, rate limit) in one place.

Every dependency is `async def`: FastAPI runs a plain `def` dependency on the AnyIO thread pool,
a thread hop per dependency per request (the hot path's biggest avoidable cost, issue 19).
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.convertors import Convertor, register_url_convertor

from adapters_store import AdapterStore
from adapters_store import format as fmt
from app.api.errors import NotReady
from app.config import Settings
from app.inference.classifier import Classifier
from app.jobs.records import Job, JobNotFound
from app.metrics import Metrics
from app.security import KeyRing, Principal
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.engine import Engine
from app.tenancy import access
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
# Where app.api.edge.QuotaMiddleware leaves the app's quotas (app.tenancy.quotas.Quotas), for
# the inference routes' checks that need the body.
QUOTAS_KEY = "adapter_serve.quotas"

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
BatcherDep = Annotated[Batcher, Depends(get_batcher)]  # admin routes: load, unload, delete
# What the protocols see of it: the use case's Classifier (app.inference.classifier).
ClassifierDep = Annotated[Classifier, Depends(get_batcher)]
ClassifyAccess = Annotated[None, Depends(require_classify)]
DownloadAccess = Annotated[None, Depends(require_download)]
AdminAccess = Annotated[None, Depends(require_admin)]


# ---- adapter access over HTTP ----------------------------------------------------------------
# Adapter access per key over HTTP: the rule is app.tenancy.access's (a name outside the key's
# patterns does not exist for it); here the key is read off the request.
#
# Routes with an adapter in the path declare it `{name:adapter}` (the `adapter` path convertor,
# registered here: a name with at most one namespace level, whose second part is not a word the
# routes use after a name) and take one of the `*AdapterAccess` dependencies instead of the plain
# `*Access` one: it checks the key's scope (the same dependency) and then the name.
T = TypeVar("T")
JOB_SCAN = 1000  # a key with patterns: its jobs among this many newest


class AdapterName(Convertor[str]):
    """`{name:adapter}`: one path segment, or two when the second is not a route word (so that
    `/adapters/a/archive` is adapter `a`'s archive and `/adapters/a/b` adapter `a/b`). Invalid
    names still reach the route, which answers 422 as for any invalid name."""

    _leaf = "|".join(sorted(fmt.ROUTE_WORDS))
    regex = rf"[^/]+(?:/(?!(?:{_leaf})(?:/|$))[^/]+)?"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("adapter", AdapterName())  # before any route template uses it


def principal(request: Request) -> Principal | None:
    """The key of the request (set by its scope dependency); None on a server without keys."""
    return getattr(request.state, "principal", None)


def patterns(request: Request) -> tuple[str, ...] | None:
    """The key's adapter patterns; None when it may use every adapter."""
    return access.patterns_of(principal(request))


def may_use(request: Request, name: str) -> bool:
    return access.may_use(patterns(request), name)


def check_adapter(request: Request, name: str) -> str:
    """`name` when the request's key may use it (app.tenancy.access.check_adapter)."""
    return access.check_adapter(patterns(request), name)


def _path_adapter(request: Request) -> None:
    for param in ("name", "adapter"):
        if param in request.path_params:
            check_adapter(request, request.path_params[param])


async def _classify_adapter(request: Request, _: Annotated[None, Depends(require_classify)]):
    _path_adapter(request)


async def _download_adapter(request: Request, _: Annotated[None, Depends(require_download)]):
    _path_adapter(request)


async def _admin_adapter(request: Request, _: Annotated[None, Depends(require_admin)]):
    _path_adapter(request)


# The scope check of the route, then the adapter named in its path.
ClassifyAdapterAccess = Annotated[None, Depends(_classify_adapter)]
DownloadAdapterAccess = Annotated[None, Depends(_download_adapter)]
AdminAdapterAccess = Annotated[None, Depends(_admin_adapter)]


# ---- training jobs: a job is the key's when its adapter is -------------------------------
def check_job(request: Request, job: Job) -> Job:
    """The job, or the error of a missing job when the key may not see its adapter."""
    if not may_use(request, job.adapter_name):
        raise JobNotFound(f"training job {job.id!r} not found")
    return job


def visible_jobs(request: Request, jobs: list[Job], limit: int) -> list[Job]:
    return [job for job in jobs if may_use(request, job.adapter_name)][:limit]


def job_scan(request: Request, limit: int) -> int:
    """How many jobs to read for a page of `limit` (more when some may be filtered out)."""
    return limit if patterns(request) is None else max(limit, JOB_SCAN)
