"""Every task type and sentence pairs through the real app (issue 21): /classify, the Hugging
Face Inference API route and the Open Inference Protocol, each shape of input and output, the
scores within 1e-5 of the library alone, and 4xx for inputs of a bad shape."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from adapters import AdapterSetup

from adapters_store import AdapterStore
from app.config import Settings
from app.main import create_app
from app.serving.engine import Engine
from tests.support.server import wait_client_ready
from tests.support.tasks import add_task_adapter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TOL = 1e-5
EMOTIONS = {0: "joy", 1: "anger", 2: "fear", 3: "love"}
THRESHOLDS = {0: 0.3, 1: 0.9, 2: 0.5, 3: 0.05}
PAIR = {"text": "a cat sat on the mat", "text_pair": "the mat had a cat on it"}
TEXTS = ["a good film", "the plot was awful", "my phone is great but the battery is poor"]


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_model_dir, factory) -> Iterator[TestClient]:
    data_dir = tmp_path_factory.mktemp("tasks-api")
    settings = Settings(
        base_model=str(tiny_model_dir), data_dir=data_dir, pass_cost_calibration=False,
        allowed_hosts=["testserver"], max_inputs_per_request=8, max_text_chars=100,
    )  # fmt: skip
    store = AdapterStore(settings.adapters_dir)
    add_task_adapter(factory, store, "sentiment", task="single_label", seed=31)
    add_task_adapter(
        factory, store, "emotions", task="multi_label", seed=32, labels=EMOTIONS,
        thresholds=THRESHOLDS, config="lora",
    )  # fmt: skip
    add_task_adapter(
        factory, store, "stsb", task="regression", seed=33, labels={0: "similarity"},
        text_pair=True,
    )  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_client_ready(client)
        yield client


@pytest.fixture(scope="module")
def library(client, tiny_model_dir):
    """name, input -> the head's logits from the library alone (one input, AdapterSetup)."""
    engine = Engine.load(base_model=str(tiny_model_dir))
    store_root = Path(client.app.state.store.root)
    cache: dict = {}

    def logits(name: str, item: str | dict) -> list[float]:
        key = (name, str(item))
        if key not in cache:
            if not engine.has_adapter(name):
                engine.load_adapter(name, store_root / name)
            args = [item] if isinstance(item, str) else [item["text"], item.get("text_pair")]
            batch = engine.tokenizer(*args, return_tensors="pt", truncation=True)
            module = engine.module_of(name)
            with torch.inference_mode(), AdapterSetup(module, head_setup=module):
                cache[key] = engine.model(**batch).logits[0].tolist()
        return cache[key]

    return logits


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _post(client, body: dict, path: str = "/classify") -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_multi_label_sigmoid_scores_and_labels_over_threshold(client, library):
    body = _post(client, {"adapter": "emotions", "inputs": TEXTS})
    assert body["task"] == "multi_label" and len(body["labels"]) == len(TEXTS)
    for text, ranked, chosen in zip(TEXTS, body["predictions"], body["labels"], strict=True):
        probs = [sigmoid(x) for x in library("emotions", text)]
        assert len(ranked) == len(EMOTIONS)  # top_k unsent: every label
        for p in ranked:
            index = next(i for i, name in EMOTIONS.items() if name == p["label"])
            assert p["score"] == pytest.approx(probs[index], abs=TOL)
        want = [EMOTIONS[i] for i in range(4) if probs[i] >= THRESHOLDS[i]]
        assert sorted(chosen) == sorted(want)
    assert any(body["labels"]) and any(len(c) < len(EMOTIONS) for c in body["labels"])
    low = _post(client, {"adapter": "emotions", "inputs": TEXTS, "threshold": 0.0, "top_k": 1})
    assert all(sorted(c) == sorted(EMOTIONS.values()) for c in low["labels"])
    assert [len(p) for p in low["predictions"]] == [1, 1, 1]
    high = _post(client, {"adapter": "emotions", "inputs": TEXTS, "threshold": 1.0})
    assert high["labels"] == [[], [], []]


