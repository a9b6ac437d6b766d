"""Adapters activated into re-used slots give exactly what the library gives them alone (issue 18).

The oracle is independent of slots: a second engine that loads each adapter by itself with the
library's own `load_adapter` and runs it alone (one text, AdapterSetup). Every served row must
equal it within 1e-5, for every method the training module offers, after the adapter landed in
a slot that held an adapter with other hyper-parameters, other weights and other labels.
"""

from __future__ import annotations

import random

import pytest
import torch
from adapters import AdapterSetup, LoRAConfig, PrefixTuningConfig, SeqBnConfig

from adapters_store import AdapterStore
from adapters_store.rendering import softmax
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.engine import Engine, Segment, module_name
from app.serving.passes import run_batch

TEXTS = ["a good film", "the plot was awful and the acting was poor", "great", "one two three"]
TOL = 1e-5
METHODS = ["seq_bn", "double_seq_bn", "par_bn", "lora", "ia3", "prefix_tuning"]
# Two adapters per method that share a slot: they differ in fields that only act while
# training (dropout, init seed, bottleneck init scheme) and in weights and label names.
TWINS = {
    "seq_bn": (SeqBnConfig(dropout=0.1), SeqBnConfig(init_weights="mam_adapter")),
    "lora": (LoRAConfig(dropout=0.2), LoRAConfig(init_weights_seed=7)),
    "prefix_tuning": (
        PrefixTuningConfig(flat=True, dropout=0.1),
        PrefixTuningConfig(flat=True, init_weights_seed=3),
    ),
}
# Same method, hyper-parameters that change shapes or the forward: never the same slot.
OTHERS = {
    "lora-r4-a16": LoRAConfig(r=4, alpha=16),
    "lora-a32": LoRAConfig(alpha=32),
    "lora-gated": LoRAConfig(use_gating=True),
    "seqbn-r4-gated": SeqBnConfig(reduction_factor=4, use_gating=True),
    "seqbn-gelu": SeqBnConfig(non_linearity="gelu"),
    "prefix-10": PrefixTuningConfig(prefix_length=10, flat=True),
    "dora": LoRAConfig(use_dora=True),
}


def _labels(seed: int) -> dict[int, str]:
    return {i: f"s{seed}-{i}" for i in range(2 + seed % 3)}


@pytest.fixture(scope="module")
def store(factory, tmp_path_factory) -> AdapterStore:
    store = AdapterStore(tmp_path_factory.mktemp("slots") / "store")
    seed = 100
    for method in METHODS:
        for twin, config in enumerate(TWINS.get(method, (method, method))):
            seed += 1
            name = f"{method}-{twin}"
            factory.add_to_store(store, name, seed=seed, config=config, labels=_labels(3))
    for name, config in OTHERS.items():
        seed += 1
        factory.add_to_store(store, name, seed=seed, config=config, labels=_labels(seed))
    return store


@pytest.fixture(scope="module")
def alone(store, tiny_model_dir) -> dict[tuple[str, str], list[float]]:
    """The library alone: each adapter loaded by itself into a fresh engine, one text."""
    oracle = Engine.load(base_model=str(tiny_model_dir), max_length=64)
    out = {}
    for manifest in store.list():
        name = manifest.name
        oracle.load_adapter(name, store.get(name).path)
        module = module_name(name)
        for text in TEXTS:
            batch = oracle.tokenizer([text], return_tensors="pt")
            with torch.inference_mode(), AdapterSetup(module, head_setup=module):
                out[name, text] = oracle.model(**batch).logits.softmax(-1)[0].tolist()
        oracle.unload_adapter(name)
    return out


@pytest.fixture
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


def _cache(engine, store, **kw) -> AdapterCache:
    return AdapterCache(engine=engine, store=store, max_count=1000, max_bytes=1 << 30, **kw)


def _serve(engine, cache, plan) -> list[list[list[float]]]:
    segments = [Segment(name, engine.tokenize(texts)) for name, texts in plan]
    result = run_batch(engine, cache, segments, None)
    for outcome in result.outcomes:
        assert not isinstance(outcome, BaseException), outcome
    return [[softmax(o.logits) for o in rows] for rows in result.outcomes]


def _check(engine, cache, alone, plan) -> None:
    got = _serve(engine, cache, plan)
    for (name, texts), rows in zip(plan, got, strict=True):
        for text, probs in zip(texts, rows, strict=True):
            assert probs == pytest.approx(alone[name, text], abs=TOL), (name, text)


