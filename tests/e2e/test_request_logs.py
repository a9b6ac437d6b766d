"""Following requests through a real `python -m app`: APP_LOG_FORMAT=json and OTLP traces.

The server logs at debug level in JSON and exports spans over OTLP/HTTP to a receiver in this
test (127.0.0.1). Each request is found by its X-Request-Id in the log, and by the trace id of
its log lines in the exported spans; no log line and no span holds a key, a text or a path of
the store.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from adapters_store import AdapterStore
from tests.support.server import running_server

READER = "reader-key-0123456789abcdefghijklm"
ADMIN = "admin-key-0123456789abcdefghijklmn"
SECRET_TEXT = "zebra quartz umbrella lantern"
PHASES = {"admission", "tokenize", "queue", "forward", "respond"}
HUGE_NAMES = [f"{i:x}" * (1 << 20) for i in range(16)]  # 16 names of 1 MB (issue 26, item 4)


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP endpoint that keeps every POST /v1/traces body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    outer.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def spans(self) -> list:
        found = []
        for body in self.bodies:
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    found.extend(scope.spans)
        return found


def _attributes(span) -> dict:
    out = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = (
            [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return out


@pytest.fixture(scope="module")
def followed(tmp_path_factory, factory, tiny_model_dir):
    """Run the requests once: (responses by id, JSON log lines, spans, raw log, store path)."""
    data = tmp_path_factory.mktemp("followed")
    store = AdapterStore(data / "adapters")
    factory.add_to_store(store, "alpha", seed=1)
    factory.add_to_store(store, "beta", seed=2)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        "APP_API_KEYS": f"{ADMIN}:admin+classify,{READER}:classify",
        "APP_EMBEDDED_WORKER": "false",
        "APP_PASS_COST_CALIBRATION": "false",
        "APP_LOG_FORMAT": "json",
        "APP_LOG_LEVEL": "debug",
        "APP_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    reader = {"Authorization": f"Bearer {READER}"}
    calls = {  # request id -> (path, body, headers)
        "e2e-ok": ("/classify", {"adapter": "alpha", "inputs": [SECRET_TEXT, "good"]}, reader),
        "e2e-two": ("/classify", {"adapters": ["alpha", "beta"], "inputs": SECRET_TEXT}, reader),
        "e2e-hf": ("/models/beta", {"inputs": SECRET_TEXT}, reader),
        "e2e-404": ("/classify", {"adapter": "nope", "inputs": SECRET_TEXT}, reader),
        "e2e-401": ("/classify", {"adapter": "alpha", "inputs": SECRET_TEXT}, {}),
        "e2e-422": ("/classify", {"adapter": "alpha", "inputs": [SECRET_TEXT, 3]}, reader),
        "e2e-huge": ("/classify", {"adapters": HUGE_NAMES, "inputs": SECRET_TEXT}, reader),
    }
    responses = {}
    try:
        with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as server:
            for rid, (path, body, headers) in calls.items():
                headers = {**headers, "X-Request-Id": rid}
                responses[rid] = httpx.post(
                    server.url + path, json=body, headers=headers, timeout=60
                )
            bad = httpx.post(
                server.url + "/classify",
                json={"adapter": "beta", "inputs": "x"},
                headers={**reader, "X-Request-Id": "not ok; <script>"},
                timeout=60,
            )
            responses[bad.headers["x-request-id"]] = bad
        raw = server.logs()  # the server has stopped: every span is exported
    finally:
        receiver.shutdown()
        receiver.server_close()
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return responses, lines, receiver, raw, str(store.root)


def _access(lines: list[dict], rid: str) -> dict:
    (line,) = [x for x in lines if x.get("request_id") == rid and x["logger"] == "app.access"]
    return line


def test_every_line_is_json_and_every_request_has_its_access_line(followed):
    responses, lines, _, _, _ = followed
    assert lines and all({"time", "level", "logger", "message"} <= set(x) for x in lines)
    assert len(responses) == 8
    for rid, response in responses.items():
        assert response.headers["x-request-id"] == rid
        line = _access(lines, rid)
        assert line["status"] == response.status_code and line["duration_ms"] > 0
        assert line["trace_id"] and all(
            x.get("trace_id") == line["trace_id"] for x in lines if x.get("request_id") == rid
        )
    statuses = {rid: r.status_code for rid, r in responses.items() if rid.startswith("e2e")}
    assert statuses == {
        "e2e-ok": 200,
        "e2e-two": 200,
        "e2e-hf": 200,
        "e2e-404": 404,
        "e2e-401": 401,
        "e2e-422": 422,
        "e2e-huge": 422,
    }


def test_the_access_line_names_key_adapter_version_and_timings(followed):
    _, lines, _, _, _ = followed
    ok = _access(lines, "e2e-ok")
    assert ok["key_id"] == hashlib.sha256(READER.encode()).hexdigest()[:8]
    assert (ok["adapter"], ok["version"], ok["texts"]) == ("alpha", 1, 2)
    assert ok["method"] == "POST" and ok["route"] == "/classify"
    assert all(ok[f] >= 0 for f in ("tokenize_ms", "queue_ms", "forward_ms"))
    assert ok["forward_ms"] > 0 and ok["tokenize_ms"] > 0
    two = _access(lines, "e2e-two")
    assert (two["adapter"], two["version"], two["texts"]) == (["alpha", "beta"], [1, 1], 1)
    assert _access(lines, "e2e-hf")["route"] == "/models/{adapter}"
    assert _access(lines, "e2e-404")["adapter"] == "nope"
    assert "key_id" not in _access(lines, "e2e-401")


def test_spans_follow_each_request_by_its_trace_id(followed):
    responses, lines, receiver, _, _ = followed
    spans = receiver.spans()
    by_trace: dict[str, list] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id.hex(), []).append(span)
    for rid in responses:
        trace = by_trace[_access(lines, rid)["trace_id"]]
        (server,) = [s for s in trace if not s.parent_span_id]
        attributes = _attributes(server)
        assert attributes["request.id"] == rid
        assert attributes["http.response.status_code"] == responses[rid].status_code
        children = {s.name for s in trace if s.parent_span_id == server.span_id}
        if rid in ("e2e-ok", "e2e-two", "e2e-hf"):
            assert children >= PHASES, (rid, children)
        if rid == "e2e-401":
            assert children == set()


def test_no_key_text_or_store_path_in_any_line_or_span(followed):
    _, _, receiver, raw, store_root = followed
    exported = b"".join(receiver.bodies)
    assert exported
    for secret in (READER, ADMIN, SECRET_TEXT, store_root):
        assert secret not in raw
        assert secret.encode() not in exported


def test_sixteen_names_of_a_megabyte_leave_a_small_log_and_small_spans(followed):
    """Before: the access line and the server span each held the 16 MB of names."""
    _, lines, receiver, raw, _ = followed
    huge = _access(lines, "e2e-huge")
    assert huge["adapter"] == ["<invalid>"] * 16 and len(json.dumps(huge)) < 2048
    assert len(raw) < (1 << 20) and sum(map(len, receiver.bodies)) < (1 << 20)
    trace = [s for s in receiver.spans() if s.trace_id.hex() == huge["trace_id"]]
    (server,) = [s for s in trace if not s.parent_span_id]
    assert _attributes(server)["adapter_serve.adapters"] == ["<invalid>"] * 16
