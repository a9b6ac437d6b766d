"""AdapterCache: lazy loads, LRU by count and bytes, version reloads, guard clauses."""

from __future__ import annotations

import pytest

from adapters_store import AdapterNotFound, AdapterStore, BaseModelMismatch, BaseModelRef
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache, CacheFull
from app.serving.engine import Engine, Segment
from app.serving.onepass import bank as bank_module
from tests.support.stacks import written_bytes

NAMES = ["a", "b", "c", "d", "e"]


@pytest.fixture
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir))


@pytest.fixture
def store(tmp_path, factory) -> AdapterStore:
    store = AdapterStore(tmp_path / "store")
    for seed, name in enumerate(NAMES):
        factory.add_to_store(store, name, seed=seed)
    return store


def _cache(engine, store, *, count=64, nbytes=1 << 30) -> AdapterCache:
    return AdapterCache(
        engine=engine, store=store, max_count=count, max_bytes=nbytes, metrics=Metrics()
    )


def _loaded(engine: Engine) -> set[str]:
    return {n for n in NAMES if engine.has_adapter(n)}


def _probs(engine: Engine, name: str) -> list[float]:
    return engine.forward([Segment(name, engine.tokenize(["a good film"]))])[0][0]


def test_lazy_load_once(engine, store):
    cache = _cache(engine, store)
    assert _loaded(engine) == set()
    first = cache.ensure("a")
    again = cache.ensure("a")
    assert first == again and first.version == 1 and first.labels == {0: "negative", 1: "positive"}
    assert _sample(cache, "adapter_loads_total") == 1
    assert _sample(cache, "adapter_cache_hits_total", tier="device") == 1
    assert _loaded(engine) == {"a"}
    assert first.nbytes > 0 and cache.resident_bytes == first.nbytes + engine.stack_bytes()


def _sample(cache: AdapterCache, name: str, **labels: str) -> float:
    return cache.metrics.registry.get_sample_value(name, labels or None) or 0.0


def test_lru_count_budget_two_with_five_adapters(engine, store):
    cache = _cache(engine, store, count=2)
    for name in NAMES:
        cache.ensure(name)
        assert len(cache.snapshot()) <= 2
        assert engine.has_adapter(name)  # usable right after ensure
    assert set(cache.snapshot()) == {"d", "e"}
    assert _loaded(engine) <= {"d", "e"}  # evicted ones keep no module or slot
    cache.ensure("d")  # d becomes most recent: bringing a back evicts e
    cache.ensure("a")
    assert set(cache.snapshot()) == {"d", "a"}
    assert _sample(cache, "adapter_evictions_total", tier="device") == 4
    assert _sample(cache, "adapter_loads_total") == 5  # a came back from host RAM, not disk
    assert _sample(cache, "adapter_cache_hits_total", tier="host") == 1
    assert _sample(cache, "adapters_resident", tier="device") == 2
    assert _sample(cache, "adapters_resident", tier="host") == 3
    assert _sample(cache, "adapters_resident_bytes", tier="device") == cache.resident_bytes > 0


def test_host_tier_budget_drops_the_least_recent(engine, store):
    cache = _cache(engine, store, count=1)
    one = cache.ensure("a").nbytes
    cache.host_bytes = one * 2  # two decoded adapters in host RAM
    for name in NAMES[1:]:
        cache.ensure(name)
    assert set(cache.snapshot()) == {"e"}
    assert [n for n in NAMES if cache.in_memory(n)] == ["c", "d", "e"]
    assert cache.host_resident_bytes <= one * 2
    cache.ensure("a")  # dropped from both tiers: read from the store again
    assert _sample(cache, "adapter_loads_total") == 6
    assert _sample(cache, "adapter_evictions_total", tier="host") == 3  # b, then c


def test_prefetch_decodes_off_the_inference_thread(engine, store):
    import asyncio
    import threading

    cache = _cache(engine, store)
    seen = []
    decode = cache._decode
    cache._decode = lambda name: (seen.append(threading.current_thread().name), decode(name))[1]
    asyncio.run(cache.prefetch(["a", "b", "a"]))
    assert seen and all(t.startswith("adapter-loader") for t in seen) and len(seen) == 2
    assert cache.snapshot() == {} and cache.in_memory("a") and cache.in_memory("b")
    cache.ensure("a")
    assert _sample(cache, "adapter_cache_hits_total", tier="host") == 1
    assert _sample(cache, "adapter_activation_seconds_count") == 1
    with pytest.raises(AdapterNotFound):
        asyncio.run(cache.prefetch(["nope"]))
    cache.close()


