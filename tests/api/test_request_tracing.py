"""Following a request in-process: X-Request-Id, log lines that name it, spans, metric labels.

The real app (TestClient runs its lifespan); spans go to the OpenTelemetry SDK's in-memory
exporter through the same `Tracing` the server uses with APP_OTLP_ENDPOINT.
"""

from __future__ import annotations

import hashlib
import logging
import re
import warnings

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters_store import AdapterStore
from app.config import Settings
from app.main import create_app
from app.observability.logs import JsonFormatter, RequestFilter
from app.observability.tracing import Tracing
from tests.api.conftest import seed_store
from tests.support.server import wait_client_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ADMIN = "admin-key-0123456789abcdefghijklmn"
READER = "reader-key-0123456789abcdefghijklm"
KEYS = f"{ADMIN}:admin+classify,{READER}:classify"
SECRET_TEXT = "zebra quartz umbrella lantern"
HEX32 = re.compile(r"[0-9a-f]{32}")


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def traced(tmp_path, tiny_model_dir, factory):
    """(client, exporter, store root): a keyed app whose spans land in memory."""
    settings = Settings(
        base_model=str(tiny_model_dir),
        data_dir=tmp_path / "data",
        api_keys=KEYS,
        pass_cost_calibration=False,
        allowed_hosts=["testserver"],
    )
    seed_store(AdapterStore(settings.adapters_dir), factory)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, tracing=Tracing(provider))
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_client_ready(client)
        exporter.clear()
        yield client, exporter, str(settings.adapters_dir)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-42", True),
        ("3f2c9a0e-6b1d-4c8e-9f00-1234567890ab", True),
        ("svc.a:7_x", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ('quote"d', False),
        ("", False),
    ],
)
def test_request_id_is_echoed_or_replaced(client, sent, kept):
    r = client.post(
        "/classify", json={"adapter": "alpha", "inputs": "good"}, headers={"X-Request-Id": sent}
    )
    assert r.status_code == 200
    echoed = r.headers["x-request-id"]
    if kept:
        assert echoed == sent
    else:
        assert HEX32.fullmatch(echoed), echoed


def test_every_answer_carries_a_fresh_id(client):
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20 and all(HEX32.fullmatch(i) for i in ids)


def test_refusals_and_errors_carry_the_id_and_keep_their_shape(traced):
    client, _, _ = traced
    cases = [  # (method, path, kwargs, status, code): guard, router, validation, 500
        ("post", "/classify", {"json": {"adapter": "alpha", "inputs": "x"}}, 401, "unauthorized"),
        ("get", "/no-such-route", {}, 404, "not_found"),
        ("post", "/classify", {"json": {"inputs": "x"}, "headers": _bearer(READER)}, 422, None),
        ("delete", "/adapters/alpha", {"headers": _bearer(READER)}, 403, "forbidden"),
    ]
    for n, (method, path, kwargs, status, code) in enumerate(cases):
        headers = {**kwargs.pop("headers", {}), "X-Request-Id": f"case-{n}"}
        r = client.request(method, path, headers=headers, **kwargs)
        assert r.status_code == status, r.text
        assert r.headers["x-request-id"] == f"case-{n}"
        assert set(r.json()) == {"error"}
        if code is not None:
            assert r.json()["error"]["code"] == code
    text = client.get("/metrics", headers=_bearer(READER)).text
    assert 'http_requests_total{method="POST",route="/classify",status="401"} 1.0' in text
    assert 'http_requests_total{method="DELETE",route="/adapters/{name}",status="403"} 1.0' in text


def test_an_unhandled_error_is_logged_with_the_request_id(client, monkeypatch, caplog):
    caplog.handler.addFilter(RequestFilter())
    monkeypatch.setattr(client.app.state.store, "page", lambda *a: 1 / 0)
    r = client.get("/adapters", headers={"X-Request-Id": "boom-1"})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert r.headers["x-request-id"] == "boom-1"
    failures = [rec for rec in caplog.records if rec.exc_info]
    assert failures and all(rec.request_id == "boom-1" for rec in failures)
    assert 'status="500"' in client.get("/metrics").text


