"""Request ids, log formatters and bounded per-adapter metric labels, without a server."""

from __future__ import annotations

import json
import logging
import random
import re
import sys

from app.metrics import OTHER, Metrics, TopAdapters
from app.observability.context import INVALID, RequestContext, classifying, current, request_id
from app.observability.logs import JsonFormatter, TextFormatter, logging_config


def _labels(text: str) -> set[str]:
    return set(re.findall(r'adapter="([^"]+)"', text))


def test_request_id_from_headers():
    assert request_id([(b"x-request-id", b"abc-1")]) == "abc-1"
    assert request_id([(b"host", b"x"), (b"x-request-id", b"a" * 128)]) == "a" * 128
    for bad in (b"a" * 129, b"a b", b"a\nb", b"", "é".encode()):
        generated = request_id([(b"x-request-id", bad)])
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert request_id([]) != request_id([])


def test_thousands_of_adapters_keep_a_bounded_label_set():
    metrics = Metrics(top_adapters=10)
    rng = random.Random(0)
    names = [f"team-{i % 50}/adapter-{i}" for i in range(5000)]
    busy = names[:5]
    for step in range(30_000):
        name = busy[step % 5] if step % 3 else rng.choice(names)
        metrics.observe_adapters([name], 1, 200, 0.001)
        if step % 7 == 0:  # refused and unknown names never take a label
            metrics.observe_adapters([f"nope-{step}"], 1, 404, 0.001)
    text = metrics.render().decode()
    labels = _labels(text)
    assert len(labels) <= 11 and OTHER in labels
    assert set(busy) <= labels  # the busiest keep their own series
    assert not any(label.startswith("nope-") for label in labels)
    assert len(metrics.top_adapters.counts) <= metrics.top_adapters.capacity


def test_labels_follow_the_traffic_and_dropped_series_go():
    top = TopAdapters(2, window=100)
    for _ in range(60):
        top.count("a")
        top.count("b")  # rerank at 100: a and b keep their labels
    assert top.label("a") == "a" and top.label("c") == OTHER
    for _ in range(300):
        top.count("c", 5)
        top.count("d", 5)
    assert top.labelled == {"c", "d"}

    metrics = Metrics(top_adapters=1)
    metrics.top_adapters.window = 10
    for _ in range(10):
        metrics.observe_adapters(["old"], 1, 200, 0.01)
    assert "old" in _labels(metrics.render().decode())
    for _ in range(40):
        metrics.observe_adapters(["new"], 4, 200, 0.01)
    assert _labels(metrics.render().decode()) == {"new", OTHER}


def test_no_adapter_labels_when_the_top_is_zero():
    metrics = Metrics(top_adapters=0)
    for name in ("a", "b"):
        metrics.observe_adapters([name], 1, 200, 0.01)
    assert _labels(metrics.render().decode()) == {OTHER}


