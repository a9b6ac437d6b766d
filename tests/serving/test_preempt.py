"""A light key's pass between two layers of another key's (app.serving.preempt): the rule, the
hand-over, exact scores for both passes over every method, and through the real Batcher."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from adapters_store import AdapterStore
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.engine import Engine, Segment
from app.serving.onepass.runner import stops
from app.serving.planning import Limits
from app.serving.preempt import LIGHT_SHARE, Preemption, light

METHODS = ("seq_bn", "double_seq_bn", "par_bn", "lora", "ia3", "prefix_tuning")


def _rows(*tenants):
    return [SimpleNamespace(request=SimpleNamespace(tenant=t)) for t in tenants]


def test_light_takes_a_small_key_absent_from_the_running_pass():
    running = _rows(*["flood"] * 8)
    queued = _rows("flood", "light", "flood", "light")
    assert light(queued, "light", running) == [queued[1], queued[3]]  # 2 * 4 <= 8
    assert light(queued, "flood", running) is None  # has rows in the pass
    assert light(queued, None, running) is None  # no keys: one tenant
    assert light(queued, "other", running) is None  # nothing queued
    heavy = _rows(*["light"] * 3)
    assert len(running) < 3 * LIGHT_SHARE
    assert light(heavy, "light", running) is None  # not light next to this pass


def test_nested_passes_take_no_longer_than_the_pass_so_far():
    clock, ran = [0.0], []

    def run(rows):
        ran.append(rows)
        clock[0] += 3.0  # each nested pass takes 3 s

    preemption = Preemption(run, clock=lambda: clock[0])
    assert not preemption.offer(["a"])  # no pass runs
    preemption.arm()  # at 0
    assert preemption.offer(["a"]) and preemption.offer(["b"])  # share one nested pass
    clock[0] = 1.0
    preemption.poll()  # nested 0 s <= the pass's own 1 s: runs (until 4 s)
    preemption.poll()  # nothing more offered
    assert ran == [["a", "b"]]
    assert preemption.offer(["c"])
    clock[0] = 5.0
    preemption.poll()  # the pass ran 2 s of its own, nested ones 3 s: a later layer
    assert ran == [["a", "b"]]
    clock[0] = 6.0
    preemption.poll()  # 3 s each: runs
    assert ran == [["a", "b"], ["c"]]
    assert preemption.offer(["d"])
    assert preemption.disarm() == (["d"], True)  # the pass ended first: given back
    preemption.arm()
    assert preemption.offer(["e"])
    assert preemption.disarm() == (["e"], False)
    preemption.poll()
    assert len(ran) == 2


def test_no_pass_nests_inside_a_nested_one():
    calls = []

    def run(rows):
        calls.append(rows)
        assert preemption.offer(["inner"])
        preemption.poll()  # inside a nested pass: nothing runs

    preemption = Preemption(run)
    preemption.arm()
    preemption.offer(["outer"])
    preemption.poll()
    assert calls == [["outer"]]
    assert preemption.disarm() == (["inner"], True)


# ---- exact scores: the engine ----------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


@pytest.fixture(scope="module")
def store(factory, tmp_path_factory) -> AdapterStore:
    store = AdapterStore(tmp_path_factory.mktemp("preempt") / "adapters")
    for seed, method in enumerate(METHODS, 1):
        factory.add_to_store(store, method, seed=seed, config=method)
    return store


def _texts(n: int, word: str) -> list[list[int]]:
    return [[0] + [5 + (i * 7 + len(word) * k) % 40 for k in range(3 + i % 5)] + [2]
            for i in range(n)]  # fmt: skip


def test_a_nested_pass_and_the_one_it_interrupts_score_as_alone(engine, store):
    """Every method in the interrupted pass and in the nested one (one-pass stacks), at each
    stop of the body: each row's logits equal a forward of its own segments alone."""
    cache = AdapterCache(engine=engine, store=store, max_count=8, max_bytes=1 << 30)
    outer = [Segment(m, _texts(3, m)) for m in METHODS]
    inner = [Segment(m, _texts(2, m + "x")) for m in ("prefix_tuning", "lora", "seq_bn")]
    assert not engine.nestable(["seq_bn"])  # not on the device: a nested pass would write
    for name in METHODS:
        cache.ensure(name)  # activated: in a slot, its rows stacked
    alone_outer = engine.forward(outer)
    alone_inner = engine.forward(inner)
    assert engine.nestable(METHODS)
    points = len(stops(engine.model))
    assert points == 2 * engine.model.config.num_hidden_layers  # each layer, its feed-forward
    for layer in range(points):
        seen, nested = [0], []

        def hook(at=layer, seen=seen, nested=nested):
            seen[0] += 1  # first: the nested pass's own layers call it too
            if seen[0] - 1 == at:
                nested.append(engine.forward(inner))

        engine.between_layers(hook)
        try:
            interrupted = engine.forward(outer)
        finally:
            engine.between_layers(None)
        assert nested == [alone_inner], layer
        assert interrupted == alone_outer, layer
    cache.close()


