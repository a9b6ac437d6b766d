"""The request guard's route table: every route of the app has its own policy, computed once."""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import quote, unquote

import pytest

from app.api.guard import RouteTable, flat_routes, host_name
from app.config import Settings
from app.main import create_app

OPEN = {
    "/",
    "/console/{name}",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
    "/healthz",
    "/readyz",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
}
INFERENCE = {
    "/classify",
    "/models/{adapter}",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
}


@pytest.fixture(scope="module")
def app_and_table(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("guard"), max_request_bytes=12345)
    app = create_app(settings)
    return app, RouteTable(app.routes, settings)


def _example(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def test_every_route_has_its_policy(app_and_table):
    app, table = app_and_table
    routes = [(m, r.path_format) for r in flat_routes(app.routes) for m in r.methods or ()]
    assert len(routes) >= 35
    for method, template in routes:
        policy = table.lookup(method, _example(template))
        assert policy.template == template, (method, template, policy)
        assert (policy.scopes is None) == (template in OPEN), (method, template, policy)
        if method == "POST" and template in INFERENCE:
            assert policy.body_limit == 12345
        assert policy.inference == (method == "POST" and template in INFERENCE)
        assert policy.oip == template.startswith("/v2")  # read off the route class


def test_scopes_of_the_sensitive_routes(app_and_table):
    _, table = app_and_table
    assert table.lookup("GET", "/adapters/a/archive").scopes == {"download", "admin"}
    for method, path in [
        ("POST", "/adapters"),
        ("POST", "/adapters/import"),
        ("GET", "/datasets"),
        ("GET", "/datasets/file"),
        ("GET", "/train-jobs"),
        ("DELETE", "/adapters/a"),
    ]:
        assert table.lookup(method, path).scopes == {"admin"}, path
    for method, path in [("POST", "/models/a"), ("GET", "/v2/models/a"), ("GET", "/metrics")]:
        assert table.lookup(method, path).scopes == {"classify"}, path
    assert table.lookup("POST", "/adapters").body_limit == Settings().max_upload_bytes
    assert table.lookup("POST", "/train-jobs").body_limit == 1 << 20
    assert table.lookup("BREW", "/classify").template == "other"
    assert table.lookup("GET", "/no/such/route").template == "other"


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("127.0.0.1:8000", "127.0.0.1"),
        ("LocalHost", "localhost"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("evil.example:80", "evil.example"),
        ("", ""),
    ],
)
def test_host_name(value, name):
    assert host_name(value) == name


# ---- the guard and the router agree on every path ------------------------------------------
SUFFIXES = ["%0A", "%0D", "%00", "%09", "/", ";x"]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _variants(template: str) -> list[str]:
    """The route's example path, with each suffix (decoded, as the router sees it) at its end
    and after each path parameter."""
    example = _example(template)
    decoded = [unquote(s) for s in SUFFIXES]
    paths = [example] + [example + s for s in decoded]
    for match in re.finditer(r"\{[^}]+\}", template):
        head, tail = _example(template[: match.end()]), _example(template[match.end() :])
        paths += [head + s + tail for s in decoded]
    return paths


def _router_templates(app, requests: list[tuple[str, str]]) -> list[str]:
    """The template of the route whose endpoint the app's router runs for each (method, path),
    "other" when none does (no match, a 405, a trailing-slash redirect): the router itself
    decides, run on a scope without the middleware (handlers stop at once without it)."""
    contexts = flat_routes(app.routes)
    by_route = {id(getattr(r, "original_route", r)): r for r in contexts}
    by_endpoint = {r.endpoint: r for r in contexts}

    async def pick(method: str, path: str) -> str:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "server": ("testserver", 80),
            "client": ("127.0.0.1", 1),
            "path": path,
            "raw_path": quote(path).encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "app": app,
        }

        async def receive() -> dict:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict) -> None:
            pass

        with contextlib.suppress(Exception):
            await app.router(scope, receive, send)
        route = by_route.get(id(scope.get("route"))) or by_endpoint.get(scope.get("endpoint"))
        if route is None or method not in route.methods:
            return "other"
        return route.path_format

    async def picks() -> list[str]:
        return [await pick(method, path) for method, path in requests]

    return asyncio.run(picks())


def test_the_guard_and_the_router_agree_on_every_path(app_and_table):
    """Every route, every method, with %0A %0D %00 %09 / ;x after the path and after each path
    parameter: the guard's route is the one the router runs (or both know none). The guard
    matches with the router's own regexes in its order, so a trailing newline (which `$`
    matches before) names the same route for both; app.api.guard then refuses such paths."""
    app, table = app_and_table
    templates = {r.path_format for r in flat_routes(app.routes)}
    requests = [(m, p) for t in sorted(templates) for p in _variants(t) for m in METHODS]
    routed = _router_templates(app, requests)
    disagree = [
        (method, path, table.lookup(method, path).template, router)
        for (method, path), router in zip(requests, routed, strict=True)
        if table.lookup(method, path).template != router
    ]
    assert not disagree, disagree[:10]
    assert len(requests) > 2000
    # The router does run a real route for a path ending in a newline; the guard knows it.
    assert table.lookup("GET", "/datasets\n").template == "/datasets"
    assert sum(r != "other" for r in routed) > 100