def _record(message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("app.x", logging.INFO, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_name_the_request_being_served():
    context = RequestContext("rid-7", {})
    token = current.set(context)
    try:
        line = JsonFormatter().format(_record("hello\nworld", fields={"status": 200, "x": None}))
    finally:
        current.reset(token)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "hello\nworld" and out["request_id"] == "rid-7"
    assert out["status"] == 200 and "x" not in out and "trace_id" not in out
    assert out["level"] == "INFO" and out["logger"] == "app.x" and out["time"].endswith("+00:00")
    outside = json.loads(JsonFormatter().format(_record("later")))
    assert "request_id" not in outside


def test_text_lines_show_the_id_and_fields():
    token = current.set(RequestContext("rid-8", {}))
    try:
        line = TextFormatter().format(_record("POST /classify 200", fields={"adapter": ["a", "b"]}))
    finally:
        current.reset(token)
    assert "app.x [rid-8]: POST /classify 200 adapter=a,b" in line
    assert "[" not in TextFormatter().format(_record("plain"))


def test_text_lines_escape_what_a_client_sent():
    """Before: a newline in a message, a field or an exception's message started a new line."""
    try:
        raise ValueError("bad\n2026-01-01 INFO app.access: DELETE /adapters/{name} 200")
    except ValueError:
        error = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "on %s", ("/a\nb",), None)
        error.exc_info = sys.exc_info()
    fields = {"adapter": "x\r\ny", "q": 'say "hi"', "route": "/adapters/{name}", "bell": "\x07"}
    line = TextFormatter().format(_record("GET /a\u2028b", fields=fields))
    assert len(line.splitlines()) == 1
    assert line.endswith(
        'GET /a\\u2028b adapter="x\\r\\ny" q="say \\"hi\\"" route=/adapters/{name} bell="\\u0007"'
    )
    first, *rest = TextFormatter().format(error).splitlines()
    assert first.endswith("app.x: on /a\\nb")
    assert rest and all(x.startswith("    ") for x in rest)  # a record starts at column 0
    assert rest[-1] == "    2026-01-01 INFO app.access: DELETE /adapters/{name} 200"


def test_only_valid_bounded_names_are_noted_for_logs_spans_and_labels():
    context = RequestContext("rid-9", {})
    names = ["alpha", "team-a/x@prod", "b@3", "a" * 65, "x\ny", "Up", "a@", 7, "z" * 10**6]
    classifying({"adapter_serve.request": context}, names, 1, None)
    assert context.adapters == ["alpha", "team-a/x@prod", "b@3", *[INVALID] * 6]
    line = json.loads(JsonFormatter().format(_record("x" * 10**5, fields={"f": ["y" * 999] * 99})))
    assert len(line["message"]) == 8192 and len(line["f"]) == 16 and len(line["f"][0]) == 256


def test_logging_config_routes_uvicorn_through_the_one_handler():
    config = logging_config("json", "debug")
    assert config["root"]["level"] == "DEBUG"
    assert config["formatters"]["default"]["()"] is JsonFormatter
    assert all(v["propagate"] and not v["handlers"] for v in config["loggers"].values())


_OBSERVE_BOTH = """
import random, sys
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from app.metrics import LATENCY_BUCKETS, observe_many
values = [random.Random(0).expovariate(100.0) for _ in range(500)] + [0.005, 99.0, 0.0]
one, many = CollectorRegistry(), CollectorRegistry()
h1 = Histogram("one", "w", buckets=LATENCY_BUCKETS, registry=one)
h2 = Histogram("many", "w", buckets=LATENCY_BUCKETS, registry=many)
for v in values:
    h1.observe(v)
observe_many(h2, values[:250])
observe_many(h2, values[250:])
observe_many(h2, [])
if len(sys.argv) > 1:  # multiprocess mode: what the files hold, summed as /metrics reads them
    from prometheus_client import multiprocess
    shared = CollectorRegistry()
    multiprocess.MultiProcessCollector(shared, path=sys.argv[1])
    print(generate_latest(shared).decode())
else:
    print(generate_latest(one).decode(), generate_latest(many).decode(), sep="\\n")
"""


def test_observe_many_equals_one_observe_per_value(tmp_path):
    """In one process and in the multiprocess mode (the engine's: values in shared files)."""
    import subprocess

    from tests.support.server import REPO, process_env

    for env, args in [
        (process_env(), []),
        ({**process_env(), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, [str(tmp_path)]),
    ]:
        out = subprocess.run([sys.executable, "-c", _OBSERVE_BOTH, *args], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        samples = _samples(out)
        one = {k[3:]: v for k, v in samples.items() if k.startswith("one")}
        many = {k[4:]: v for k, v in samples.items() if k.startswith("many")}
        assert one.keys() == many.keys() and '_bucket{le="0.005"}' in one, out
        assert all(one[k] == many[k] for k in one if k != "_sum")  # buckets and count
        assert abs(one["_sum"] - many["_sum"]) < 1e-9 and one["_count"] == 503


def _samples(text: str) -> dict[str, float]:
    """name{labels} -> value of an exposition, less comments and creation times."""
    lines = [line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#"]
    return {k: float(v) for k, v in lines if "_created" not in k}