def test_a_cold_adapter_counts_its_read_and_first_activation_once(engine, store):
    """`adapter_cold_seconds`: an adapter's read plus its first activation after it (read
    ahead or not); activated again from the host tier after an eviction, it read nothing."""
    import asyncio

    cache = _cache(engine, store, count=1)
    asyncio.run(cache.prefetch(["a"]))  # read ahead, activated later
    cache.ensure("a")
    read, active = (_sample(cache, f"adapter_{m}_seconds_sum") for m in ("load", "activation"))
    assert _sample(cache, "adapter_cold_seconds_count") == 1
    assert _sample(cache, "adapter_cold_seconds_sum") == pytest.approx(read + active)
    cache.ensure("b")  # read now (a miss of both tiers); a goes to the host tier
    cache.ensure("a")  # back from the host tier: an activation, no read
    assert _sample(cache, "adapter_activation_seconds_count") == 3
    assert _sample(cache, "adapter_cold_seconds_count") == 2
    assert _sample(cache, "adapter_loads_total") == 2
    cache.close()


def test_lru_byte_budget(engine, store):
    probe = _cache(engine, store)
    one = probe.ensure("a").nbytes
    row = probe.resident_bytes - one  # its row in the one-pass stacks
    probe.unload("a")
    budget = 2 * (one + row) + one // 2  # each device adapter keeps its row, slot or not
    cache = _cache(engine, store, nbytes=budget)
    for name in ["a", "b", "c"]:
        cache.ensure(name)
    assert set(cache.snapshot()) == {"b", "c"}
    assert cache.resident_bytes <= budget


def test_reload_when_the_stored_version_changes(engine, store, factory):
    cache = _cache(engine, store)
    before = _probs(engine, cache.ensure("a").name)
    factory.add_to_store(store, "a", seed=42, overwrite=True, labels={0: "no", 1: "yes"})
    resident = cache.ensure("a")
    assert resident.version == 2 and resident.labels == {0: "no", 1: "yes"}
    after = _probs(engine, "a")
    assert after != pytest.approx(before, abs=1e-4)
    # The new output is exactly what a fresh engine gives for the new version.
    fresh = Engine.load(base_model=str(factory.model_dir))
    fresh.load_adapter("a", store.get("a").path)
    assert after == _probs(fresh, "a")
    assert _sample(cache, "adapter_loads_total") == 2


def test_an_adapter_out_of_its_slot_keeps_its_stacked_rows_until_it_changes(engine, store, factory):
    """Issue 28 (Zipf): a slot handed to another adapter leaves the first one's one-pass rows
    in place; it is bound again without a copy, and a new version is copied afresh."""
    cache = _cache(engine, store)  # nothing pins "a": "b" takes its slot
    bank = engine._onepass.bank
    before = _probs(engine, cache.ensure("a").name)
    rows = bank.entries[engine.module_of("a")]
    other = _probs(engine, cache.ensure("b").name)
    assert not engine.module_of("a").startswith("slot_") and len(bank.entries) == 2
    cache.ensure("a")
    assert engine.module_of("a").startswith("slot_") and bank.entries[engine.module_of("a")] is rows
    assert _probs(engine, "a") == before and _probs(engine, cache.ensure("b").name) == other
    factory.add_to_store(store, "a", seed=42, overwrite=True)
    cache.ensure("a")
    assert bank.entries[engine.module_of("a")] is not rows and len(bank.entries) == 2
    fresh = Engine.load(base_model=str(factory.model_dir))
    fresh.load_adapter("a", store.get("a").path)
    assert _probs(engine, "a") == _probs(fresh, "a") != before
    cache.unload("a")
    cache.unload("b")
    assert bank.entries == {} and bank.nbytes == 0


