"""Time-sliced passes while tenants contend (app.serving.slicing): the budget, the rows it
allows, the recent tenants, a collected batch under a budget, and the real Batcher."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import pytest

from adapters_store import AdapterStore
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher
from app.serving.costs import PassCost
from app.serving.engine import Engine
from app.serving.fairness import FairShare
from app.serving.planning import Item, Limits, Request, collect
from app.serving.requests import RequestQueue
from app.serving.slicing import MIN_SLICE_S, RecentTenants, slice_budget, slice_rows

PER_ROW = PassCost(fixed=1e-3, per_row=1e-3)  # a CPU-like pass: each row costs a start-up
GPU = PassCost(fixed=5e-3, per_row=1e-6)  # a pass that is almost all start-up cost
SLOW = PassCost(fixed=1e-2, per_row=1e-2)  # PER_ROW x 10: over the shortest slice
TOKENS = PassCost.from_overhead(32)  # the uncalibrated model (padded tokens, not seconds)

BUDGET_CASES = [
    # (name, active tenants' (rows, width), cost, budget)
    ("no tenant", {}, PER_ROW, None),
    ("one tenant: no slicing", {"f": (4, 8)}, PER_ROW, None),
    ("the lightest tenant's request", {"f": (4, 8), "l": (3, 8)}, SLOW, 4e-2),
    ("never below twice the fixed cost", {"f": (4, 8), "l": (1, 8)}, SLOW, 2e-2),
    ("never below the shortest slice", {"f": (4, 8), "l": (1, 8)}, PER_ROW, MIN_SLICE_S),
    ("a GPU: the floor", {"f": (4, 8), "l": (1, 8)}, GPU, 10e-3),
    ("uncalibrated: tokens", {"f": (8, 8), "l": (2, 20)}, TOKENS, 72.0),
    ("three tenants: the lightest", {"a": (9, 8), "b": (5, 8), "c": (6, 8)}, SLOW, 6e-2),
]


@pytest.mark.parametrize(
    ("active", "cost", "expected"), [c[1:] for c in BUDGET_CASES], ids=[c[0] for c in BUDGET_CASES]
)
def test_slice_budget(active, cost, expected):
    assert slice_budget(active, cost) == pytest.approx(expected)


ROW_CASES = [
    # (name, cost, width, budget, rows)
    ("one more row per extra ms", PER_ROW, 8, 5e-3, 4),
    ("twice the fixed cost: one row", PER_ROW, 8, 2e-3, 1),
    ("never below one row", PER_ROW, 8, 0.5e-3, 1),
    ("a GPU keeps big passes", GPU, 8, 10e-3, 5000),
    ("tokens: wider rows, fewer", TOKENS, 16, 64.0, 2),
    ("tokens: narrow rows", TOKENS, 4, 64.0, 8),
    ("a row costs nothing more: no cap", PassCost(fixed=1e-3), 8, 2e-3, None),
]


@pytest.mark.parametrize(
    ("cost", "width", "budget", "expected"), [c[1:] for c in ROW_CASES],
    ids=[c[0] for c in ROW_CASES],
)  # fmt: skip
def test_slice_rows(cost, width, budget, expected):
    rows = slice_rows(cost, width, budget)
    assert rows == expected
    if rows is not None and rows > 1:  # the most rows within the budget
        assert cost.predict(rows, width) <= budget * (1 + 1e-9)
        assert cost.predict(rows + 1, width) > budget


MINILM_CPU = PassCost(fixed=15e-3, per_row=1.4e-3)  # a one-text pass ~16 ms, 32 texts ~60 ms
FLOOR_CASES = [
    # (name, cost, budget, slowdown, rows): full passes of 32 rows, width 8
    ("no floor by default", PER_ROW, 2e-3, None, 1),
    ("a 25% slowdown: 4 rows at least", PER_ROW, 2e-3, 1.25, 4),
    ("the budget's rows when more", PER_ROW, 9e-3, 1.25, 8),
    ("slowdown 1: no slicing", PER_ROW, 2e-3, 1.0, 32),
    ("a 2x slowdown lets the budget rule", PER_ROW, 2e-3, 2.0, 1),
    ("MiniLM on a CPU: about half a pass", MINILM_CPU, 30e-3, 1.25, 17),
    ("a GPU: the budget holds more than a full pass", GPU, 10e-3, 1.25, 5000),
]


@pytest.mark.parametrize(
    ("cost", "budget", "slowdown", "expected"), [c[1:] for c in FLOOR_CASES],
    ids=[c[0] for c in FLOOR_CASES],
)  # fmt: skip
def test_slices_never_cost_a_flood_more_than_the_slowdown(cost, budget, slowdown, expected):
    extra = {} if slowdown is None else {"full": 32, "slowdown": slowdown}
    rows = slice_rows(cost, 8, budget, **extra)
    assert rows == expected
    if slowdown is not None and rows < 32:  # within the slowdown per text, and the fewest so
        per_text = cost.predict(32, 8) / 32
        assert cost.predict(rows, 8) / rows <= slowdown * per_text * (1 + 1e-9)
        if rows > max(1, slice_rows(cost, 8, budget)):
            assert cost.predict(rows - 1, 8) / (rows - 1) > slowdown * per_text


def _items(tenant: str, rows: int, width: int, *, start: int = 0) -> list[Item]:
    request = Request(future=None, deadline=1e9, results=[None] * rows, remaining=rows,
                      tenant=tenant)  # fmt: skip
    request.items = [Item(request, start + k, "a", list(range(width)), 0.0) for k in range(rows)]
    return request.items


def test_recent_tenants_remember_a_window():
    recent = RecentTenants(window_s=1.0)
    recent.note("f", 4, 8, now=10.0)
    recent.note("l", 1, 3, now=10.2)
    assert recent.active(10.5) == {"f": (4, 8), "l": (1, 3)}
    recent.note("f", 2, 12, now=10.8)
    assert recent.active(11.0) == {"f": (2, 12), "l": (1, 3)}  # the latest request's shape
    assert slice_budget(recent.active(11.0), SLOW) == pytest.approx(2e-2)
    assert recent.active(11.5) == {"f": (2, 12)}  # the light key went quiet: forgotten
    assert slice_budget(recent.active(11.5), SLOW) is None  # one tenant: no slices
    assert recent.active(11.8) == {"f": (2, 12)}
    assert recent.active(11.9) == {}


def test_the_request_queue_notes_each_tenant():
    """Both the in-process Batcher and the engine process (app.procs) queue through here."""

    async def scenario() -> dict:
        queue = RequestQueue(Limits(32, 4096, 0.005, 64, 30.0), None)
        queue.enqueue([[1, 2, 3], [4]], ["a", "b"], tenant="k")
        queue.enqueue([[5, 6]], ["a"], tenant="l")
        queue.fail_all(RuntimeError("done"))  # the sweep's timer cancelled
        return queue.recent.active(time.monotonic())

    assert asyncio.run(scenario()) == {"k": (4, 3), "l": (1, 2)}  # texts x adapters, widest


def test_collect_under_a_budget_takes_one_slice():
    def queue() -> deque[Item]:
        return deque(_items("f", 40, 8) + _items("l", 1, 8, start=40))

    batch, _ = collect(queue(), now=0.0, max_batch_size=32, max_batch_tokens=10_000)
    assert len(batch) == 32  # no budget: the full batch, flood first (no fair share)
    batch, _ = collect(queue(), now=0.0, max_batch_size=32, max_batch_tokens=10_000,
                       budget=5e-3, cost=PER_ROW)  # fmt: skip
    assert [item.slot for item in batch] == [0, 1, 2, 3]  # 4 rows fit the 5 ms budget
    fair = FairShare()
    batch, _ = collect(queue(), now=0.0, max_batch_size=32, max_batch_tokens=10_000,
                       fair=fair, budget=5e-3, cost=PER_ROW)  # fmt: skip
    assert sorted(item.slot for item in batch) == [0, 1, 2, 40]  # the light key's row is in
    batch, _ = collect(queue(), now=0.0, max_batch_size=32, max_batch_tokens=10_000,
                       budget=10e-3, cost=GPU)  # fmt: skip
    assert len(batch) == 32  # a GPU's budget holds the full batch
    batch, _ = collect(queue(), now=0.0, max_batch_size=32, max_batch_tokens=10_000,
                       budget=5e-3, cost=PER_ROW, slowdown=1.0)  # fmt: skip
    assert len(batch) == 32  # slowdown 1: slicing is off


# ---- through the real Batcher --------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> Engine:
    return Engine.load(base_model=str(tiny_model_dir), max_length=64)


def _passes(metrics: Metrics) -> float:
    return next(
        s.value
        for s in next(iter(metrics.batch_size.collect())).samples
        if s.name.endswith("_count")
    )


@pytest.mark.parametrize("light_first", [False, True], ids=["flood alone", "light key active"])
def test_the_flood_runs_in_slices_while_a_light_key_is_active(
    engine, factory, tmp_path, light_first
):
    store = AdapterStore(tmp_path / "adapters")
    factory.add_to_store(store, "alpha", seed=1)
    cache = AdapterCache(engine=engine, store=store, max_count=4, max_bytes=1 << 30)
    limits = Limits(max_batch_size=32, max_batch_tokens=4096, max_wait_s=0.005, max_queue=64,
                    timeout_s=30.0)  # fmt: skip  # uncalibrated: PassCost.from_overhead(32)
    metrics = Metrics()
    flood = ["a long flood of text"] * 24  # one length: one pass when alone

    async def scenario() -> float:
        batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits, metrics=metrics)
        batcher.requests.recent.window_s = 60.0  # a slow box: the light key stays active
        await batcher.start()
        try:
            await asyncio.wait_for(batcher.calibration, 30)
            if light_first:
                await batcher.classify(texts=["short"], adapters=["alpha"], tenant="light")
            before = _passes(metrics)
            result = await asyncio.wait_for(
                batcher.classify(texts=flood, adapters=["alpha"], tenant="flood"), 30
            )
            assert len(result.results[0].logits) == len(flood)
            return _passes(metrics) - before
        finally:
            await batcher.stop()

    passes = asyncio.run(scenario())
    width = len(engine.tokenizer("a long flood of text")["input_ids"])
    # the uncalibrated budget: twice the fixed cost (64 tokens), 32 of them for rows, yet no
    # fewer rows than keep the flood within the default slowdown (1.25) of a full pass
    rows = slice_rows(TOKENS, width, 64.0, full=32, slowdown=limits.slice_slowdown)
    assert max(1, 32 // width) < rows < len(flood)  # the floor holds, and slices still
    sliced = -(-len(flood) // rows)
    assert passes == (sliced if light_first else 1)
