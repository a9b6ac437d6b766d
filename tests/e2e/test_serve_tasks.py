"""A real server whose store holds adapters of every task type (issue 21): a storm of concurrent
requests mixing single-label, multi-label and regression adapters, texts and sentence pairs
(also several tasks in one request) gets only 200s, each score within 1e-5 of that adapter alone;
and the ecosystem's clients (huggingface_hub's InferenceClient with function_to_apply="sigmoid",
tritonclient.http) work unchanged against multi-label and regression adapters."""

from __future__ import annotations

import asyncio
import math
import random

import httpx
import numpy as np
import pytest
import torch
from adapters import AdapterSetup

from adapters_store import AdapterStore
from app.serving.engine import Engine, module_name
from tests.support.server import running_server
from tests.support.tasks import add_task_adapter
from tests.support.tiny import keyword_dataset

TOL = 1e-5
EMOTIONS = {0: "joy", 1: "anger", 2: "fear", 3: "love", 4: "none"}
# name -> (task, method, labels, thresholds, text_pair)
ADAPTERS = {
    "sentiment": ("single_label", "seq_bn", {0: "neg", 1: "neu", 2: "pos"}, None, False),
    "mrpc": ("single_label", "par_bn", {0: "different", 1: "paraphrase"}, None, True),
    "emotions": ("multi_label", "lora", EMOTIONS, {0: 0.3, 1: 0.6, 3: 0.45}, False),
    "topics": ("multi_label", "prefix_tuning", {i: f"t{i}" for i in range(3)}, None, False),
    "stsb": ("regression", "seq_bn", {0: "similarity"}, None, True),
    "rating": ("regression", "ia3", {0: "stars"}, None, False),
}
NAMES = list(ADAPTERS)
_TEXTS = [row["text"] for row in keyword_dataset(16, seed=8)]
POOL: list = _TEXTS[:8] + [
    {"text": a, "text_pair": b} for a, b in zip(_TEXTS[8:], _TEXTS[:8], strict=True)
]
KEY = "classify-key-0123456789"
QUIET = {"APP_EMBEDDED_WORKER": "false", "APP_ACCESS_LOG": "false"}


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, factory):
    data = tmp_path_factory.mktemp("tasks-data")
    store = AdapterStore(data / "adapters")
    for seed, (name, (task, method, labels, thresholds, pair)) in enumerate(ADAPTERS.items()):
        add_task_adapter(
            factory, store, name, task=task, seed=70 + seed, config=method, labels=labels,
            thresholds=thresholds, text_pair=pair,
        )  # fmt: skip
    return data


def _key(item) -> str:
    return item if isinstance(item, str) else f"{item['text']}\x00{item['text_pair']}"


@pytest.fixture(scope="module")
def logits(tiny_model_dir, data_dir) -> dict[tuple[str, str], list[float]]:
    """The library's own path in-process: whole model, AdapterSetup, one input at a time."""
    engine = Engine.load(base_model=str(tiny_model_dir))
    out = {}
    for name in NAMES:
        engine.load_adapter(name, data_dir / "adapters" / name)
        slot = module_name(name)
        for item in POOL:
            args = [item] if isinstance(item, str) else [item["text"], item["text_pair"]]
            batch = engine.tokenizer(*args, return_tensors="pt", truncation=True)
            with torch.inference_mode(), AdapterSetup(slot, head_setup=slot):
                out[name, _key(item)] = engine.model(**batch).logits[0].tolist()
    return out


def _check(result: dict, name: str, inputs: list, logits) -> None:
    task, _, labels, thresholds, _ = ADAPTERS[name]
    assert result["adapter"] == name and result["task"] == task
    for index, item in enumerate(inputs):
        raw = logits[name, _key(item)]
        prediction = result["predictions"][index]
        if task == "regression":
            assert prediction["score"] == pytest.approx(raw[0], abs=TOL), (name, item)
            continue
        if task == "single_label":
            want = torch.tensor(raw).softmax(-1).tolist()
        else:
            want = [sigmoid(x) for x in raw]
            limit = [(thresholds or {}).get(i, 0.5) for i in range(len(raw))]
            chosen = {labels[i] for i, p in enumerate(want) if p >= limit[i]}
            assert set(result["labels"][index]) == chosen, (name, item)
        got = {p["label"]: p["score"] for p in prediction}
        assert got == pytest.approx({labels[i]: p for i, p in enumerate(want)}, abs=TOL)