def test_only_the_last_parked_adapters_keep_their_rows(engine, store, monkeypatch):
    bank = engine._onepass.bank
    assert bank.keep == bank_module.PARKED_CPU  # on the CPU, as many as the reserve holds
    monkeypatch.setattr(bank, "keep", 2)
    cache = _cache(engine, store)  # one slot: each ensure parks the previous occupant
    expected = {name: _probs(engine, cache.ensure(name).name) for name in NAMES}
    assert list(bank.parked) == ["c", "d"] and len(bank.entries) == 3  # "e" in the slot
    for name in ["a", *NAMES]:  # "a" copied again, the parked ones taken back
        assert _probs(engine, cache.ensure(name).name) == expected[name]
    assert len(bank.parked) <= 2 and len(cache.snapshot()) == len(NAMES)


def test_deleted_adapter_is_unloaded_and_not_found(engine, store):
    cache = _cache(engine, store)
    cache.ensure("b")
    store.delete("b")
    with pytest.raises(AdapterNotFound):
        cache.ensure("b")
    assert "b" not in cache.snapshot() and not engine.has_adapter("b")


def test_unload_and_ensure_are_idempotent(engine, store):
    cache = _cache(engine, store)
    assert cache.unload("c") is False
    cache.ensure("c")
    cache.ensure("c")
    assert cache.unload("c") is True
    assert cache.unload("c") is False
    assert _loaded(engine) == set()


def test_pinned_adapters_are_never_evicted(engine, store):
    cache = _cache(engine, store, count=2)
    cache.ensure("a")
    cache.ensure("b", pinned={"a"})
    with pytest.raises(CacheFull):
        cache.ensure("c", pinned={"a", "b"})
    assert set(cache.snapshot()) == {"a", "b"}
    cache.ensure("c", pinned={"b"})
    assert set(cache.snapshot()) == {"b", "c"}


def test_adapter_for_another_base_is_refused(engine, store, factory, tmp_path):
    other = factory.base_ref.model_copy(update={"fingerprint": "0" * 16})
    folder = factory.save("alien", tmp_path / "alien", seed=5)
    store.add("alien", folder, base_model=BaseModelRef(**other.model_dump()))
    cache = _cache(engine, store)
    with pytest.raises(BaseModelMismatch, match="fingerprint"):
        cache.ensure("alien")
    assert not engine.has_adapter("alien") and cache.snapshot() == {}


def test_the_byte_budget_counts_the_one_pass_stacks(engine, tmp_path, factory):
    """The stacked copies (one-pass path) count in `max_bytes`: after every activation and
    pass, the adapters' own tensors + every stack tensor (spare rows and padding included)
    stay within the budget, and rows stay exact. Counting the adapters' own bytes alone would
    admit more (each adapter in a slot has a copy in a stack), so the check can fail."""
    import random

    from app.serving.passes import run_batch

    store = AdapterStore(tmp_path / "mixed")
    methods = ("seq_bn", "lora", "ia3", "prefix_tuning")
    names = [f"{m.replace('_', '-')}-{i}" for i in range(6) for m in methods]
    for seed, name in enumerate(names):
        factory.add_to_store(store, name, seed=seed, config=methods[seed % 4],
                             flat_prefix=True)  # fmt: skip
    cache = _cache(engine, store)
    own, reference = {}, {}
    for name in names:
        own[name] = cache.ensure(name).nbytes
        reference[name] = _probs(engine, name)
    bound = [n for n in names if engine.module_of(n).startswith("slot_")]
    assert engine.stack_bytes() >= sum(own[n] for n in bound) > 0  # a second copy of these
    assert cache.resident_bytes == sum(own.values()) + engine.stack_bytes()
    assert _sample(cache, "adapters_resident_bytes", tier="device") == cache.resident_bytes
    cache.clear()
    assert engine.stack_bytes() == 0 and cache.resident_bytes == 0  # every family freed

    cache.max_bytes = budget = sum(own.values()) // 2
    ids = engine.tokenize(["a good film"])
    rng = random.Random(5)
    for _ in range(60):
        batch = rng.sample(names, 3)
        result = run_batch(engine, cache, [Segment(n, ids) for n in batch], None)
        for name, outcome in zip(batch, result.outcomes, strict=True):
            assert outcome[0].logits == pytest.approx(reference[name], abs=1e-5), name
        held = written_bytes(engine._onepass.bank)
        assert engine.stack_bytes() == held > 0
        assert sum(own[n] for n in cache.snapshot()) + held <= budget
    assert len(cache.snapshot()) < budget / (sum(own.values()) / len(own))
