"""The request guard's route table: every route of the app has its own policy, computed once."""

from __future__ import annotations

import re

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
        assert policy.oip == template.startswith("/v2")


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