async def _storm(url: str, calls: list[tuple[list[str], list]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(names: list[str], inputs: list) -> httpx.Response:
            which = {"adapter": names[0]} if len(names) == 1 else {"adapters": names}
            return await client.post("/classify", json={**which, "inputs": inputs, "top_k": None})

        return await asyncio.gather(*(one(n, t) for n, t in calls))


@pytest.fixture(scope="module")
def server(tiny_model_dir, data_dir, tmp_path_factory):
    env = {**QUIET, "APP_MAX_BATCH_SIZE": "16", "APP_MAX_WAIT_MS": "5", "APP_TORCH_THREADS": "1"}
    env["APP_REQUEST_TIMEOUT_S"] = "120"  # a shared 2-core box can be slow; 504s still fail
    log = tmp_path_factory.mktemp("tasks-log") / "s.log"
    with running_server(data_dir=data_dir, base_model=tiny_model_dir, env=env, log_path=log) as s:
        yield s


@pytest.mark.timeout(300)
def test_a_storm_over_every_task_type_and_pairs_is_exact(server, logits):
    rng = random.Random(21)
    # One or two inputs (texts and pairs mixed); every eighth request asks several adapters.
    calls = [
        (
            rng.sample(NAMES, rng.randint(2, len(NAMES))) if i % 8 == 7 else [NAMES[i % 6]],
            rng.sample(POOL, rng.randint(1, 2)),
        )
        for i in range(120)
    ]
    responses = asyncio.run(asyncio.wait_for(_storm(server.url, calls), timeout=240))
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * len(calls), [r.text for r in responses if r.status_code != 200][:3]
    for (names, inputs), response in zip(calls, responses, strict=True):
        body = response.json()
        results = [body] if len(names) == 1 else body["results"]
        assert [r["adapter"] for r in results] == names
        for name, result in zip(names, results, strict=True):
            _check(result, name, inputs, logits)


@pytest.fixture
def hub_http(monkeypatch):
    """huggingface_hub refuses every URL while HF_HUB_OFFLINE=1: lift it (127.0.0.1 only)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    monkeypatch.undo()
    reset_sessions()


def test_inference_client_sigmoid_on_multi_label_and_regression(server, logits, hub_http):
    from huggingface_hub import InferenceClient

    text = _TEXTS[0]
    emotions = InferenceClient(model=f"{server.url}/models/emotions", timeout=30)
    got = emotions.text_classification(text, function_to_apply="sigmoid")
    want = {EMOTIONS[i]: sigmoid(x) for i, x in enumerate(logits["emotions", text])}
    assert {e.label: e.score for e in got} == pytest.approx(want, abs=TOL)
    assert [e.score for e in got] == sorted((e.score for e in got), reverse=True)
    assert len(emotions.text_classification(text, top_k=2)) == 2
    rating = InferenceClient(model=f"{server.url}/models/rating", timeout=30)
    (number,) = rating.text_classification(text)
    assert number.label == "stars"
    assert number.score == pytest.approx(logits["rating", text][0], abs=TOL)
    (squashed,) = rating.text_classification(text, function_to_apply="sigmoid")
    assert squashed.score == pytest.approx(sigmoid(logits["rating", text][0]), abs=TOL)


def _bytes_input(name: str, values: list[str], binary: bool):
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
    return tensor


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_on_multi_label_and_regression(server, logits, binary):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    meta = client.get_model_metadata("stsb")
    assert [o["name"] for o in meta["outputs"]] == ["score", "logits"]
    pairs = [p for p in POOL if not isinstance(p, str)][:3]
    inputs = [
        _bytes_input("text", [p["text"] for p in pairs], binary),
        _bytes_input("text_pair", [p["text_pair"] for p in pairs], binary),
    ]
    wanted = [httpclient.InferRequestedOutput("score", binary_data=binary)]
    score = client.infer("stsb", inputs, outputs=wanted).as_numpy("score")
    assert score.shape == (3, 1)
    want = [logits["stsb", _key(p)][0] for p in pairs]
    assert score[:, 0].tolist() == pytest.approx(want, abs=TOL)

    texts = _TEXTS[:3]
    names = ("labels", "probabilities", "over_threshold", "logits")
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = client.infer("emotions", [_bytes_input("text", texts, binary)], outputs=wanted)
    labels, probs = result.as_numpy("labels"), result.as_numpy("probabilities")
    chosen, raw = result.as_numpy("over_threshold"), result.as_numpy("logits")
    assert labels.shape == probs.shape == chosen.shape == raw.shape == (3, len(EMOTIONS))
    thresholds = ADAPTERS["emotions"][3]
    for row, text in enumerate(texts):
        want = {EMOTIONS[i]: sigmoid(x) for i, x in enumerate(logits["emotions", text])}
        got = {_text(label): float(p) for label, p in zip(labels[row], probs[row], strict=True)}
        assert got == pytest.approx(want, abs=TOL)
        over = {_text(label) for label, c in zip(labels[row], chosen[row], strict=True) if c}
        index = {name: i for i, name in EMOTIONS.items()}
        assert over == {n for n, p in want.items() if p >= thresholds.get(index[n], 0.5)}
        assert raw[row].tolist() == pytest.approx(logits["emotions", text], abs=TOL)