@pytest.mark.parametrize("method", METHODS)
def test_the_second_twin_reuses_the_first_ones_slot_exactly(engine, store, alone, method):
    cache = _cache(engine, store, slots_per_key=1)
    first, second = f"{method}-0", f"{method}-1"
    _check(engine, cache, alone, [(first, TEXTS)])
    slot = engine.module_of(first)
    assert slot.startswith("slot_"), "every method the trainer offers takes the fast path"
    _check(engine, cache, alone, [(second, TEXTS)])
    assert engine.module_of(second) == slot and engine.module_of(first) != slot
    assert cache.slots.count == 1
    _check(engine, cache, alone, [(first, TEXTS[:2])])  # and back again
    # The twins really differ (the check can fail): other weights, other outputs.
    assert alone[first, TEXTS[0]] != pytest.approx(alone[second, TEXTS[0]], abs=1e-3)


def test_other_hyper_parameters_never_share_a_slot(engine, store, alone):
    cache = _cache(engine, store, slots_per_key=1)
    names = [*OTHERS, "lora-0", "seq_bn-0", "prefix_tuning-0"]
    for name in names:
        _check(engine, cache, alone, [(name, TEXTS[1:3])])
    modules = {engine.module_of(n) for n in names}
    assert len(modules) == len(names)  # one slot (or own module) each: nothing leaks


def test_every_method_mixed_in_one_pass_through_reused_slots(engine, store, alone):
    """Two slots per shape for 3+ adapters of it: passes split (CacheFull) and slots turn over."""
    cache = _cache(engine, store, slots_per_key=2)
    names = [m.name for m in store.list()]
    rng = random.Random(5)
    for _ in range(6):
        rng.shuffle(names)
        plan = [(name, rng.sample(TEXTS, rng.randint(1, 3))) for name in names]
        _check(engine, cache, alone, plan)
    assert cache.slots.count <= 2 * len({cache.slots._bound[n].key for n in cache.slots._bound})


def test_an_evicted_adapter_comes_back_from_the_host_tier(engine, store, alone):
    probe = _cache(engine, store)
    one = probe.ensure("seq_bn-0").nbytes
    probe.clear()
    cache = _cache(engine, store, metrics=Metrics())
    cache.max_bytes = int(one * 1.5)  # one seq_bn adapter on the device at a time
    _check(engine, cache, alone, [("seq_bn-0", TEXTS)])
    _check(engine, cache, alone, [("seq_bn-1", TEXTS)])
    assert set(cache.snapshot()) == {"seq_bn-1"} and cache.in_memory("seq_bn-0")
    _check(engine, cache, alone, [("seq_bn-0", TEXTS[:1])])
    metrics = cache.metrics.registry
    assert metrics.get_sample_value("adapter_loads_total") == 2  # the return read no disk
    assert metrics.get_sample_value("adapter_cache_hits_total", {"tier": "host"}) == 1
    assert metrics.get_sample_value("adapter_evictions_total", {"tier": "device"}) == 2


def test_slots_leave_the_base_model_exactly_as_loaded(engine, store, alone):
    keys = set(engine.model.state_dict())
    cache = _cache(engine, store, slots_per_key=1)
    _check(engine, cache, alone, [(m.name, TEXTS[:1]) for m in store.list()])
    assert set(engine.model.state_dict()) != keys
    cache.clear()
    assert set(engine.model.state_dict()) == keys


def test_tensors_that_do_not_cover_the_modules_take_the_library_path(engine, store, alone):
    """A slot is trusted only when the files hold every tensor the library built for it."""
    cache = _cache(engine, store)
    decoded = cache._decode("lora-1")
    dropped = sorted(decoded.tensors)[0]
    del decoded.tensors[dropped]  # as if the file lacked one: the slot's copy would go stale
    cache._put_host(decoded)
    _check(engine, cache, alone, [("lora-1", TEXTS)])
    assert engine.module_of("lora-1") == module_name("lora-1")  # the library's own module
    # It alone: its key-mates still take a slot (issue 26), and both stay exact.
    _check(engine, cache, alone, [("lora-0", TEXTS), ("lora-1", TEXTS[:1])])
    assert engine.module_of("lora-0").startswith("slot_")
    assert engine.module_of("lora-1") == module_name("lora-1")
    assert cache.slots.misfits == {"lora-1"}


