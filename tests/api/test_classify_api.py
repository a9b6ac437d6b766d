"""POST /classify through the real app: shapes, top_k, headers, every error, failures."""

from __future__ import annotations

import threading
import time

import pytest

from tests.api.conftest import LABELS3, reference

TEXTS = ["a good film", "the plot was awful", "my phone is great but the battery is poor"]


def _scores(prediction: list[dict]) -> dict[str, float]:
    return {p["label"]: p["score"] for p in prediction}


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


def test_single_text_pipeline_shape_and_headers(client):
    r = client.post("/classify", json={"adapter": "alpha", "inputs": TEXTS[0]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter"] == "alpha" and body["version"] == 1
    assert len(body["predictions"]) == 1 and len(body["predictions"][0]) == 1
    (pred,) = body["predictions"][0]
    assert set(pred) == {"label", "score"} and pred["label"] in ("negative", "positive")
    assert 0.5 <= pred["score"] <= 1.0
    assert float(r.headers["x-queue-time"]) >= 0
    assert float(r.headers["x-inference-time"]) > 0


def test_list_all_labels_sorted_and_equal_to_in_process(client, tiny_model_dir):
    r = client.post("/classify", json={"adapter": "beta", "inputs": TEXTS, "top_k": None})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    store_root = client.app.state.store.root
    expected = reference(store_root, tiny_model_dir, "beta", TEXTS)
    for prediction, probs in zip(predictions, expected, strict=True):
        scores = [p["score"] for p in prediction]
        assert scores == sorted(scores, reverse=True)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        assert _scores(prediction) == pytest.approx(
            {LABELS3[i]: p for i, p in enumerate(probs)}, abs=1e-5
        )


@pytest.mark.parametrize(("top_k", "n"), [(1, 1), (2, 2), (3, 3), (50, 3)])
def test_top_k(client, top_k, n):
    r = client.post("/classify", json={"adapter": "beta", "inputs": TEXTS, "top_k": top_k})
    assert [len(p) for p in r.json()["predictions"]] == [n] * len(TEXTS)


def test_several_adapters_in_one_call_match_single_calls(client):
    r = client.post(
        "/classify", json={"adapters": ["gamma", "alpha", "beta"], "inputs": TEXTS, "top_k": None}
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["adapter"] for x in results] == ["gamma", "alpha", "beta"]
    for result in results:
        alone = client.post(
            "/classify", json={"adapter": result["adapter"], "inputs": TEXTS, "top_k": None}
        ).json()
        for got, want in zip(result["predictions"], alone["predictions"], strict=True):
            assert _scores(got) == pytest.approx(_scores(want), abs=1e-6)


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        ({"adapter": "alpha", "inputs": []}, "validation_error", "empty"),
        ({"adapter": "alpha", "inputs": ""}, "validation_error", "empty"),
        ({"adapter": "alpha", "inputs": ["ok", ""]}, "validation_error", "inputs[1]"),
        ({"adapter": "alpha", "inputs": ["ok", 3]}, "validation_error", "valid string"),
        ({"adapter": "alpha", "inputs": 7}, "validation_error", "valid string"),
        ({"adapter": "alpha", "inputs": [["nested"]]}, "validation_error", "valid string"),
        ({"adapter": "alpha"}, "validation_error", "inputs"),
        ({"adapter": "alpha", "inputs": ["x"] * 9}, "validation_error", "at most 8"),
        ({"adapter": "alpha", "inputs": "x" * 501}, "validation_error", "limit is 500"),
        (
            {"adapter": "alpha", "inputs": "qzxv " * 99, "truncation": False},
            "text_too_long",
            "limit is 128",
        ),
        ({"adapter": "alpha", "inputs": "x", "top_k": 0}, "validation_error", "top_k"),
        ({"adapter": "alpha", "inputs": "x", "top_k": -2}, "validation_error", "top_k"),
        ({"adapter": "alpha", "inputs": "x", "top_k": "two"}, "validation_error", "top_k"),
        ({"inputs": "x"}, "validation_error", "exactly one"),
        (
            {"adapter": "alpha", "adapters": ["beta"], "inputs": "x"},
            "validation_error",
            "exactly one",
        ),
        ({"adapters": [], "inputs": "x"}, "validation_error", "adapters"),
        ({"adapters": ["alpha", "alpha"], "inputs": "x"}, "validation_error", "twice"),
        ({"adapter": "alpha", "inputs": "x", "extra": 1}, "validation_error", "extra"),
        ({"adapter": 5, "inputs": "x"}, "validation_error", "adapter"),
        ({"adapter": "Bad Name!", "inputs": "x"}, "invalid_name", "invalid adapter name"),
    ],
)
def test_invalid_requests_are_422(client, payload, code, fragment):
    message = _error(client.post("/classify", json=payload), 422, code)
    assert fragment in message


def test_long_text_with_truncation_is_fine(client):
    r = client.post("/classify", json={"adapter": "alpha", "inputs": "qzxv " * 99})
    assert r.status_code == 200


