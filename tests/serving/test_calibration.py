"""The batcher times the real (tiny) engine at start-up and plans passes with the fit."""

from __future__ import annotations

import asyncio

import pytest

from adapters_store import AdapterStore
from adapters_store.rendering import softmax
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.costs import PassCost, calibrate, calibration_shapes, forward_timer
from app.serving.engine import Engine
from app.serving.planning import Limits


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


def _limits(**kw) -> Limits:
    base = dict(max_batch_size=8, max_batch_tokens=4096, max_wait_s=0.005, max_queue=64)
    return Limits(**base, timeout_s=30.0, **kw)


def test_forward_timer_runs_every_calibration_shape(engine):
    shapes = calibration_shapes(max_rows=2, max_width=engine.max_length)
    samples = calibrate(forward_timer(engine), shapes, budget_s=30.0, repeats=1)
    assert [(r, w) for r, w, _ in samples] == shapes
    assert all(seconds > 0 for _, _, seconds in samples)


@pytest.mark.parametrize("calibrate_on", [True, False])
def test_batcher_plans_with_the_calibrated_model(engine, factory, tmp_path, calibrate_on):
    store = AdapterStore(tmp_path / "adapters")
    factory.add_to_store(store, "alpha", seed=1)
    cache = AdapterCache(engine=engine, store=store, max_count=4, max_bytes=1 << 30)
    limits = _limits(calibrate=calibrate_on, calibration_budget_s=2.0)
    metrics = Metrics()

    async def scenario():
        batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits, metrics=metrics)
        await batcher.start()
        try:
            if calibrate_on:
                await asyncio.wait_for(batcher.calibration, 30)
            texts = ["good", "bad film " * 10, "fine"]
            result = await batcher.classify(texts=texts, adapters=["alpha"])
            return batcher.pass_cost, result
        finally:
            await batcher.stop()

    cost, result = asyncio.run(scenario())
    assert len(result.results[0].logits) == 3
    assert all(abs(sum(softmax(p)) - 1) < 1e-5 for p in result.results[0].logits)
    if calibrate_on:  # a fitted model in seconds, with a row cap per timed width
        assert cost != PassCost.from_overhead(limits.split_overhead_tokens)
        assert 0 < cost.predict(1, 16) < 1.0
        assert [w for w, _ in cost.caps] == [16, 32, 64]
    else:
        assert cost == PassCost.from_overhead(limits.split_overhead_tokens)
