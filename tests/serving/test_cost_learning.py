"""The pass cost model re-fitted from live pass timings (`app.serving.cost_learning`).

A simulated device (a known cost function) stands in for the forward passes: the planner cuts
a queue of long texts with the learner's current model, each pass "runs" at the device's
cost, and the learner sees the timing, as the batcher does.
"""

from __future__ import annotations

import asyncio

import pytest

from adapters_store import AdapterStore
from adapters_store.rendering import softmax
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.cost_learning import CostLearner
from app.serving.costs import NO_CAP, PassCost, fit_pass_cost
from app.serving.engine import Engine
from app.serving.planning import Limits, plan_passes

WIDTHS = (16, 32, 64, 128)


def batching_pays(rows: int, width: int) -> float:
    """A CPU where more rows always help a little (per text: 47 ms alone, ~31 ms at 16)."""
    return 0.015 + rows * (0.00025 * width)


def batching_stops_at_4(rows: int, width: int) -> float:
    """Like `batching_pays` up to 4 rows; beyond that each text costs 40% more (cache)."""
    base = batching_pays(rows, width)
    return base if rows <= 4 else base * 1.4


def start_up(device, *, rows=(1, 2), widths=WIDTHS) -> list[tuple[int, int, float]]:
    """What a budget-limited start-up timing saw: few row counts."""
    return [(r, w, device(r, w)) for r in rows for w in widths]


def serve(learner: CostLearner, device, *, rounds: int, queued: int, width: int = 120) -> None:
    clock = 0.0
    for _ in range(rounds):
        for rows in plan_passes([width] * queued, learner.model):
            seconds = device(len(rows), width)
            clock += seconds
            learner.observe(len(rows), width, seconds, now=clock)


def new_learner(samples, **kw) -> CostLearner:
    model = fit_pass_cost(samples, max_rows=32)
    return CostLearner(model, samples, max_rows=32, widths=WIDTHS, **kw)


def test_start_up_timing_alone_caps_long_passes():
    learner = new_learner(start_up(batching_pays))
    assert learner.model.row_cap(120) == 4  # twice the largest row count timed
    assert {len(p) for p in plan_passes([120] * 16, learner.model)} == {4}


def test_live_passes_lift_a_cap_set_for_want_of_timings():
    learner = new_learner(start_up(batching_pays))
    serve(learner, batching_pays, rounds=30, queued=16)
    assert learner.refits > 0
    assert learner.model.row_cap(120) >= 16
    assert [len(p) for p in plan_passes([120] * 16, learner.model)] == [16]


def test_live_passes_find_where_batching_stops_paying():
    learner = new_learner(start_up(batching_stops_at_4))
    serve(learner, batching_stops_at_4, rounds=40, queued=16)
    assert learner.model.row_cap(120) == 4
    assert max(len(p) for p in plan_passes([120] * 16, learner.model)) == 4


def test_one_noisy_pass_moves_nothing():
    learner = new_learner(start_up(batching_pays))
    serve(learner, batching_pays, rounds=30, queued=16)
    cap = learner.model.row_cap(120)
    for k in range(3):  # three timings, one of them 5x slow: the median keeps the cap
        slow = 5.0 if k == 0 else 1.0
        learner.observe(16, 120, batching_pays(16, 120) * slow, now=1000.0 + k)
    assert learner.refit(now=1003.0) is not None
    assert learner.model.row_cap(120) == cap


def test_old_timings_are_forgotten():
    learner = new_learner(start_up(batching_pays), memory_s=10.0)
    serve(learner, batching_pays, rounds=30, queued=16)
    assert learner.model.row_cap(120) >= 16
    learner.refit(now=1e6)  # long after: only the start-up timing is left
    assert learner.model.row_cap(120) == 4


def test_a_pass_counts_at_its_width_bucket_scaled_by_the_model():
    truth = PassCost(fixed=0.01, per_token=1e-4)
    learner = CostLearner(truth, [], max_rows=32, widths=WIDTHS, refit_every=1000)
    learner.observe(4, 97, truth.predict(4, 97), now=0.0)
    learner.observe(4, 33, truth.predict(4, 33), now=0.0)
    samples = {(r, w): s for r, w, s in learner.samples(now=0.0)}
    assert set(samples) == {(4, 128), (4, 64)}
    assert samples[4, 128] == pytest.approx(truth.predict(4, 128))
    assert learner.bucket_of(600) == 600  # past the widest: its own width


def test_without_start_up_timings_live_passes_alone_give_a_model():
    fixed = PassCost.from_overhead(32)
    learner = CostLearner(fixed, [], max_rows=32, widths=WIDTHS, refit_every=4)
    clock = 0.0
    for rows, width in [(1, 16), (2, 16), (1, 64), (2, 64), (4, 64), (4, 16), (8, 16), (8, 64)]:
        clock += 1
        learner.observe(rows, width, batching_pays(rows, width), now=clock)
    assert learner.model != fixed
    assert learner.model.predict(1, 16) == pytest.approx(batching_pays(1, 16), rel=0.05)
    assert learner.model.row_cap(64) == 16
    assert NO_CAP > 16


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


@pytest.mark.parametrize("learn", [True, False])
def test_batcher_learns_from_its_own_passes(engine, factory, tmp_path, learn):
    """A real batcher on the tiny engine, start-up timing off: live passes alone fit a model."""
    store = AdapterStore(tmp_path / "adapters")
    factory.add_to_store(store, "alpha", seed=1)
    cache = AdapterCache(engine=engine, store=store, max_count=4, max_bytes=1 << 30)
    limits = Limits(max_batch_size=8, max_batch_tokens=4096, max_wait_s=0.002, max_queue=256,
                    timeout_s=30.0, calibrate=False, learn_costs=learn)  # fmt: skip
    words = ["good", "bad", "film", "plot", "actor", "scene"]
    texts = [" ".join(words[: 1 + k % 6] * (1 + k % 5)) for k in range(48)]

    async def scenario():
        batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits)
        await batcher.start()
        try:
            for _ in range(4):
                calls = [batcher.classify(texts=[t], adapters=["alpha"]) for t in texts]
                results = await asyncio.gather(*calls)
                assert all(abs(sum(softmax(r.results[0].logits[0])) - 1) < 1e-5 for r in results)
            return batcher.pass_cost, batcher.costs.learner
        finally:
            await batcher.stop()

    cost, learner = asyncio.run(scenario())
    if learn:
        assert learner.refits > 0
        assert cost != PassCost.from_overhead(limits.split_overhead_tokens)
        assert 0 < cost.predict(1, 16) < 1.0  # seconds, not padded tokens
    else:
        assert learner is None
        assert cost == PassCost.from_overhead(limits.split_overhead_tokens)


def test_refits_are_rate_limited():
    """Every `refit_every` passes, but at most once per `min_interval_s` (the event loop's)."""
    fixed = PassCost.from_overhead(32)
    times = [0.0, 0.1, 0.2, 0.3, 0.9, 1.05, 1.1, 1.2, 2.5, 2.6]
    attempts = {}
    for interval in (0.0, 1.0):
        learner = CostLearner(
            fixed, [], max_rows=32, widths=WIDTHS, refit_every=2, min_interval_s=interval
        )
        seen = []
        for now in times:
            learner.observe(2, 16, 1e-3, now=now)
            if learner._fitted_at == now:
                seen.append(now)
        attempts[interval] = seen
    assert attempts[0.0] == [0.1, 0.3, 1.05, 1.2, 2.6]  # every second pass
    assert attempts[1.0] == [0.1, 1.1, 2.5]  # the second pass a second or more later
