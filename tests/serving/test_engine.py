"""The engine with the tiny model: BatchSplit golden, base integrity, tokenisation, errors."""

from __future__ import annotations

import hashlib

import pytest
import torch
from adapters import AdapterSetup

from adapters_store import AdapterStore, InvalidAdapter
from adapters_store.rendering import rank
from app.serving.adapter_cache import AdapterCache
from app.serving.engine import Engine, Segment, choose_dtype
from app.serving.errors import BaseModelLoadError, TextTooLong

TEXTS = [
    "a good film",
    "the plot was awful and the acting was poor",
    "great",
    "my phone battery is terrible and the screen is bad but the price was great",
    "one two three",
    "the album",
]


@pytest.fixture
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


@pytest.fixture
def store(tmp_path, factory) -> AdapterStore:
    store = AdapterStore(tmp_path / "store")
    for seed, name in enumerate(["a", "b", "c", "d"]):
        labels = {i: f"{name}{i}" for i in range(2 + seed % 3)}
        factory.add_to_store(store, name, seed=seed + 1, labels=labels)
    return store


def _alone(engine: Engine, name: str, text: str) -> list[float]:
    """The library's own path: the whole AdapterModel with AdapterSetup, one text alone."""
    batch = engine.tokenizer([text], return_tensors="pt")
    module = engine.module_of(name)  # its slot, or its own module (the library path)
    with torch.inference_mode(), AdapterSetup(module, head_setup=module):
        return engine.model(**batch).logits[0].tolist()  # forward gives logits


def _digests(engine: Engine) -> dict[str, str]:
    return {
        k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for k, v in engine.base_state().items()
    }


def test_mixed_adapter_batch_equals_each_adapter_alone(engine, store):
    cache = AdapterCache(engine=engine, store=store, max_count=8, max_bytes=1 << 30)
    names = ["a", "b", "c", "d"]
    for i, name in enumerate(names):
        cache.ensure(name, pinned=names[:i])  # as the pass runner does: all usable at once
    plan = [("c", TEXTS[:2]), ("a", TEXTS[2:3]), ("d", TEXTS[3:6]), ("b", TEXTS)]
    segments = [Segment(name, engine.tokenize(texts)) for name, texts in plan]
    got = engine.forward(segments)
    assert [len(rows) for rows in got] == [len(texts) for _, texts in plan]
    for (name, texts), rows in zip(plan, got, strict=True):
        for text, probs in zip(texts, rows, strict=True):
            # Raw logits, within the house tolerance (1e-5): the one-pass path's gathered
            # matmuls round differently from the library's per-adapter ones (~1e-6 here).
            assert probs == pytest.approx(_alone(engine, name, text), abs=1e-5)
            # Our own single-row pass agrees with its row in the mixed batch.
            (single,) = engine.forward([Segment(name, engine.tokenize([text]))])
            assert probs == pytest.approx(single[0], abs=1e-5)
    # Different adapters really give different outputs (the golden check can fail).
    assert got[0][0] != pytest.approx(got[3][0], abs=1e-3)


def test_base_tensors_never_change(engine, store, factory):
    before = _digests(engine)
    keys = set(engine.model.state_dict())
    cache = AdapterCache(engine=engine, store=store, max_count=2, max_bytes=1 << 30)
    for name in ["a", "b", "c", "d", "a"]:  # loads, evictions, a reload
        cache.ensure(name)
        engine.forward([Segment(name, engine.tokenize(TEXTS))])
    factory.add_to_store(store, "a", seed=99, overwrite=True, labels={0: "x", 1: "y"})
    cache.ensure("a")  # new version: reload
    store.delete("b")
    with pytest.raises(Exception, match="not found"):
        cache.ensure("b")
    for name in ["a", "c", "d"]:
        cache.unload(name)
    cache.clear()  # the slots go too
    assert set(engine.model.state_dict()) == keys  # nothing left behind
    assert _digests(engine) == before
    assert engine.base_ref.fingerprint is not None


def test_tokenize_truncates_or_refuses(engine):
    long_text = "good " * 200
    (ids,) = engine.tokenize([long_text], truncation=True)
    assert len(ids) == engine.max_length == 64
    with pytest.raises(TextTooLong, match=r"inputs\[1\] has \d+ tokens; the limit is 64"):
        engine.tokenize(["short", long_text], truncation=False)
    assert len(engine.tokenize(["short"], truncation=False)[0]) < 64


def test_load_adapter_refuses_missing_folder_without_hub_lookup(engine, tmp_path):
    with pytest.raises(InvalidAdapter, match="not found"):
        engine.load_adapter("ghost", tmp_path / "ghost")
    assert not engine.has_adapter("ghost")


def test_unload_is_idempotent(engine, store):
    engine.load_adapter("a", store.get("a").path)
    assert engine.has_adapter("a")
    assert engine.unload_adapter("a") is True
    assert engine.unload_adapter("a") is False
    assert not engine.has_adapter("a")


def test_unloadable_base_model_gives_one_clear_line(tmp_path):
    with pytest.raises(BaseModelLoadError) as info:
        Engine.load(base_model=str(tmp_path / "no-such-model"))
    message = info.value.message
    assert "\n" not in message
    assert "APP_BASE_MODEL" in message and "no-such-model" in message


def test_cpu_is_always_float32():
    assert choose_dtype("auto", "cpu") is torch.float32
    assert choose_dtype("float16", "cpu") is torch.float32
    assert choose_dtype("bfloat16", "cuda") is torch.bfloat16


@pytest.mark.parametrize(
    ("top_k", "expected"),
    [
        (1, [("c", 0.5)]),
        (2, [("c", 0.5), ("a", 0.3)]),
        (None, [("c", 0.5), ("a", 0.3), ("b", 0.2)]),
        (10, [("c", 0.5), ("a", 0.3), ("b", 0.2)]),
    ],
)
def test_rank(top_k, expected):
    got = rank([0.3, 0.2, 0.5], {0: "a", 1: "b", 2: "c"}, top_k)
    assert [(p["label"], p["score"]) for p in got] == expected


def test_the_feed_forward_runs_whole_without_transformers_signature_check(engine):
    """`unchunked_feed_forward`: the layers' module calls the feed-forward part directly (no
    `inspect.signature` a layer a pass); a layer that chunks still gets transformers' chunks."""
    import inspect

    from transformers.pytorch_utils import apply_chunking_to_forward

    from app.serving import engine as engine_module

    layers = [m for m in engine.model.modules() if hasattr(m, "chunk_size_feed_forward")]
    assert layers and all(layer.chunk_size_feed_forward == 0 for layer in layers)
    names = inspect.unwrap(type(layers[0]).forward).__globals__
    assert names["apply_chunking_to_forward"] is engine_module._unchunked
    x = torch.arange(24.0).reshape(2, 4, 3)
    calls = []

    def double(t):
        calls.append(t.shape)
        return t * 2

    assert torch.equal(engine_module._unchunked(double, 0, 1, x), x * 2) and calls == [(2, 4, 3)]
    chunked = engine_module._unchunked(double, 2, 1, x)  # transformers' own: two chunks of 2
    assert torch.equal(chunked, apply_chunking_to_forward(double, 2, 1, x))
    assert calls[1:] == [(2, 2, 3)] * 4
