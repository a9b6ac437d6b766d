"""An adapter whose files do not map onto a slot takes the library path alone (issue 26): an
int32 adapter stored before uploads were checked, classified first after a start, used to close
the slots of its shape to every adapter of that shape, other teams' included."""

from __future__ import annotations

import pytest
import torch

from adapters_store import AdapterStore, StoreError
from app.serving.adapter_cache import AdapterCache
from app.serving.engine import Engine, Segment, module_name
from app.serving.passes import run_batch
from tests.support.bad_weights import as_dtype, rewrite

TEXTS = ["a good film", "the plot was awful"]


@pytest.fixture
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


def _run(engine, cache, name: str) -> object:
    result = run_batch(engine, cache, [Segment(name, engine.tokenize(TEXTS))], None)
    return result.outcomes[0]


def test_an_int32_adapter_first_does_not_close_the_slots_of_its_shape(engine, factory, tmp_path):
    store = AdapterStore(tmp_path / "store")
    for seed, name in enumerate(["legacy-int", "team-a", "team-b"], start=30):
        factory.add_to_store(store, name, seed=seed)  # one config, one head shape: one key
    # Written after the store took it: a file from before uploads refused integer tensors.
    rewrite(store.get("legacy-int").path / "adapter.safetensors", as_dtype(torch.int32))
    cache = AdapterCache(engine=engine, store=store, max_count=100, max_bytes=1 << 30)
    keys = {cache._decode(n).slot_key for n in ("legacy-int", "team-a", "team-b")}
    assert len(keys) == 1  # the same shape: one slot key
    legacy = _run(engine, cache, "legacy-int")  # the library path: alone, served or refused
    assert isinstance(legacy, list | StoreError), legacy
    assert engine.module_of("legacy-int") == module_name("legacy-int")
    assert cache.slots.count == 0
    # Evicted and classified again, it is not tried on a new slot again (files unchanged).
    cache.unload("legacy-int")
    before = engine.new_slot_name()  # a slot built (and dropped) in between takes a name
    _run(engine, cache, "legacy-int")
    assert engine.new_slot_name() == f"slot_{int(before.split('_')[1]) + 1}"
    for name in ("team-a", "team-b", "team-a"):
        outcome = _run(engine, cache, name)
        assert not isinstance(outcome, BaseException), outcome
        assert engine.module_of(name).startswith("slot_"), name
    assert cache.slots.count == 1  # one slot, taken in turn
    both = [Segment(n, engine.tokenize(TEXTS)) for n in ("team-a", "team-b", "legacy-int")]
    result = run_batch(engine, cache, both, None)
    assert not any(isinstance(o, BaseException) for o in result.outcomes[:2])
    assert cache.slots.count == 2  # one pass, two slots of the shape
    modules = {engine.module_of("team-a"), engine.module_of("team-b")}
    assert len(modules) == 2 and all(m.startswith("slot_") for m in modules)
    assert cache.slots.misfits == {"legacy-int"}
    assert not any(entry.library for name, entry in cache._device.items() if name != "legacy-int")
