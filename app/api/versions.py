"""Versions, aliases and traffic splits of an adapter over HTTP (admin), and the resolution of a
request's selectors (`name`, `name@3`, `name@prod`) to the version that serves it.

Every classify route resolves its adapters here before the batcher (`resolve_selectors`): the
batcher sees a bare name (the latest, when no split is set) or an immutable `name@N`, so an entry
in the serving cache never changes meaning. A move of an alias or a change of the split is a
rewrite of a small file in the store, read (one stat) by the next request of any process: a
rollback is instant and re-uploads nothing. `X-Routing-Key` makes the split sticky: requests with
the same key get the same version while the split is unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from adapters_store import AdapterNotFound, AdapterStore
from adapters_store import format as fmt
from adapters_store.routing import Routes
from app.api.access import AdminAdapterAccess
from app.api.deps import StoreDep
from app.api.errors import error_responses
from app.serving.passes import Classified

router = APIRouter(prefix="/adapters", tags=["versions"])
ROUTING_HEADER = "x-routing-key"
MAX_KEY_CHARS = 256  # longer keys are cut: the hash of the first 256 characters decides
ERRORS = error_responses(401, 403, 404, 409, 422)


# ---- resolution (every classify route) ---------------------------------------------------------
def resolve_selectors(request: Request, adapters: Sequence[str]) -> list[str]:
    """What the batcher should serve for each requested selector (StoreError when unknown)."""
    store: AdapterStore = request.app.state.store
    key = request.headers.get(ROUTING_HEADER)
    key = key[:MAX_KEY_CHARS] if key else None
    return [store.versions.resolve(selector, key) for selector in adapters]


def as_requested(result: Classified, adapters: Sequence[str]) -> Classified:
    """The results named as the client asked (`version` says which version answered)."""
    results = [
        dataclasses.replace(r, adapter=a) for r, a in zip(result.results, adapters, strict=True)
    ]
    return dataclasses.replace(result, results=results)


# ---- the API ---------------------------------------------------------------------------------
class VersionInfo(BaseModel):
    version: int
    created_at: str
    source: str
    size_bytes: int
    metrics: dict[str, float]
    aliases: list[str] = Field(description="the aliases that point at this version")
    share: float = Field(description="its share of the bare name's traffic (0-1)")


class SplitEntry(BaseModel):
    target: str = Field(description="a version number or an alias")
    version: int | None = Field(description="the version it points at now")
    weight: int
    share: float


class VersionsResponse(BaseModel):
    name: str
    latest: int
    keep: int = Field(description="versions kept besides those an alias or the split uses")
    versions: list[VersionInfo] = Field(description="newest first")
    aliases: dict[str, int]
    split: list[SplitEntry] = Field(description="empty: the bare name serves the latest")


class AliasRequest(BaseModel):
    version: int = Field(ge=1, description="the version the alias points at from now on")


class SplitRequest(BaseModel):
    weights: dict[str, int] = Field(
        description='target (version number or alias) -> weight, e.g. {"3": 90, "4": 10}',
        examples=[{"3": 90, "4": 10}],
    )


def _describe(store: AdapterStore, name: str) -> VersionsResponse:
    described = store.versions.describe(fmt.validate_name(name))
    routes: Routes = described["routes"]
    latest: fmt.Manifest = described["latest"]
    shares = _shares(name, routes, latest.version)
    split = [
        SplitEntry(
            target=target,
            version=_version_or_none(routes, name, target),
            weight=weight,
            share=weight / sum(w for _, w in routes.split),
        )
        for target, weight in routes.split
    ]
    versions = [
        VersionInfo(
            version=m.version,
            created_at=m.created_at,
            source=m.source,
            size_bytes=m.size_bytes,
            metrics=m.metrics,
            aliases=sorted(a for a, v in routes.aliases.items() if v == m.version),
            share=shares.get(m.version, 0.0),
        )
        for m in described["manifests"]
    ]
    return VersionsResponse(
        name=name,
        latest=latest.version,
        keep=described["keep"],
        versions=versions,
        aliases=routes.aliases,
        split=split,
    )


def _version_or_none(routes: Routes, name: str, target: str) -> int | None:
    try:
        return routes.version_of(name, target)
    except AdapterNotFound:  # an alias removed by hand behind the split's back
        return None


def _shares(name: str, routes: Routes, latest: int) -> dict[int, float]:
    if not routes.split:
        return {latest: 1.0}
    total = sum(w for _, w in routes.split)
    shares: dict[int, float] = {}
    for target, weight in routes.split:
        version = _version_or_none(routes, name, target)
        if version is not None:
            shares[version] = shares.get(version, 0.0) + weight / total
    return shares


@router.get(
    "/{name:path}/versions",
    response_model=VersionsResponse,
    responses=ERRORS,
    summary="The versions kept of an adapter, its aliases and its traffic split",
)
def list_versions(name: str, store: StoreDep, _access: AdminAdapterAccess) -> VersionsResponse:
    return _describe(store, name)


@router.delete(
    "/{name:path}/versions/{version}",
    response_model=VersionsResponse,
    responses=ERRORS,
    summary="Remove one kept version (not the latest, nor one an alias or the split uses)",
)
def delete_version(
    name: str, version: int, store: StoreDep, _access: AdminAdapterAccess
) -> VersionsResponse:
    store.versions.delete_version(fmt.validate_name(name), version)
    return _describe(store, name)


@router.put(
    "/{name:path}/aliases/{alias}",
    response_model=VersionsResponse,
    responses=ERRORS,
    summary="Point an alias (name@alias) at a version: create it or move it (a rollback)",
)
def set_alias(
    name: str, alias: str, body: AliasRequest, store: StoreDep, _access: AdminAdapterAccess
) -> VersionsResponse:
    store.versions.set_alias(fmt.validate_name(name), alias, body.version)
    return _describe(store, name)


@router.delete(
    "/{name:path}/aliases/{alias}",
    response_model=VersionsResponse,
    responses=ERRORS,
    summary="Remove an alias (not one the split uses)",
)
def delete_alias(
    name: str, alias: str, store: StoreDep, _access: AdminAdapterAccess
) -> VersionsResponse:
    store.versions.delete_alias(fmt.validate_name(name), alias)
    return _describe(store, name)


@router.put(
    "/{name:path}/split",
    response_model=VersionsResponse,
    responses=ERRORS,
    summary="Split the bare name's traffic between versions or aliases by weight",
)
def set_split(
    name: str, body: SplitRequest, store: StoreDep, _access: AdminAdapterAccess
) -> VersionsResponse:
    store.versions.set_split(fmt.validate_name(name), list(body.weights.items()))
    return _describe(store, name)


@router.delete(
    "/{name:path}/split",
    response_model=VersionsResponse,
    responses=ERRORS,
    summary="Clear the split: the bare name serves the latest version again",
)
def clear_split(name: str, store: StoreDep, _access: AdminAdapterAccess) -> VersionsResponse:
    store.versions.clear_split(fmt.validate_name(name))
    return _describe(store, name)
