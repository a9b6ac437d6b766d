"""The web console: `/` (one HTML page) and its static files under `/console/`.

No key is needed to fetch the page: it asks for one and sends it to the API in the
Authorization header (never in a URL). Every response carries a Content-Security-Policy that
allows only our own scripts, styles and images (no inline code, no outside origin), and only
files that are in `app/console/` with a known suffix are served (no path ever reaches the disk).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.errors import error_response

router = APIRouter(include_in_schema=False)

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


@router.get("/")
def index() -> Response:
    return _file_response(CONSOLE_DIR / "index.html")


@router.get("/console/{name}")
def static_file(name: str) -> Response:
    path = console_files().get(name)
    if path is None:
        return error_response(404, "not_found", "no such console file")
    return _file_response(path)
