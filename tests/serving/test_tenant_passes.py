"""Per-key planning: a batch of several tenants runs as passes of whole tenants, smallest first
(app.serving.fairness.tenant_runs, planning.plan_batch), and through the real Batcher."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from adapters_store import AdapterStore
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.costs import PassCost
from app.serving.engine import Engine
from app.serving.fairness import MAX_BLOCKS, late_rows, tenant_runs, warm_first
from app.serving.planning import Item, Limits, Request, plan_batch, plan_passes

# A CPU-like pass: 1 ms to start, 1 ms per row (MiniLM's short texts) / a pass that is almost
# all start-up cost (a tiny model on a GPU): batching everyone together is nearly free.
PER_ROW = PassCost(fixed=1e-3, per_row=1e-3)
FIXED = PassCost(fixed=1e-3, per_row=1e-6)
TOKENS = PassCost.from_overhead(32)  # the uncalibrated model

RUN_CASES = [
    # (name, tenant per row, cost, expected runs)
    ("one tenant: one run in order", ["a"] * 4, PER_ROW, [[0, 1, 2, 3]]),
    ("no rows", [], PER_ROW, []),
    ("a light key before the flood", ["f"] * 5 + ["l"] + ["f"] * 3, PER_ROW,
     [[5], [0, 1, 2, 3, 4, 6, 7, 8]]),
    ("the same with the uncalibrated model", ["f"] * 31 + ["l"], TOKENS, [[31], list(range(31))]),
    ("two floods of equal size share a pass when starting one costs a lot",
     ["a", "b"] * 8, FIXED, [list(range(16))]),
    ("many one-row keys share one pass", [str(i) for i in range(16)], FIXED, [list(range(16))]),
    ("three sizes, smallest first", ["c"] * 9 + ["b"] * 3 + ["a"], PER_ROW,
     [[12], [9, 10, 11], list(range(9))]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tenants", "cost", "expected"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES]
)
def test_tenant_runs(tenants, cost, expected):
    runs = tenant_runs([8] * len(tenants), tenants, cost)
    assert runs == expected


def _slowdowns(runs, lengths, tenants, cost) -> float:
    """Sum over tenants of finish time / time alone, each run costed as one pass."""
    clock, total = 0.0, 0.0
    for run in runs:
        clock += cost.predict(len(run), max(lengths[i] for i in run))
        for tenant in {tenants[i] for i in run}:
            rows = [i for i, t in enumerate(tenants) if t == tenant]
            total += clock / cost.predict(len(rows), max(lengths[i] for i in rows))
    return total


@pytest.mark.parametrize("seed", range(20))
def test_tenant_runs_are_optimal_among_ordered_groupings(seed):
    """Against brute force: every way to cut the tenants (smallest first) into runs."""
    rng = random.Random(seed)
    cost = rng.choice([PER_ROW, FIXED, TOKENS, PassCost(fixed=5e-3, per_token=2e-5)])
    names = "abcdef"[: rng.randint(2, 6)]
    tenants = [rng.choice(names) for _ in range(rng.randint(2, 40))]
    lengths = [rng.randint(1, 64) for _ in tenants]
    runs = tenant_runs(lengths, tenants, cost)
    assert sorted(i for run in runs for i in run) == list(range(len(tenants)))
    owners = [{tenants[i] for i in run} for run in runs]
    assert all(a.isdisjoint(b) for a, b in itertools.combinations(owners, 2))  # whole tenants

    def alone(t):
        rows = [i for i, x in enumerate(tenants) if x == t]
        return cost.predict(len(rows), max(lengths[i] for i in rows))

    order = sorted(dict.fromkeys(tenants), key=alone)
    best = float("inf")
    for mask in range(1 << (len(order) - 1)):
        cuts = [0] + [k + 1 for k in range(len(order) - 1) if mask >> k & 1] + [len(order)]
        groups = [set(order[a:b]) for a, b in itertools.pairwise(cuts)]
        candidate = [[i for i, t in enumerate(tenants) if t in g] for g in groups]
        best = min(best, _slowdowns(candidate, lengths, tenants, cost))
    assert _slowdowns(runs, lengths, tenants, cost) == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("cost", [PER_ROW, FIXED, TOKENS])
def test_many_tenants_are_planned_in_blocks_smallest_first(cost):
    """Over MAX_BLOCKS tenants: whole tenants still, smallest first, and quick to plan."""
    rng = random.Random(7)
    tenants = [f"t{rng.randint(0, 59)}" for _ in range(256)]
    lengths = [rng.randint(1, 64) for _ in tenants]
    runs = tenant_runs(lengths, tenants, cost)  # ~0.3 ms on a quiet box (60 tenants)
    assert len(runs) <= MAX_BLOCKS  # the DP ran over blocks, not over the 60 tenants
    assert sorted(i for run in runs for i in run) == list(range(len(tenants)))
    owners = [{tenants[i] for i in run} for run in runs]
    assert all(a.isdisjoint(b) for a, b in itertools.combinations(owners, 2))

    def alone(t):
        rows = [i for i, x in enumerate(tenants) if x == t]
        return cost.predict(len(rows), max(lengths[i] for i in rows))

    for before, after in itertools.pairwise(owners):
        assert max(map(alone, before)) <= min(map(alone, after))
    if cost is FIXED:  # starting a pass is all the cost: everyone in one
        assert len(runs) == 1


def test_plan_batch_plans_each_run_on_its_own():
    lengths = [8] * 6 + [40] * 2 + [8]
    tenants = ["f"] * 8 + ["l"]
    keys = ["k"] * 9
    passes = plan_batch(lengths, keys, PER_ROW, tenants)
    assert passes[0] == [8]  # the light key's row first, alone
    rest = [i for p in passes[1:] for i in p]
    assert sorted(rest) == list(range(8))
    assert passes[1:] == plan_passes(lengths[:8], PER_ROW)  # the flood as plan_passes cuts it
    # one tenant (or none given): exactly as before
    assert plan_batch(lengths, keys, PER_ROW, ["f"] * 9) == plan_passes(lengths, PER_ROW)
    assert plan_batch(lengths, keys, PER_ROW) == plan_passes(lengths, PER_ROW)


# ---- through the real Batcher --------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


def _pass_sizes(metrics: Metrics) -> tuple[float, float, float]:
    """(passes, rows in all, passes of one row) from the batch-size histogram."""
    values = {}
    for sample in next(iter(metrics.batch_size.collect())).samples:
        if sample.name.endswith("_bucket") and sample.labels["le"] == "1.0":
            values["one"] = sample.value
        elif sample.name.endswith(("_count", "_sum")):
            values[sample.name.rsplit("_", 1)[1]] = sample.value
    return values["count"], values["sum"], values["one"]


def test_a_light_tenant_runs_in_its_own_pass_before_the_flood(engine, factory, tmp_path):
    store = AdapterStore(tmp_path / "adapters")
    factory.add_to_store(store, "alpha", seed=1)
    cache = AdapterCache(engine=engine, store=store, max_count=4, max_bytes=1 << 30)
    limits = Limits(max_batch_size=32, max_batch_tokens=4096, max_wait_s=0.005, max_queue=64,
                    timeout_s=30.0)  # fmt: skip
    metrics = Metrics()
    flood_texts = ["a long flood of text"] * 31  # one length: one pass

    async def scenario():
        batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits, metrics=metrics)
        batcher.requests.recent.window_s = -1.0  # no time slices here (tests/serving/test_slicing)
        done = []

        async def call(texts, tenant):
            result = await batcher.classify(texts=texts, adapters=["alpha"], tenant=tenant)
            done.append(tenant)
            return result

        alone = None
        flood = asyncio.create_task(call(flood_texts, "flood"))
        light = asyncio.create_task(call(["short"], "light"))
        while batcher.queued < 32:  # both wait in the queue: they share the first batch
            await asyncio.sleep(0.01)
        await batcher.start()
        try:
            results = await asyncio.wait_for(asyncio.gather(flood, light), 30)
            alone = await batcher.classify(texts=["short"], adapters=["alpha"], tenant="light")
        finally:
            await batcher.stop()
        return done, results, alone

    done, (flood, light), alone = asyncio.run(scenario())
    passes, rows, one_row = _pass_sizes(metrics)
    assert done == ["light", "flood"]
    assert (passes, rows, one_row) == (3, 33, 2)  # light alone, the flood's 31, light again
    assert light.results[0].logits == alone.results[0].logits  # its own pass: same scores
    assert len(flood.results[0].logits) == 31


# ---- warm rows before cold ones (fairness.warm_first) ---------------------------------------
def _halves(rows: list[int]) -> list[list[int]]:
    """A stand-in planner: the subset's indices in passes of two."""
    return [list(range(k, min(k + 2, len(rows)))) for k in range(0, len(rows), 2)]