def test_malformed_json_and_wrong_types_are_422(client):
    r = client.post("/classify", content=b"{not json", headers={"content-type": "application/json"})
    _error(r, 422, "validation_error")
    _error(client.post("/classify", json=["a", "list"]), 422, "validation_error")
    _error(client.post("/classify", content=b"adapter=alpha"), 422, "validation_error")


def test_unknown_adapter_is_404_never_a_fallback(client):
    message = _error(
        client.post("/classify", json={"adapter": "nope", "inputs": "x"}), 404, "adapter_not_found"
    )
    assert "nope" in message
    r = client.post("/classify", json={"adapters": ["alpha", "nope"], "inputs": "x"})
    _error(r, 404, "adapter_not_found")


def test_unknown_route_and_method_use_the_error_shape(client):
    _error(client.get("/nothing-here"), 404, "not_found")
    _error(client.get("/classify"), 405, "method_not_allowed")


def test_queue_full_is_503_with_retry_after(serve):
    with serve(max_queue=2) as client:
        batcher = client.app.state.batcher
        client.portal.start_task_soon(batcher.run_exclusive, time.sleep, 1.5)  # busy model
        answers = []

        def send(texts):
            answers.append(client.post("/classify", json={"adapter": "alpha", "inputs": texts}))

        # The first request becomes the batch waiting for the model; the second fills the queue.
        threads = [threading.Thread(target=send, args=(["a", "b"],)) for _ in range(2)]
        threads[0].start()
        time.sleep(0.3)
        threads[1].start()
        deadline = time.monotonic() + 5
        while batcher.queued < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = client.post("/classify", json={"adapter": "beta", "inputs": "c"})
        _error(r, 503, "queue_full")
        assert r.headers["retry-after"] == "1"
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200, 200]  # served once the model is free
        # A request that could never fit the queue is the client's error, not a retry.
        r = client.post("/classify", json={"adapter": "alpha", "inputs": ["a", "b", "c"]})
        assert "split it" in _error(r, 422, "validation_error")
        assert 'inference_rejected_total{reason="queue_full"} 1.0' in client.get("/metrics").text


def test_request_timeout_is_504(serve):
    with serve(request_timeout_s=0.3) as client:
        batcher = client.app.state.batcher
        client.portal.start_task_soon(batcher.run_exclusive, time.sleep, 1.5)  # busy model
        time.sleep(0.05)
        started = time.monotonic()
        r = client.post("/classify", json={"adapter": "alpha", "inputs": "x"})
        _error(r, 504, "timeout")
        assert time.monotonic() - started < 1.2
        time.sleep(1.5)
        assert client.post("/classify", json={"adapter": "alpha", "inputs": "x"}).is_success


def test_failed_batch_fails_each_of_its_requests(serve, monkeypatch):
    with serve() as client:
        engine = client.app.state.engine
        batcher = client.app.state.batcher

        def broken(segments):
            raise RuntimeError("secret detail of a device fault")

        monkeypatch.setattr(engine, "forward", broken)
        client.portal.start_task_soon(batcher.run_exclusive, time.sleep, 0.5)  # let them queue
        responses = []

        def call(name):
            responses.append(client.post("/classify", json={"adapter": name, "inputs": ["x"]}))

        threads = [threading.Thread(target=call, args=(n,)) for n in ("alpha", "beta", "alpha")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(responses) == 3
        for r in responses:
            message = _error(r, 500, "inference_failed")
            assert "secret" not in message
        monkeypatch.undo()
        assert client.post("/classify", json={"adapter": "alpha", "inputs": "x"}).is_success


def test_unexpected_errors_are_logged_and_answered_generically(client, monkeypatch, caplog):
    store = client.app.state.store

    def broken():
        raise RuntimeError("secret path /etc/shadow")

    monkeypatch.setattr(store, "page", lambda *a: broken())
    r = client.get("/adapters")
    message = _error(r, 500, "internal_error")
    assert "secret" not in message and "secret" not in r.text
    assert any("secret path" in str(rec.exc_info) for rec in caplog.records if rec.exc_info)


def test_health_ready_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok", "details": {}}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["details"]["device"] == "cpu"
    client.post("/classify", json={"adapter": "alpha", "inputs": TEXTS})
    client.post("/classify", json={"adapter": "nope", "inputs": "x"})
    text = client.get("/metrics").text
    assert 'http_requests_total{method="POST",route="/classify",status="200"} 1.0' in text
    assert 'http_requests_total{method="POST",route="/classify",status="404"} 1.0' in text
    assert 'http_request_duration_seconds_count{method="POST",route="/classify"} 2.0' in text
    assert "inference_batch_size_count 1.0" in text
    assert "inference_batch_size_sum 3.0" in text
    assert "adapter_loads_total 1.0" in text
    assert 'adapters_resident{tier="device"} 1.0' in text
    assert 'adapter_cache_hits_total{tier="host"} 1.0' in text  # read ahead, off the thread
    assert "adapter_activation_seconds_count 1.0" in text
    assert "adapter_cold_seconds_count 1.0" in text
    assert "inference_queue_depth 0.0" in text
    assert "adapter_load_seconds_count 1.0" in text
