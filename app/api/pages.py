"""The service's own pages: liveness, readiness, Prometheus metrics (`router`), and the web
console, `/` (one HTML page) and its static files under `/console/` (`console_router`).

`GET /metrics` names adapters in its per-adapter series (`adapter_requests_total{adapter=..}`):
a key limited to some adapters (`adapters=` patterns, app/api/deps.py) sees the series of the
adapters its patterns cover only, not the `other` series nor another team's; a key without
patterns, and a server without keys, see every series.

No key is needed to fetch the console's page: it asks for one and sends it to the API in the
Authorization header (never in a URL). Every console response carries a Content-Security-Policy
that allows only our own scripts, styles and images (no inline code, no outside origin), and
only files that are in `app/console/` with a known suffix are served (no path reaches the disk).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response

from adapters_store.patterns import matches
from app.api.deps import ClassifyAccess, MetricsDep, patterns
from app.api.errors import error_response, error_responses
from app.inference.service import check_ready
from app.metrics import OTHER
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


console_router = APIRouter(include_in_schema=False)

CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
FILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*\.(js|css|svg)$")
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


@cache
def console_files() -> dict[str, Path]:
    """The servable files by name (read once, on first request)."""
    if not CONSOLE_DIR.is_dir():
        return {}
    return {p.name: p for p in CONSOLE_DIR.iterdir() if p.is_file() and FILE_NAME.match(p.name)}


def _file_response(path: Path) -> Response:
    media_type = MEDIA_TYPES[path.suffix]
    return Response(path.read_bytes(), media_type=media_type, headers=SECURITY_HEADERS)


@console_router.get("/")
def index() -> Response:
    return _file_response(CONSOLE_DIR / "index.html")


@console_router.get("/console/{name}")
def static_file(name: str) -> Response:
    path = console_files().get(name)
    if path is None:
        return error_response(404, "not_found", "no such console file")
    return _file_response(path)
