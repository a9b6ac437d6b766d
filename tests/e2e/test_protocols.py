"""The ecosystem's own clients against a real `python -m app`: huggingface_hub's InferenceClient
(Hugging Face Inference API) and tritonclient.http (Open Inference Protocol). Each must give
the labels and scores that /classify gives, within 1e-5."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from adapters_store import AdapterStore
from tests.support.server import running_server
from tests.support.tiny import keyword_dataset

KEY = "classify-key-0123456789"
ADMIN = "admin-key-0123456789ab"
LABELS3 = {0: "neg", 1: "neu", 2: "pos"}
TEXTS = [row["text"] for row in keyword_dataset(6, seed=3)]
TOL = 1e-5


@pytest.fixture(scope="module")
def server(tmp_path_factory, factory, tiny_model_dir):
    data = tmp_path_factory.mktemp("protocols")
    store = AdapterStore(data / "adapters")
    factory.add_to_store(store, "sentiment", seed=4)
    factory.add_to_store(store, "three", seed=5, labels=LABELS3)
    env = {
        "APP_EMBEDDED_WORKER": "false",
        "APP_API_KEYS": f"{KEY}:classify,{ADMIN}:classify+admin",
        "APP_MAX_INPUTS_PER_REQUEST": "8",
        "APP_MAX_TEXT_CHARS": "300",
    }
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as srv:
        yield srv


@pytest.fixture
def hub_http(monkeypatch):
    """huggingface_hub refuses every URL, 127.0.0.1 included, when HF_HUB_OFFLINE=1 (as this
    suite sets it): lift that for the InferenceClient tests, which only talk to 127.0.0.1."""
    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    monkeypatch.undo()
    reset_sessions()


def classify(server, adapter: str, texts: list[str]) -> list[list[dict]]:
    response = httpx.post(
        server.url + "/classify",
        json={"adapter": adapter, "inputs": texts, "top_k": None},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def assert_same(got: list[tuple[str, float]], want: list[dict]) -> None:
    assert [label for label, _ in got] == [p["label"] for p in want]
    for (_, score), p in zip(got, want, strict=True):
        assert abs(score - p["score"]) < TOL


# ---- Hugging Face Inference API -------------------------------------------------------------
@pytest.mark.parametrize("adapter", ["sentiment", "three"])
def test_inference_client_matches_classify(server, adapter, hub_http):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=f"{server.url}/models/{adapter}", token=KEY, timeout=30)
    want = classify(server, adapter, TEXTS)
    for text, expected in zip(TEXTS, want, strict=True):
        got = client.text_classification(text)
        assert_same([(e.label, e.score) for e in got], expected)
    top = client.text_classification(TEXTS[0], top_k=1)
    assert [e.label for e in top] == [want[0][0]["label"]]


def test_hf_route_lists_and_errors(server):
    url, auth = server.url + "/models/three", {"Authorization": f"Bearer {KEY}"}
    body = httpx.post(url, json={"inputs": TEXTS[:3]}, headers=auth, timeout=30).json()
    want = classify(server, "three", TEXTS[:3])
    for got, expected in zip(body, want, strict=True):
        assert_same([(p["label"], p["score"]) for p in got], expected)

    def post(path: str, payload: dict, headers=auth) -> httpx.Response:
        return httpx.post(server.url + path, json=payload, headers=headers, timeout=30)

    assert post("/models/three", {"inputs": "x"}, headers={}).status_code == 401
    missing = post("/models/nope", {"inputs": "x"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "adapter_not_found"
    too_many = post("/models/three", {"inputs": ["x"] * 9})
    assert too_many.status_code == 422 and too_many.json()["error"]["code"] == "validation_error"
    assert post("/models/three", {"inputs": "x" * 301}).status_code == 422
    sigmoid = post("/models/three", {"inputs": "x", "parameters": {"function_to_apply": "sigmoid"}})
    assert sigmoid.status_code == 200 and sum(p["score"] for p in sigmoid.json()[0]) != 1.0
    relu = post("/models/three", {"inputs": "x", "parameters": {"function_to_apply": "relu"}})
    assert relu.status_code == 422


def test_inference_client_raises_on_unknown_adapter(server, hub_http):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    client = InferenceClient(model=f"{server.url}/models/nope", token=KEY, timeout=30)
    with pytest.raises(HfHubHTTPError) as info:
        client.text_classification("hello")
    assert info.value.response.status_code == 404


# ---- Open Inference Protocol ----------------------------------------------------------------
def triton(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_matches_classify(server, binary):
    import tritonclient.http as httpclient

    client = triton(server)
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("three", headers=auth)
    assert not client.is_model_ready("nope", headers=auth)
    meta = client.get_model_metadata("three", headers=auth)
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in meta["outputs"]} == {"labels", "probabilities", "logits"}

    tensor = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("labels", "probabilities")
    ]
    result = client.infer("three", [tensor], outputs=outputs, headers=auth)
    labels, probs = result.as_numpy("labels"), result.as_numpy("probabilities")
    assert labels.shape == probs.shape == (len(TEXTS), 3)
    want = classify(server, "three", TEXTS)
    for row_labels, row_probs, expected in zip(labels, probs, want, strict=True):
        got = [
            (lab.decode() if isinstance(lab, bytes) else lab, float(p))
            for lab, p in zip(row_labels, row_probs, strict=True)
        ]
        assert_same(got, expected)
    best = client.infer(
        "three", [tensor], headers={"Authorization": f"Bearer {KEY}"}, parameters={"top_k": 1}
    )
    assert list(best.as_numpy("labels")[:, 0]) == [w[0]["label"] for w in want]  # JSON: str
    assert best.get_response()["model_version"] == "1"


def test_tritonclient_errors(server):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = triton(server)
    tensor = httpclient.InferInput("text", [1], "BYTES")
    tensor.set_data_from_numpy(np.array(["hello"], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer("three", [tensor])  # no key
    assert info.value.status() == "401" and "key" in info.value.message().lower()
    auth = {"Authorization": f"Bearer {KEY}"}
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [tensor], headers=auth)
    assert info.value.status() == "404" and "nope" in info.value.message()
    many = httpclient.InferInput("text", [9], "BYTES")
    many.set_data_from_numpy(np.array(["x"] * 9, dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer("three", [many], headers=auth)
    assert info.value.status() == "422"
    response = httpx.post(  # tritonclient adds its own headers to `auth`: a fresh dict here
        server.url + "/v2/models/three/infer",
        json={"inputs": [{"name": "other", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 422 and isinstance(response.json()["error"], str)
