"""A real server whose store holds one adapter of every method: concurrent traffic mixing them
(also several methods in one request) gets only 200s, each score equal to that adapter alone
(issue 9)."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
import torch
from adapters import AdapterSetup, LoRAConfig, PrefixTuningConfig, SeqBnConfig

from adapters_store import AdapterStore
from app.serving.engine import Engine, module_name
from tests.support.faults import metric
from tests.support.server import running_server
from tests.support.tiny import keyword_dataset

CONFIGS = {
    "sbn": "seq_bn",
    "dsbn": "double_seq_bn",
    "pbn": "par_bn",
    "lora": "lora",
    "ia3": "ia3",
    "prefix": "prefix_tuning",
    "prefix-flat": PrefixTuningConfig(flat=True).to_dict(),  # as the trainer stores them
    "lora-ffn": LoRAConfig(selfattn_lora=False, intermediate_lora=True, r=4).to_dict(),
    "sbn-gated": SeqBnConfig(reduction_factor=4, use_gating=True).to_dict(),
}
NAMES = list(CONFIGS)
LABELS = {n: {k: f"{n}-{k}" for k in range((2, 3, 5)[i % 3])} for i, n in enumerate(NAMES)}
POOL = [row["text"] for row in keyword_dataset(24, seed=5)]
TOL = 1e-5
QUIET = {"APP_EMBEDDED_WORKER": "false", "APP_ACCESS_LOG": "false"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, factory):
    data = tmp_path_factory.mktemp("mixed-data")
    store = AdapterStore(data / "adapters")
    for seed, name in enumerate(NAMES, start=40):
        factory.add_to_store(store, name, seed=seed, config=CONFIGS[name], labels=LABELS[name])
    return data


@pytest.fixture(scope="module")
def expected(tiny_model_dir, data_dir) -> dict[tuple[str, str], dict[str, float]]:
    """The library's own path in-process: whole model, AdapterSetup, one text at a time."""
    engine = Engine.load(base_model=str(tiny_model_dir))
    out = {}
    for name in NAMES:
        engine.load_adapter(name, data_dir / "adapters" / name)
        slot = module_name(name)
        for text in POOL:
            batch = engine.tokenizer([text], return_tensors="pt")
            with torch.inference_mode(), AdapterSetup(slot, head_setup=slot):
                probs = engine.model(**batch).logits.softmax(-1)[0].tolist()
            out[name, text] = {LABELS[name][i]: p for i, p in enumerate(probs)}
    return out


def _check(body: dict, name: str, texts: list[str], expected) -> None:
    assert body["adapter"] == name
    assert len(body["predictions"]) == len(texts)
    for text, prediction in zip(texts, body["predictions"], strict=True):
        want = expected[name, text]
        assert {p["label"] for p in prediction} == set(want)
        for p in prediction:
            assert abs(p["score"] - want[p["label"]]) <= TOL, (name, text, p, want)


async def _storm(url: str, calls: list[tuple[list[str], list[str]]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(names: list[str], texts: list[str]) -> httpx.Response:
            which = {"adapter": names[0]} if len(names) == 1 else {"adapters": names}
            return await client.post("/classify", json={**which, "inputs": texts, "top_k": None})

        return await asyncio.gather(*(one(n, t) for n, t in calls))


@pytest.mark.timeout(300)
def test_concurrent_requests_over_every_method_are_exact(
    tiny_model_dir, data_dir, expected, tmp_path
):
    rng = random.Random(9)
    # Alternating methods, one or two texts; every tenth request asks several adapters at once.
    calls = [
        (
            rng.sample(NAMES, rng.randint(2, len(NAMES))) if i % 10 == 9 else [NAMES[i % 8]],
            rng.sample(POOL, rng.randint(1, 2)),
        )
        for i in range(160)
    ]
    env = {**QUIET, "APP_MAX_BATCH_SIZE": "16", "APP_MAX_WAIT_MS": "5", "APP_TORCH_THREADS": "1"}
    env["APP_REQUEST_TIMEOUT_S"] = "120"  # a shared 2-core box can be slow; 504s still fail
    with running_server(
        data_dir=data_dir, base_model=tiny_model_dir, env=env, log_path=tmp_path / "s.log"
    ) as server:
        responses = asyncio.run(asyncio.wait_for(_storm(server.url, calls), timeout=240))
        metrics = httpx.get(server.url + "/metrics").text
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * len(calls), [r.text for r in responses if r.status_code != 200][:3]
    for (names, texts), response in zip(calls, responses, strict=True):
        body = response.json()
        results = [body] if len(names) == 1 else body["results"]
        assert [r["adapter"] for r in results] == names
        for name, result in zip(names, results, strict=True):
            _check(result, name, texts, expected)
    # Requests shared forward passes. The batcher plans one pass per body-pass key (here one
    # per adapter: every adapter has its own method or wiring), so a pass shares rows of one
    # adapter across requests; mixing methods inside one forward is test_engine_mixed's part.
    passes = metric(metrics, "inference_batch_size_count")
    segments = sum(len(names) for names, _ in calls)  # (request, adapter) pairs
    print(f"{passes:.0f} forward passes for {segments} request x adapter segments")
    assert passes < 0.85 * segments, "requests did not share forward passes"