def test_thousands_of_activations_leave_nothing_behind(engine, factory, tmp_path):
    """1,000 activate/evict passes over 40 adapters: no module, slot, tensor or map grows."""
    store = AdapterStore(tmp_path / "many")
    for seed in range(40):
        factory.add_to_store(store, f"m{seed}", seed=seed, config=METHODS[seed % 3])
    cache = _cache(engine, store, slots_per_key=2)
    one = max(cache.ensure(f"m{i}").nbytes for i in range(3))
    cache.max_bytes, cache.host_bytes = one * 4, one * 6
    ids = engine.tokenize(["a good film"])
    rng = random.Random(1)

    def cycles(n: int) -> None:
        for _ in range(n):
            names = rng.sample(range(40), 3)
            result = run_batch(engine, cache, [Segment(f"m{i}", ids) for i in names], None)
            assert not any(isinstance(o, BaseException) for o in result.outcomes)

    cycles(200)
    modules = sum(1 for _ in engine.model.modules())
    held = sum(p.numel() for p in engine.model.parameters())
    cycles(800)
    assert sum(1 for _ in engine.model.modules()) == modules
    assert sum(p.numel() for p in engine.model.parameters()) <= held + 3 * one  # pointed slots
    assert cache.slots.count <= 2 * 3 and len(engine._bound) <= cache.slots.count
    assert cache.resident_bytes <= one * 4 and len(cache.snapshot()) < 40
    assert cache.host_resident_bytes <= one * 6


@pytest.mark.parametrize(
    ("saved", "config"),
    [("prefix_tuning", PrefixTuningConfig(flat=True)), ("adapters", "seq_bn"), ("heads", "lora")],
)
def test_an_adapter_named_like_a_module_still_takes_a_slot(
    engine, factory, tmp_path, saved, config
):
    """`roberta.prefix_tuning.prefix_tunings.prefix_tuning.*`: only the name after the
    container is the adapter's; the fast path must not give such adapters up."""
    store = AdapterStore(tmp_path / "named")
    factory.add_to_store(store, saved, seed=9, config=config)
    oracle = Engine.load(base_model=str(factory.model_dir), max_length=64)
    oracle.load_adapter(saved, store.get(saved).path)
    cache = _cache(engine, store)
    got = _serve(engine, cache, [(saved, TEXTS)])[0]
    assert engine.module_of(saved).startswith("slot_")
    for text, probs in zip(TEXTS, got, strict=True):
        (want,) = oracle.forward([Segment(saved, oracle.tokenize([text]))])
        assert probs == pytest.approx(softmax(want[0]), abs=TOL)


def test_every_config_of_the_mixed_tests_is_exact_through_a_slot(engine, factory, tmp_path):
    """Every variant tests/serving/test_engine_mixed.py runs on the library path (other
    wirings, DoRA, gates, prefix lengths, and mam, unipelt, prompt tuning, LoReFT) served
    through slots built from its config, two adapters per config, mixed in passes."""
    from tests.serving.test_engine_mixed import METHODS as MIXED
    from tests.serving.test_engine_mixed import VARIANTS

    store = AdapterStore(tmp_path / "variants")
    configs = {**MIXED, **VARIANTS}
    for seed, (name, config) in enumerate(configs.items()):
        for twin in (0, 1):
            factory.add_to_store(store, f"{name}-{twin}", seed=50 + 2 * seed + twin, config=config)
    oracle = Engine.load(base_model=str(factory.model_dir), max_length=64)
    want = {}
    for manifest in store.list():
        oracle.load_adapter(manifest.name, store.get(manifest.name).path)
        for text in TEXTS[:2]:
            (rows,) = oracle.forward([Segment(manifest.name, oracle.tokenize([text]))])
            want[manifest.name, text] = softmax(rows[0])
        oracle.unload_adapter(manifest.name)
    cache = _cache(engine, store, slots_per_key=1)
    names = sorted(want_name for want_name, _ in want)
    for batch in (names[::2], names[1::2], names[::-1]):
        _check(engine, cache, want, [(name, TEXTS[:2]) for name in dict.fromkeys(batch)])
    assert not cache.slots.misfits  # every config took the fast path
    assert not any(entry.library for entry in cache._device.values())
