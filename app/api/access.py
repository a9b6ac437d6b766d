"""Adapter access per key over HTTP: the rule is app.tenancy.access's (a name outside the key's
patterns does not exist for it); here the key is read off the request.

Routes with an adapter in the path declare it `{name:adapter}` (the `adapter` path convertor,
registered here: a name with at most one namespace level, whose second part is not a word the
routes use after a name) and take one of the `*AdapterAccess` dependencies instead of the plain
`*Access` one: it checks the key's scope (the same dependency) and then the name.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from starlette.convertors import Convertor, register_url_convertor

from adapters_store import format as fmt
from app.api.deps import require_admin, require_classify, require_download
from app.jobs.records import Job, JobNotFound
from app.security import Principal
from app.tenancy import access

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