def test_spans_follow_a_classification_and_hold_no_secret(traced, caplog):
    client, exporter, store_root = traced
    caplog.handler.addFilter(RequestFilter())
    caplog.set_level(logging.INFO, logger="app.access")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = client.post(
        "/classify",
        json={"adapter": "beta", "inputs": [SECRET_TEXT, "good"]},
        headers={**_bearer(READER), "X-Request-Id": "trace-me", "traceparent": parent},
    )
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    trace_ids = {s.context.trace_id for s in spans}
    assert trace_ids == {0x0AF7651916CD43DD8448EB211C80319C}  # the caller's trace continues
    server = next(s for s in spans if s.name == "POST /classify")
    assert server.attributes["request.id"] == "trace-me"
    assert server.attributes["adapter_serve.key_id"] == key_id(READER)
    assert server.attributes["http.response.status_code"] == 200
    assert list(server.attributes["adapter_serve.adapters"]) == ["beta"]
    assert server.attributes["adapter_serve.texts"] == 2
    assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"
    phases = {s.name: s for s in spans if s.parent and s.parent.span_id == server.context.span_id}
    assert {"admission", "tokenize", "queue", "forward", "respond"} <= set(phases)
    for span in phases.values():
        assert server.start_time <= span.start_time <= span.end_time <= server.end_time
    assert phases["admission"].end_time <= phases["tokenize"].start_time
    assert phases["queue"].end_time <= phases["forward"].start_time
    dumped = "".join(s.to_json() for s in spans)
    for secret in (READER, ADMIN, SECRET_TEXT, store_root):
        assert secret not in dumped
    access = [rec for rec in caplog.records if rec.name == "app.access"]
    assert [rec.request_id for rec in access] == ["trace-me"]
    line = JsonFormatter().format(access[0])
    assert f'"trace_id": "{0x0AF7651916CD43DD8448EB211C80319C:032x}"' in line
    assert SECRET_TEXT not in line and READER not in line


def test_a_refused_request_gets_a_server_span_and_no_phases(traced):
    client, exporter, _ = traced
    r = client.post("/classify", json={"adapter": "alpha", "inputs": "x"})
    assert r.status_code == 401
    (span,) = exporter.get_finished_spans()
    assert span.name == "POST /classify"
    assert span.attributes["http.response.status_code"] == 401
    assert span.attributes["request.id"] == r.headers["x-request-id"]


def test_adapter_series_keep_the_busiest_names_only(serve):
    with serve(metrics_top_adapters=1) as client:
        for _ in range(3):
            assert client.post("/classify", json={"adapter": "alpha", "inputs": "a"}).is_success
        for name in ("beta", "gamma", "nope"):
            client.post("/classify", json={"adapter": name, "inputs": "b"})
        text = client.get("/metrics").text
    labels = set(re.findall(r'adapter_requests_total\{adapter="([^"]+)"', text))
    assert labels == {"alpha", "other"}
    assert 'adapter_texts_total{adapter="alpha"} 3.0' in text
    assert 'adapter_texts_total{adapter="other"} 2.0' in text  # beta and gamma; not the 404
    assert 'adapter_requests_total{adapter="other",status="404"} 1.0' in text


def test_fastapi_native_telemetry_costs_nothing_per_request(client, monkeypatch):
    """FastAPI 0.16x asks the global OpenTelemetry providers on every request unless its
    telemetry is off (issue 19's profile: get_tracer_provider ~6% of the event loop)."""
    from opentelemetry import metrics, trace

    calls = []
    for module, name in ((trace, "get_tracer_provider"), (metrics, "get_meter_provider")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda f=original: calls.append(f) or f())
    for _ in range(3):
        assert client.post("/classify", json={"adapter": "alpha", "inputs": "x"}).is_success
    assert calls == []
