"""Liveness, readiness and Prometheus metrics.

`GET /metrics` names adapters in its per-adapter series (`adapter_requests_total{adapter=..}`):
a key limited to some adapters (`adapters=` patterns, app/api/deps.py) sees the series of the
adapters its patterns cover only, not the `other` series nor another team's; a key without
patterns, and a server without keys, see every series.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from adapters_store.patterns import matches
from app.api.deps import ClassifyAccess, MetricsDep, patterns
from app.api.errors import error_responses
from app.inference.service import check_ready
from app.metrics_top import OTHER
from app.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses=error_responses(503),
    summary="The base model is loaded and the batcher runs",
)
async def readyz(request: Request) -> Health:
    state = request.app.state
    engine = getattr(state, "engine", None)  # the details below: ready only with it too
    check_ready(None if engine is None else getattr(state, "batcher", None))
    return Health(
        status="ready",
        details={
            "base_model": engine.base_ref.id,
            "fingerprint": engine.base_ref.fingerprint,
            "device": str(engine.device),
            "dtype": str(engine.dtype).removeprefix("torch."),
            "max_length": engine.max_length,
        },
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request, metrics: MetricsDep, _access: ClassifyAccess) -> Response:
    allowed = patterns(request)
    if allowed is None:
        return Response(metrics.render(), media_type=metrics.content_type)

    def visible(adapter: str) -> bool:  # `other` sums other teams' traffic too
        return adapter != OTHER and matches(allowed, adapter)

    return Response(metrics.render(visible), media_type=metrics.content_type)
