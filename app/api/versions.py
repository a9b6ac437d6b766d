"""Versions, aliases and traffic splits of an adapter over HTTP (admin). How a request's
selectors (`name`, `name@3`, `name@prod`) resolve to the version that serves it is
app.inference.versions's; a client makes a split sticky with `X-Routing-Key`.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from adapters_store import AdapterNotFound, AdapterStore
from adapters_store import format as fmt
from adapters_store.routing import Routes
from app.api.deps import AdminAdapterAccess, StoreDep
from app.api.errors import error_responses

router = APIRouter(prefix="/adapters", tags=["versions"])
ERRORS = error_responses(401, 403, 404, 409, 422)


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
