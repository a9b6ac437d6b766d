"""The edge of the app (issue 26): control characters in paths, texts that are not Unicode, no
request text in the logs, and the fast path of POST /classify answering as its route."""

from __future__ import annotations

import json
import logging
import math
import re
import time

import pytest

import app.api.classify as classify_module
from app.api import edge as fast_path
from app.api.edge import FastClassify

EVIL = {"Host": "evil.example", "Origin": "http://evil.example"}
CONTROLS = ["%0A", "%0D", "%00", "%09", "%1B", "%7F", "%C2%85"]
READER = "reader-key-0123456789abcdefghijklm"
MARKER = "MARKER-7f3q"  # a text no log line may hold


def _error(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code is None:  # the Open Inference Protocol's shape
        assert isinstance(error, str)
        return error
    assert set(error) == {"code", "message"} and error["code"] == code, error
    return error["message"]


# ---- control characters in the path --------------------------------------------------------
@pytest.mark.parametrize("control", CONTROLS)
def test_a_control_character_in_the_path_is_refused_before_any_route(
    client, factory, tmp_path, control
):
    """What a keyless server answered 200/201 through `%0A` (the router's `$` matches before a
    trailing newline, the guard's lookup did not): refused, whatever the Host and Origin."""
    archive = factory.archive("planted", tmp_path / "planted.zip", seed=5).read_bytes()
    calls = [
        ("GET", "/datasets", {}),
        ("GET", "/adapters/alpha/archive", {}),
        ("POST", "/adapters/alpha/load", {}),
        ("POST", "/adapters/alpha/unload", {}),
        ("DELETE", "/adapters/alpha", {}),
        ("POST", "/adapters", {"files": {"file": ("p.zip", archive)}, "data": {"name": "planted"}}),
    ]
    for method, path, kwargs in calls:
        for where in {path + control, path.replace("alpha", "alpha" + control)} - {path}:
            r = client.request(method, where, headers=EVIL, **kwargs)
            message = _error(r, 400, "bad_request")
            assert "control character" in message and r.headers["connection"] == "close"
    r = client.post(f"/v2/models/alpha{control}/infer", json={"inputs": []})
    assert "control character" in _error(r, 400)  # the route's error shape
    names = [a["name"] for a in client.get("/adapters").json()["adapters"]]
    assert names == ["alpha", "beta", "gamma"]  # nothing planted, nothing deleted


def test_a_control_character_neither_passes_nor_spends_the_quota(serve):
    """With keys and rps=2: `/classify%0A` neither passes the key's quota (10 of 10 answered
    before) nor spends it; `/classify` itself meets the quota as before."""
    body = {"adapter": "alpha", "inputs": "good"}
    headers = {"Authorization": f"Bearer {READER}"}
    with serve(api_keys=f"{READER}:classify", default_key_rps=2, quota_refusal_delay_s=0) as client:
        for _ in range(10):
            r = client.post("/classify%0A", json=body, headers=headers)
            _error(r, 400, "bad_request")
            _error(client.post("/classify%0A", json=body), 400, "bad_request")  # no key
        statuses = [
            client.post("/classify", json=body, headers=headers).status_code for _ in range(10)
        ]
        assert statuses[0] == 200 and statuses.count(429) >= 6, statuses
        time.sleep(1.1)  # the key's requests/s bucket fills again
        metrics = client.get("/metrics", headers=headers).text
    assert 'http_requests_total{method="POST",route="other",status="400"} 20.0' in metrics


# ---- texts that are not Unicode -------------------------------------------------------------
def _json(body: str) -> dict:
    return {"content": body.encode(), "headers": {"content-type": "application/json"}}


SURROGATES = [  # (path, raw JSON body, the input the answer names)
    ("/classify", '{"adapter": "alpha", "inputs": "a\\ud800b"}', "inputs[0]"),
    ("/classify", '{"adapter": "alpha", "inputs": ["ok", "ok", "\\udfff"]}', "inputs[2]"),
    (
        "/classify",
        '{"adapter": "alpha", "inputs": [{"text": "ok", "text_pair": "x\\udc00"}]}',
        "inputs[0].text_pair",
    ),
    ("/classify", '{"adapters": ["alpha", "beta"], "inputs": ["\\ud83d"]}', "inputs[0]"),
    ("/models/alpha", '{"inputs": ["fine", "\\ud800"]}', "inputs[1]"),
    ("/models/alpha", '{"inputs": {"text": "\\ud800", "text_pair": "b"}}', "inputs[0].text"),
]


@pytest.mark.parametrize(("path", "body", "where"), SURROGATES)
def test_an_unpaired_surrogate_is_a_422_naming_the_input(client, path, body, where):
    message = _error(client.post(path, **_json(body)), 422, "validation_error")
    assert f"{where} is not valid Unicode" in message, message
    good = re.sub(r"\\ud[89a-f][0-9a-f]{2}", "x", body)
    assert client.post(path, **_json(good)).status_code == 200  # the same request, valid


@pytest.mark.parametrize(("name", "pairs"), [("text", False), ("text_pair", True)])
def test_an_unpaired_surrogate_is_a_422_on_open_inference(client, name, pairs):
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]}]
    if pairs:
        inputs.append({"name": "text_pair", "datatype": "BYTES", "shape": [2], "data": ["c", "d"]})
    body = json.dumps({"inputs": inputs})
    assert client.post("/v2/models/alpha/infer", **_json(body)).status_code == 200
    spoiled = body.replace('"b"' if name == "text" else '"d"', '"\\ud800"')
    message = _error(client.post("/v2/models/alpha/infer", **_json(spoiled)), 422)
    assert f"{name}[1] is not valid Unicode" in message, message