@pytest.mark.parametrize(
    ("cold", "expected"),
    [
        ([False] * 3, [[0, 1], [2]]),  # all warm: planned whole, as before
        ([True] * 3, [[0, 1], [2]]),  # all cold: the same
        ([True, False, True, False, False], [[1, 3], [4], [0, 2]]),  # warm first, cold apart
        ([False, True], [[0], [1]]),
        ([], []),
    ],
)
def test_warm_first(cold, expected):
    assert warm_first(cold, _halves) == expected


def test_a_cold_row_yields_to_warm_ones_only_once():
    """Taken back unrun and planned again, a cold row is not put last again (no starvation)."""
    request = Request(future=None, deadline=1e9, results=[None] * 3, remaining=3)
    items = [Item(request, k, name, [1, 2], 0.0) for k, name in enumerate(["hot", "cold", "new"])]
    on_device = {"hot"}.__contains__
    assert late_rows(items, on_device) == [False, True, True]
    assert late_rows(items, on_device) == [False, False, False]  # the second time: in order
    assert late_rows([Item(request, 0, "cold", [1], 0.0)], on_device) == [True]  # a new row


def test_a_hot_adapter_never_waits_for_a_cold_ones_activation(engine, factory, tmp_path):
    """Through the real Batcher: a hot (on the device) and a cold adapter's request queued in
    one batch run as two passes, the hot one first, each with its own adapter only."""
    store = AdapterStore(tmp_path / "adapters")
    for seed, name in enumerate(("hot", "cold"), 1):
        factory.add_to_store(store, name, seed=seed)
    cache = AdapterCache(engine=engine, store=store, max_count=4, max_bytes=1 << 30)
    cache.ensure("hot")
    limits = Limits(max_batch_size=32, max_batch_tokens=4096, max_wait_s=0.005, max_queue=64,
                    timeout_s=30.0)  # fmt: skip
    metrics = Metrics()

    async def scenario():
        batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits, metrics=metrics)
        done = []

        async def call(name):
            result = await batcher.classify(texts=["a text", "another"], adapters=[name])
            done.append(name)
            return result

        calls = [asyncio.create_task(call(name)) for name in ("cold", "hot")]  # cold queued first
        while batcher.queued < 4:
            await asyncio.sleep(0.01)
        await batcher.start()
        try:
            await asyncio.wait_for(asyncio.gather(*calls), 30)
        finally:
            await batcher.stop()
        return done

    assert asyncio.run(scenario()) == ["hot", "cold"]
    adapters = next(iter(metrics.batch_adapters.collect())).samples
    count = next(s.value for s in adapters if s.name.endswith("_count"))
    total = next(s.value for s in adapters if s.name.endswith("_sum"))
    assert (count, total) == (2, 2)  # two passes of one adapter each
