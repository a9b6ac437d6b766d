"""Adapter access per key: a key with `adapters=` patterns sees only the adapters they cover.

The one rule, for every route and protocol: an adapter name the key's patterns do not cover does
not exist for that key. Reading it answers exactly what a missing adapter answers (404,
`adapter_not_found`, the same body), writing it (upload, hub import, a training job) answers the
same 404, listings leave it out, and a training job of it is a missing job. The decision depends
on the name and the key only, never on the store: a name the key may not see answers the same
whether it is stored or not, so nothing tells a key which adapters exist beyond its patterns. A
key without patterns, and a server without keys, see every adapter.

Routes with an adapter in the path declare it `{name:adapter}` (the `adapter` path convertor,
registered here: a name with at most one namespace level, whose second part is not a word the
routes use after a name) and take one of the `*AdapterAccess` dependencies instead of the plain
`*Access` one: it checks the key's scope (the same dependency) and then the name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from starlette.convertors import Convertor, register_url_convertor

from adapters_store import format as fmt
from adapters_store.patterns import matches
from adapters_store.routing import parse
from app.api.deps import require_admin, require_classify, require_download
from app.jobs.records import Job, JobNotFound
from app.security import Principal

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
    who = principal(request)
    return None if who is None else who.adapters


def may_use(request: Request, name: str) -> bool:
    allowed = patterns(request)
    return allowed is None or matches(allowed, name)


def check_adapter(request: Request, name: str) -> str:
    """`name` when the key may use it. For a key with patterns: InvalidName (422) for a
    malformed name, as the store answers it, and the store's own not-found error (404) for a
    name outside them. Without patterns nothing is checked here (the routes behave as before)."""
    allowed = patterns(request)
    if allowed is not None:
        bare, _ = parse(name)  # a version selector (name@3, name@prod) is the name's
        if not matches(allowed, bare):
            raise fmt.not_found(name)
    return name


def check_adapters(request: Request, names: Iterable[str]) -> None:
    """Each name in order (a multi-adapter request: the first one the key may not use)."""
    for name in names:
        check_adapter(request, name)


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