def test_regression_answers_the_number(client, library):
    body = _post(client, {"adapter": "stsb", "inputs": [PAIR, TEXTS[0]]})
    assert body["task"] == "regression" and "labels" not in body
    want = [library("stsb", PAIR)[0], library("stsb", TEXTS[0])[0]]
    assert [set(p) for p in body["predictions"]] == [{"score"}, {"score"}]
    assert [p["score"] for p in body["predictions"]] == pytest.approx(want, abs=TOL)
    squashed = _post(client, {"adapter": "stsb", "inputs": PAIR, "function_to_apply": "sigmoid"})
    assert squashed["predictions"][0]["score"] == pytest.approx(sigmoid(want[0]), abs=TOL)


def test_pairs_and_texts_mix_and_single_label_shape_is_unchanged(client, library):
    inputs = [TEXTS[0], PAIR, {"text": TEXTS[1]}]
    body = _post(client, {"adapter": "sentiment", "inputs": inputs, "top_k": None})
    assert set(body) == {"adapter", "version", "task", "predictions"}
    assert body["task"] == "single_label"
    for item, ranked in zip([TEXTS[0], PAIR, TEXTS[1]], body["predictions"], strict=True):
        probs = torch.tensor(library("sentiment", item)).softmax(-1).tolist()
        assert {p["label"]: p["score"] for p in ranked} == pytest.approx(
            {"negative": probs[0], "positive": probs[1]}, abs=TOL
        )
    # A pair is not its first text: the second text reaches the model.
    alone = _post(client, {"adapter": "sentiment", "inputs": PAIR["text"], "top_k": None})
    assert alone["predictions"][0] != body["predictions"][1]


@pytest.mark.parametrize(
    ("function", "apply"),
    [("none", lambda xs: xs), ("sigmoid", lambda xs: [sigmoid(x) for x in xs])],
)
def test_function_to_apply_on_a_single_label_adapter(client, library, function, apply):
    body = _post(
        client,
        {"adapter": "sentiment", "inputs": TEXTS[2], "top_k": None, "function_to_apply": function},
    )
    want = apply(library("sentiment", TEXTS[2]))
    got = {p["label"]: p["score"] for p in body["predictions"][0]}
    assert got == pytest.approx({"negative": want[0], "positive": want[1]}, abs=TOL)


def test_one_request_over_adapters_of_every_task(client, library):
    body = _post(client, {"adapters": ["sentiment", "emotions", "stsb"], "inputs": [PAIR, "ok"]})
    single, multi, regression = body["results"]
    assert [r["task"] for r in body["results"]] == ["single_label", "multi_label", "regression"]
    assert [len(p) for p in single["predictions"]] == [1, 1]
    assert [len(p) for p in multi["predictions"]] == [4, 4] and len(multi["labels"]) == 2
    assert regression["predictions"][1]["score"] == pytest.approx(library("stsb", "ok")[0], abs=TOL)


@pytest.mark.parametrize(
    "inputs",
    [
        [{"text": ""}],
        [{"text": "a", "text_pair": ""}],
        [{"text_pair": "only the second"}],
        [{"text": "a", "pair": "b"}],
        [{"text": 5}],
        [["a", "b"]],
        {"text": "a" * 60, "text_pair": "b" * 41},  # 101 characters: the limit is 100 per input
        [],
    ],
)
def test_bad_input_shapes_are_422(client, inputs):
    response = client.post("/classify", json={"adapter": "sentiment", "inputs": inputs})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_error"


@pytest.mark.parametrize(
    "extra", [{"function_to_apply": "relu"}, {"threshold": 1.5}, {"threshold": -0.1}]
)
def test_bad_options_are_422(client, extra):
    response = client.post("/classify", json={"adapter": "emotions", "inputs": "x", **extra})
    assert response.status_code == 422, response.text