# ---- through the real Batcher --------------------------------------------------------------
def _blocked_at_first_layer(engine: Engine) -> tuple[threading.Event, threading.Event, object]:
    """A hook that holds the first pass on the inference thread before its first layer until
    `go` is set (`started` tells it is there); the nested pass runs at the next stop."""
    started, go = threading.Event(), threading.Event()
    first = engine.model.base_model.encoder.layer[0]

    def hold(module, args):
        if not started.is_set():
            started.set()
            assert go.wait(30)

    return started, go, first.register_forward_pre_hook(hold)


@pytest.mark.parametrize("case", ["warm", "cold", "replaced"])
def test_a_light_request_runs_inside_a_flood_pass(engine, store, factory, tmp_path, case):
    """A light key's request queued while the flood's pass runs is answered before that pass
    ends, with its own scores, when its adapter is stacked on the device; with a cold adapter,
    or one replaced in the store since it was activated (nothing may be activated mid-pass), it
    waits for the pass, as before, and gets the store's version."""
    adapter = {"warm": "lora", "cold": "cold", "replaced": "ia3"}[case]
    if case == "cold" and not store.exists("cold"):
        factory.add_to_store(store, "cold", seed=99)
    cache = AdapterCache(engine=engine, store=store, max_count=8, max_bytes=1 << 30)
    for name in {"seq_bn", adapter} - {"cold"}:
        cache.ensure(name)  # on the device, in a slot, stacked
    if case == "replaced":
        factory.add_to_store(store, adapter, seed=77, config="ia3", overwrite=True)
    limits = Limits(max_batch_size=32, max_batch_tokens=4096, max_wait_s=0.001, max_queue=256,
                    timeout_s=30.0)  # fmt: skip
    metrics = Metrics()

    async def scenario():
        batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits, metrics=metrics)
        batcher.warmed = True  # no warm-up: the first pass is the flood's
        batcher.requests.recent.window_s = -1.0  # no time slices (tests/serving/test_slicing)
        done = []

        async def call(texts, name, tenant):
            result = await batcher.classify(texts=texts, adapters=[name], tenant=tenant)
            done.append(tenant)
            return result

        started, go, handle = _blocked_at_first_layer(engine)
        try:
            await batcher.start()
            flood = asyncio.create_task(call(["a long flood of text"] * 16, "seq_bn", "flood"))
            await asyncio.to_thread(started.wait, 30)  # the flood's pass holds the thread
            light_call = asyncio.create_task(call(["short"], adapter, "light"))
            while batcher.requests.arrivals < 2:
                await asyncio.sleep(0.005)
            go.set()
            results = await asyncio.wait_for(asyncio.gather(flood, light_call), 30)
            alone = [await batcher.classify(texts=t, adapters=[n]) for t, n in
                     ((["short"], adapter), (["a long flood of text"] * 16, "seq_bn"))]  # fmt: skip
        finally:
            go.set()
            handle.remove()
            await batcher.stop()
        return done, results, alone

    done, (flood, light_result), (light_alone, flood_alone) = asyncio.run(scenario())
    nested = next(iter(metrics.nested_passes.collect())).samples[0].value
    if case == "warm":
        assert (done, nested) == (["light", "flood"], 1)
    else:
        assert (done, nested) == (["flood", "light"], 0)
    assert light_result.results[0].logits == light_alone.results[0].logits
    assert flood.results[0].logits == flood_alone.results[0].logits