VALID = {  # a valid body of each protocol, every kind of field present
    "/classify": {
        "adapter": "alpha",
        "inputs": ["a", {"text": "b", "text_pair": "c"}],
        "top_k": 1,
        "function_to_apply": "softmax",
    },
    "/models/alpha": {
        "inputs": ["a", {"text": "b", "text_pair": "c"}],
        "parameters": {"top_k": 1, "function_to_apply": "softmax"},
        "options": {"wait_for_model": True},
    },
    "/v2/models/alpha/infer": {
        "id": "r1",
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]},
            {"name": "text_pair", "datatype": "BYTES", "shape": [1], "data": ["b"]},
        ],
        "outputs": [{"name": "labels"}],
        "parameters": {"top_k": 1, "function_to_apply": "softmax"},
    },
}


def _spoiled(value, keys: bool):
    """`value` once per string in it (values, or keys), that string with "\\ud800" added."""
    if isinstance(value, str) and not keys:
        yield value + "\ud800"
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for variant in _spoiled(item, keys):
                yield [*value[:i], variant, *value[i + 1 :]]
    elif isinstance(value, dict):
        for key, item in value.items():
            rest = {k: v for k, v in value.items() if k != key}
            if keys:
                yield {**rest, key + "\ud800": item}
            for variant in _spoiled(item, keys):
                yield {**rest, key: variant}


def test_a_surrogate_anywhere_in_a_request_is_no_server_error(client):
    """Each string value of a valid request of each protocol with "\\ud800" added: a 422 (each
    is read); each key: no 5xx (the protocols ignore some unknown keys)."""
    for path, body in VALID.items():
        assert client.post(path, json=body).status_code == 200, path
        for keys in (False, True):
            for variant in _spoiled(body, keys):
                raw = json.dumps(variant)  # ensure_ascii: the surrogate travels as "\\ud800"
                r = client.post(path, **_json(raw))
                assert r.status_code == 422 or (keys and r.status_code == 200), (path, raw, r.text)


# ---- logs hold no request text --------------------------------------------------------------
INVALID = [  # (path, raw JSON body): each holds MARKER and fails validation
    ("/classify", f'{{"adapter": "alpha", "inputs": "{MARKER}\\ud800"}}'),
    ("/classify", f'{{"adapter": "alpha", "inputs": ["{MARKER}"], "top_k": "{MARKER}"}}'),
    ("/classify", f'{{"adapter": "alpha", "inputs": ["{MARKER}"], "{MARKER}": 1}}'),
    ("/classify", f'{{"adapter": "alpha", "inputs": ["{MARKER}"'),  # not JSON
    ("/classify", f'{{"adapter": "alpha", "inputs": [{{"text": "{MARKER}", "x": 1}}]}}'),
    ("/classify", f'{{"adapter": "alpha", "adapters": ["beta"], "inputs": "{MARKER}"}}'),
    ("/classify", f'{{"adapter": "alpha", "inputs": ["{MARKER}", ""]}}'),
    ("/models/alpha", f'{{"inputs": "{MARKER}\\ud800"}}'),
    ("/models/alpha", f'{{"inputs": ["{MARKER}"], "parameters": {{"top_k": "{MARKER}"}}}}'),
    (
        "/v2/models/alpha/infer",
        f'{{"inputs": [{{"name": "text", "datatype": "BYTES", "shape": [1], '
        f'"data": ["{MARKER}\\ud800"]}}]}}',
    ),
    (
        "/v2/models/alpha/infer",
        f'{{"inputs": [{{"name": "text", "datatype": "FP32", "shape": [1], '
        f'"data": ["{MARKER}"]}}]}}',
    ),
]


def test_no_log_line_holds_request_text(serve, caplog):
    """Texts that fail validation, on every protocol and the fast path, at debug level: the
    marker they hold is in no log line (tracebacks included)."""
    caplog.set_level(logging.DEBUG)
    with serve(max_text_chars=1000) as client:
        for path, body in INVALID:
            r = client.post(path, **_json(body))
            assert 400 <= r.status_code < 500, (path, body, r.text)
        long = json.dumps({"adapter": "alpha", "inputs": [MARKER * 200]})
        _error(client.post("/classify", **_json(long)), 422, "validation_error")
    assert caplog.records and MARKER not in caplog.text


