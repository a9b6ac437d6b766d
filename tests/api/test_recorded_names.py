"""What a request leaves in the logs, the spans and /metrics is bounded and names only what the
key may see (issue 26, items 4, 7, 8): a real app in-process, its own log formatters on a
handler of the root logger, spans in the SDK's in-memory exporter behind the server's provider.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters_store import AdapterStore
from app.config import Settings
from app.main import create_app
from app.observability.context import INVALID
from app.observability.logs import JsonFormatter, RequestFilter, TextFormatter
from app.observability.tracing import Tracing, bounded_provider
from tests.api.conftest import seed_store
from tests.support.server import wait_client_ready

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

MB = 1 << 20
HUGE = {"adapters": [f"{i:x}" * MB for i in range(16)], "inputs": "good"}  # 16 names of 1 MB
FORGED = "alpha\n2026-01-01 00:00:00,000 INFO app.access [forged]: DELETE /adapters/{name} 200"
ADMIN = "admin-key-0123456789abcdefghijklmn"
TEAM_A = "team-a-key-0123456789abcdefghijklm"
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
LONG_STATE = ",".join(f"k{i}=" + "v" * 200 for i in range(32))  # valid W3C, 6.6 KB


@contextlib.contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """Every INFO+ record of the process, as the server's handler would write it."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RequestFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("formatter", [TextFormatter, JsonFormatter])
def test_sixteen_names_of_a_megabyte_leave_a_small_log(client, formatter):
    """Before: 422, and the access line held the 16 names (16 MB per request)."""
    with captured(formatter()) as out:
        r = client.post("/classify", json=HUGE, headers={"X-Request-Id": "huge-1"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_name"
    log = out.getvalue()
    assert len(log.encode()) < 4096, len(log)
    (line,) = [x for x in log.splitlines() if "app.access" in x]
    assert "huge-1" in line and line.count(INVALID) == 16


def test_a_name_with_a_newline_makes_exactly_one_access_line(client):
    """Before: the name's newline forged a second access line (`DELETE ... 200`)."""
    with captured(TextFormatter()) as out:
        r = client.post("/classify", json={"adapter": FORGED, "inputs": "x"})
    assert r.status_code == 422
    lines = out.getvalue().splitlines()
    access = [x for x in lines if "app.access" in x]
    assert len(access) == 1 and "POST /classify 422" in access[0], lines
    assert "forged" not in out.getvalue() and f"adapter={INVALID}" in access[0]


def test_span_attributes_are_bounded(tmp_path, tiny_model_dir, factory):
    """Before: the server span's `adapter_serve.adapters` held the 16 MB of names, and a span
    continued a 6.6 KB tracestate."""
    settings = Settings(
        base_model=str(tiny_model_dir),
        data_dir=tmp_path / "data",
        pass_cost_calibration=False,
        allowed_hosts=["testserver"],
    )
    seed_store(AdapterStore(settings.adapters_dir), factory)
    exporter = InMemorySpanExporter()
    tracing = Tracing(bounded_provider(SimpleSpanProcessor(exporter)))
    with TestClient(create_app(settings, tracing=tracing)) as client:
        wait_client_ready(client)
        assert client.post("/classify", json=HUGE).status_code == 422
        assert client.post("/classify", json={"adapter": "alpha", "inputs": "x"}).is_success
        for state in (LONG_STATE, "k=v"):
            headers = {"traceparent": PARENT, "tracestate": state}
            assert client.get("/healthz", headers=headers).is_success
    huge, ok = [s for s in exporter.get_finished_spans() if s.name == "POST /classify"]
    long, short = [s for s in exporter.get_finished_spans() if s.name == "GET /healthz"]
    assert dict(long.context.trace_state) == {} and dict(short.context.trace_state) == {"k": "v"}
    assert list(huge.attributes["adapter_serve.adapters"]) == [INVALID] * 16
    assert list(ok.attributes["adapter_serve.adapters"]) == ["alpha"]
    assert len(huge.to_json()) < 4096
    span = tracing.tracer.start_span("direct", attributes={"a": "x" * 10_000, "b": ["y" * 999]})
    span.end()  # any attribute, from any caller: cut by the provider's limits
    assert len(span.attributes["a"]) == 256 and len(span.attributes["b"][0]) == 256


def _series(text: str) -> set[str]:
    return set(re.findall(r'adapter="([^"]+)"', text))


def test_a_key_limited_to_team_a_sees_only_team_a_series(serve, factory, tmp_path):
    """Before: /metrics named team-b/secret and its traffic to a team-a key."""
    keys = tmp_path / "keys"
    keys.write_text(f"{ADMIN} admin+classify\n{TEAM_A} classify adapters=team-a/*\n")
    with serve(api_keys_file=keys) as client:
        store = client.app.state.store
        factory.add_to_store(store, "team-a/one", seed=4)
        factory.add_to_store(store, "team-b/secret", seed=5)
        admin, team_a = ({"Authorization": f"Bearer {k}"} for k in (ADMIN, TEAM_A))
        for name, headers in (("team-b/secret", admin), ("team-a/one", team_a)):
            r = client.post("/classify", json={"adapter": name, "inputs": "x"}, headers=headers)
            assert r.status_code == 200, r.text
        client.post("/classify", json={"adapter": "nope", "inputs": "x"}, headers=admin)  # other
        seen_by_a = client.get("/metrics", headers=team_a)
        seen_by_admin = client.get("/metrics", headers=admin).text
    assert seen_by_a.status_code == 200
    assert _series(seen_by_a.text) == {"team-a/one"}
    assert 'adapter_texts_total{adapter="team-a/one"} 1.0' in seen_by_a.text
    assert "team-b" not in seen_by_a.text
    assert 'http_requests_total{method="POST",route="/classify",status="200"} 2.0' in (
        seen_by_a.text  # the series without an adapter stay
    )
    assert _series(seen_by_admin) == {"team-a/one", "team-b/secret", "other"}


def test_a_keyless_server_shows_every_series(serve, factory):
    with serve() as client:
        factory.add_to_store(client.app.state.store, "team-b/secret", seed=5)
        assert client.post("/classify", json={"adapter": "team-b/secret", "inputs": "x"}).is_success
        assert _series(client.get("/metrics").text) == {"team-b/secret"}


def test_json_access_line_of_a_valid_name_is_unchanged(client):
    with captured(JsonFormatter()) as out:
        assert client.post("/classify", json={"adapter": "alpha@1", "inputs": "x"}).is_success
    (line,) = [json.loads(x) for x in out.getvalue().splitlines() if '"app.access"' in x]
    assert line["adapter"] == "alpha@1" and line["status"] == 200