def test_hf_route_honours_function_to_apply_and_tasks(client, library):
    multi = _post(
        client,
        {"inputs": TEXTS[0], "parameters": {"function_to_apply": "sigmoid"}},
        "/models/emotions",
    )
    probs = [sigmoid(x) for x in library("emotions", TEXTS[0])]
    assert {p["label"]: p["score"] for p in multi[0]} == pytest.approx(
        {EMOTIONS[i]: p for i, p in enumerate(probs)}, abs=TOL
    )
    raw = _post(
        client, {"inputs": [PAIR], "parameters": {"function_to_apply": "none"}}, "/models/sentiment"
    )
    assert [p["score"] for p in sorted(raw[0], key=lambda p: p["label"])] == pytest.approx(
        library("sentiment", PAIR), abs=TOL
    )
    (regression,) = _post(client, {"inputs": PAIR}, "/models/stsb")
    assert regression == [
        {"label": "similarity", "score": pytest.approx(library("stsb", PAIR)[0], abs=TOL)}
    ]


def _infer(client, name: str, body: dict) -> dict:
    return {o["name"]: o for o in _post(client, body, f"/v2/models/{name}/infer")["outputs"]}


def test_open_inference_outputs_per_task(client, library):
    meta = {n: client.get(f"/v2/models/{n}").json() for n in ("sentiment", "emotions", "stsb")}
    names = {n: [o["name"] for o in m["outputs"]] for n, m in meta.items()}
    assert names == {
        "sentiment": ["labels", "probabilities", "logits"],
        "emotions": ["labels", "probabilities", "over_threshold", "logits"],
        "stsb": ["score", "logits"],
    }
    assert [i["name"] for i in meta["stsb"]["inputs"]] == ["text", "text_pair"]
    text = {"name": "text", "datatype": "BYTES", "shape": [2], "data": [TEXTS[0], PAIR["text"]]}
    pair = {
        "name": "text_pair",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["x", PAIR["text_pair"]],
    }
    out = _infer(client, "stsb", {"inputs": [text, pair]})
    assert out["score"]["shape"] == [2, 1] and out["score"]["datatype"] == "FP32"
    want = [library("stsb", {"text": TEXTS[0], "text_pair": "x"})[0], library("stsb", PAIR)[0]]
    assert out["score"]["data"] == pytest.approx(want, abs=TOL)
    multi = _infer(client, "emotions", {"inputs": [text], "parameters": {"threshold": 0.5}})
    probs = [sigmoid(x) for x in library("emotions", TEXTS[0])]
    ranked = sorted(range(4), key=lambda i: -probs[i])
    assert multi["labels"]["data"][:4] == [EMOTIONS[i] for i in ranked]
    assert multi["probabilities"]["data"][:4] == pytest.approx([probs[i] for i in ranked], abs=TOL)
    assert multi["over_threshold"]["data"][:4] == [probs[i] >= 0.5 for i in ranked]
    assert multi["logits"]["data"][:4] == pytest.approx(library("emotions", TEXTS[0]), abs=TOL)
    soft = _infer(
        client, "emotions", {"inputs": [text], "parameters": {"function_to_apply": "softmax"}}
    )
    assert sum(soft["probabilities"]["data"][:4]) == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("sentiment", {"outputs": [{"name": "score"}]}),
        ("stsb", {"outputs": [{"name": "labels"}]}),
        ("emotions", {"parameters": {"function_to_apply": "relu"}}),
        ("emotions", {"parameters": {"threshold": 2}}),
        ("stsb", {"extra_pair": True}),
    ],
)
def test_open_inference_bad_requests_are_422(client, name, body):
    inputs = [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["x"]}]
    if body.pop("extra_pair", False):
        inputs.append({"name": "text_pair", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]})
    response = client.post(f"/v2/models/{name}/infer", json={"inputs": inputs, **body})
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["error"], str)