def test_an_error_after_the_fast_path_chains_no_request_text(serve, caplog, monkeypatch):
    """A body the fast path's parser refuses (a UTF-8 byte order mark) goes to the route,
    whose parser takes it; an unexpected error there is logged with its traceback, which must
    not chain the fast path's ValidationError (whose text quoted the body)."""

    async def broken(*args, **kwargs):
        raise RuntimeError("something broke")

    caplog.set_level(logging.DEBUG)
    with serve() as client:
        monkeypatch.setattr(classify_module, "answer", broken)
        body = f'\ufeff{{"adapter":"alpha","inputs":"{MARKER}"}}'
        _error(client.post("/classify", **_json(body)), 500, "internal_error")
    assert "something broke" in caplog.text and "Traceback" in caplog.text
    assert MARKER not in caplog.text and "ValidationError" not in caplog.text


# ---- the fast path answers as the route -----------------------------------------------------
HEADERS = {
    "json": [("content-type", "application/json")],
    "text first": [("content-type", "text/plain"), ("content-type", "application/json")],
    "json first": [("content-type", "application/json"), ("content-type", "text/plain")],
    "two json": [("content-type", "application/json"), ("content-type", "application/json")],
    "missing": [],
    "empty": [("content-type", "")],
    "text": [("content-type", "text/plain")],
    "form": [("content-type", "application/x-www-form-urlencoded")],
    "utf-8": [("content-type", "application/json; charset=utf-8")],
    "UTF-8 no space": [("content-type", "application/json;charset=UTF-8")],
    "latin-1": [("content-type", "application/json; charset=latin-1")],
    "upper case": [("content-type", "APPLICATION/JSON")],
    "padded": [("content-type", "  application/json  ")],
    "+json": [("content-type", "application/vnd.api+json")],
    "list": [("content-type", "application/json, text/plain")],
    "json-seq": [("content-type", "application/json-seq")],
    "gzip": [("content-type", "application/json"), ("content-encoding", "gzip")],
}
BODIES = {
    "valid": b'{"adapter": "alpha", "inputs": ["a good film", "awful"], "top_k": null}',
    "several": b'{"adapters": ["beta", "alpha"], "inputs": "fine"}',
    "unknown adapter": b'{"adapter": "nope", "inputs": "x"}',
    "invalid": b'{"adapter": "alpha", "inputs": []}',
    "surrogate": b'{"adapter": "alpha", "inputs": "\\ud800"}',
    "not json": b"{nope",
    "empty": b"",
    "utf-16": '{"adapter": "alpha", "inputs": "ok"}'.encode("utf-16"),
    "bom": b'\xef\xbb\xbf{"adapter": "alpha", "inputs": "ok"}',
    "latin-1": '{"adapter": "alpha", "inputs": "caf\xe9"}'.encode("latin-1"),
    "duplicate key": b'{"adapter": "nope", "adapter": "alpha", "inputs": "ok"}',
}
VOLATILE = {"x-queue-time", "x-inference-time", "x-request-id", "date"}


class _Near(float):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, float) and math.isclose(self, other, rel_tol=1e-6)

    __hash__ = float.__hash__


def _answer(client, headers: list, body: bytes) -> tuple:
    """(status, body, headers, volatile header names); a JSON body parsed, its scores equal
    within 1e-6: the same request may run in passes of another composition the second time
    (the cost model learns between them), and a batched matmul's last bits depend on its
    rows on some CPUs (AVX-512: one text alone and beside another differ at ~5e-8)."""
    r = client.post("/classify", content=body, headers=headers)
    kept = sorted((k, v) for k, v in r.headers.items() if k not in VOLATILE | {"content-length"})
    assert int(r.headers.get("content-length", len(r.content))) == len(r.content)
    try:
        content = json.loads(r.content, parse_float=_Near)
    except ValueError:
        content = r.content
    return r.status_code, content, kept, sorted(k for k in r.headers if k in VOLATILE)


def test_the_fast_path_answers_as_the_route_for_any_headers(client, monkeypatch):
    """Every pair of header set and body, once as the app answers it and once with the fast
    path turned off (the FastAPI route alone): the same status, body and headers."""
    taken: list = []  # the answers the fast path gave itself
    monkeypatch.setattr(fast_path, "answer", _spy(fast_path.answer, taken))
    cases = [(h, b) for h in HEADERS for b in BODIES]
    fast = {case: _answer(client, HEADERS[case[0]], BODIES[case[1]]) for case in cases}
    assert len(taken) >= 30
    assert fast[("json", "valid")][0] == 200 and fast[("text first", "valid")][0] == 422

    async def route_only(self, scope, receive, send):
        await self.app(scope, receive, send)

    monkeypatch.setattr(FastClassify, "__call__", route_only)
    for case in cases:
        assert _answer(client, HEADERS[case[0]], BODIES[case[1]]) == fast[case], case


def _spy(answer, calls: list):
    async def spied(request, *args):
        calls.append(request.scope)
        return await answer(request, *args)

    return spied
