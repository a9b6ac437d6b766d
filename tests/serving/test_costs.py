"""The device cost model (app.serving.costs) and the planner that uses it (plan_passes)."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from app.serving.costs import (
    MIN_ROW_CAP,
    NO_CAP,
    PassCost,
    TooFewTimings,
    amortising_rows,
    calibrate,
    calibration_shapes,
    fit_pass_cost,
    row_caps,
)
from app.serving.planning import plan_passes, split_by_length

# ---- fitting ----------------------------------------------------------------------------------
FIT_CASES = [
    # (name, true cost, rows grid, widths grid)
    ("gpu-like: fixed cost dominates", PassCost(5e-3, 0.0, 1e-7, 0.0), [1, 8, 32], [16, 64, 128]),
    ("cpu-like: per token", PassCost(2e-4, 1e-5, 2e-5, 1e-8), [1, 2, 8, 32], [16, 64, 128]),
    ("attention only", PassCost(0.0, 0.0, 0.0, 3e-9), [1, 4, 16], [32, 128, 256]),
]


@pytest.mark.parametrize(
    ("truth", "rows", "widths"), [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES]
)
def test_fit_recovers_the_cost_terms(truth, rows, widths):
    samples = [(r, w, truth.predict(r, w)) for r in rows for w in widths]
    fitted = fit_pass_cost(samples)
    for r, w in itertools.product([1, 3, 20, 40], [8, 100, 300]):
        assert fitted.predict(r, w) == pytest.approx(truth.predict(r, w), rel=1e-3)
    if truth.fixed > 0:  # batching always pays under a fixed cost: no width is capped
        assert all(cap == NO_CAP for _, cap in fitted.caps)


def test_fit_never_gives_a_negative_term():
    rng = random.Random(3)
    truth = PassCost(1e-3, 0.0, 1e-5, 0.0)
    samples = [
        (r, w, truth.predict(r, w) * rng.uniform(0.8, 1.25))
        for r in (1, 2, 4, 8, 16)
        for w in (16, 64, 128)
    ]
    fitted = fit_pass_cost(samples)
    terms = (fitted.fixed, fitted.per_row, fitted.per_token, fitted.per_token_width)
    assert min(terms) >= 0
    assert fitted.predict(16, 128) == pytest.approx(truth.predict(16, 128), rel=0.3)


@pytest.mark.parametrize(
    "samples",
    [[], [(1, 16, 0.1)], [(1, 16, 0.1), (8, 16, 0.3)], [(1, 16, 0.1), (1, 64, 0.3)]],
    ids=["none", "one shape", "one width", "one row count"],
)
def test_fit_needs_two_row_counts_and_two_widths(samples):
    with pytest.raises(TooFewTimings, match="too few"):
        fit_pass_cost(samples)


CAP_CASES = [
    # (name, samples (rows, width, seconds), tolerance, expected caps)
    ("batching pays: no cap", [(1, 64, 10.0), (8, 64, 20.0), (32, 64, 40.0)], 0.05, [(64, NO_CAP)]),
    (
        "alone is best per text",
        [(1, 128, 10.0), (4, 128, 48.0), (32, 128, 400.0)],
        0.05,
        [(128, 1)],
    ),
    ("best in the middle", [(1, 128, 10.0), (4, 128, 30.0), (32, 128, 320.0)], 0.05, [(128, 4)]),
    (
        "most rows within tolerance",
        [(1, 128, 10.0), (4, 128, 31.0), (8, 128, 60.0), (32, 128, 320.0)],
        0.05,
        [(128, 8)],
    ),
    (
        "per width, best of repeats",
        [(1, 16, 4.0), (16, 16, 8.0), (1, 128, 10.0), (1, 128, 9.0), (16, 128, 200.0)],
        0.05,
        [(16, NO_CAP), (128, 1)],
    ),
]


@pytest.mark.parametrize(
    ("samples", "tolerance", "expected"), [c[1:] for c in CAP_CASES], ids=[c[0] for c in CAP_CASES]
)
def test_row_caps(samples, tolerance, expected):
    assert list(row_caps(samples, tolerance=tolerance)) == expected


@pytest.mark.parametrize(
    ("width", "expected"), [(1, 32), (16, 32), (17, 4), (128, 4), (129, 2), (4000, 2)]
)
def test_row_cap_uses_the_next_measured_width(width, expected):
    cost = PassCost(0.0, per_token=1.0, caps=((16, 32), (128, 4), (512, 2)))
    assert cost.row_cap(width) == expected
    assert PassCost(0.0).row_cap(width) is None


# ---- calibration --------------------------------------------------------------------------------
def test_calibration_shapes_cheapest_first_and_bounded():
    shapes = calibration_shapes(max_rows=8, max_width=100)
    assert {r for r, _ in shapes} == {1, 2, 4, 8}
    assert {w for _, w in shapes} == {16, 32, 64, 100}
    tokens = [r * w for r, w in shapes]
    assert tokens == sorted(tokens)


def test_calibrate_times_each_shape_and_keeps_to_the_budget():
    now = [0.0]
    calls = []

    def clock() -> float:
        return now[0]

    def run(rows: int, width: int) -> None:  # a fake device: 1 ms per 1000 tokens
        calls.append((rows, width))
        now[0] += rows * width * 1e-6

    shapes = [(1, 100), (10, 100), (100, 100), (1000, 100)]
    samples = calibrate(run, shapes, budget_s=0.05, repeats=2, clock=clock)
    assert [(r, w) for r, w, _ in samples] == [(1, 100), (10, 100), (100, 100)]
    assert [s for _, _, s in samples] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert now[0] <= 0.05  # the 100,000-token shape (3 x 100 ms) would have overrun
    assert calls.count((1, 100)) == 4  # a first forward outside the budget, warm-up, 2 timed
    assert calls.count((10, 100)) == 3  # warm-up + 2 timed
    assert calls[-3:] == [(1, 100), (10, 100), (100, 100)]  # the second round, round-robin


# ---- planning ---------------------------------------------------------------------------------
def _total(passes, lengths, cost):
    return sum(cost.predict(len(p), max(lengths[i] for i in p)) for p in passes)


def _brute_force(lengths, cost):
    """The cheapest split of the length-sorted rows into contiguous capped passes."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = float("inf")
    for mask in range(1 << (len(order) - 1)):
        passes, start = [], 0
        for k in range(1, len(order)):
            if mask >> (k - 1) & 1:
                passes.append(order[start:k])
                start = k
        passes.append(order[start:])
        cap_ok = all(
            len(p) <= (cost.row_cap(max(lengths[i] for i in p)) or len(lengths)) for p in passes
        )
        if cap_ok:
            best = min(best, _total(passes, lengths, cost))
    return best


PLAN_CASES = [
    # (name, lengths, cost, expected passes as lists of row indices)
    ("one row", [5], PassCost(1.0, per_token=1.0), [[0]]),
    ("fixed cost dominates: one pass", [3, 90, 10], PassCost(1e6, per_token=1.0), [[0, 2, 1]]),
    ("padding dominates: split", [100, 2, 2, 2], PassCost(10.0, per_token=1.0), [[1, 2, 3], [0]]),
    (
        "a cap of one: every row alone",
        [7, 3, 5],
        PassCost(1e6, per_token=1.0, caps=((64, 1),)),
        [[1], [2], [0]],
    ),
    (
        "cap only for long texts",
        [10, 10, 10, 200, 200, 200],
        PassCost(1e3, per_token=1.0, caps=((16, NO_CAP), (256, 2))),
        [[0, 1, 2], [3], [4, 5]],
    ),
]


@pytest.mark.parametrize(
    ("lengths", "cost", "expected"), [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES]
)
def test_plan_passes(lengths, cost, expected):
    assert plan_passes(lengths, cost) == expected


@pytest.mark.parametrize("seed", range(40))
def test_plan_passes_is_optimal_complete_and_capped(seed):
    rng = random.Random(seed)
    lengths = [rng.choice([4, 9, 30, 31, 64, 120]) for _ in range(rng.randint(1, 10))]
    caps = rng.choice([(), ((32, NO_CAP), (128, rng.randint(1, 4))), ((128, rng.randint(1, 3)),)])
    cost = PassCost(
        fixed=rng.choice([0.0, 5.0, 200.0]),
        per_row=rng.choice([0.0, 3.0]),
        per_token=1.0,
        per_token_width=rng.choice([0.0, 0.01]),
        caps=caps,
    )
    passes = plan_passes(lengths, cost)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    flat = [lengths[i] for p in passes for i in p]
    assert flat == sorted(flat)  # shortest texts first
    for p in passes:
        assert len(p) <= (cost.row_cap(max(lengths[i] for i in p)) or len(lengths))
    assert _total(passes, lengths, cost) == pytest.approx(_brute_force(lengths, cost))


@pytest.mark.parametrize("seed", range(20))
def test_fixed_overhead_model_plans_like_split_by_length(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 12))]
    overhead = rng.choice([0, 8, 32, 500])
    cost = PassCost.from_overhead(overhead)
    planned = _total(plan_passes(lengths, cost), lengths, cost)
    assert planned == pytest.approx(
        _total(split_by_length(lengths, overhead=overhead), lengths, cost)
    )


def test_fit_with_few_shapes_keeps_what_it_can_tell_apart():
    truth = PassCost(2e-3, 0.0, 1e-5, 0.0)
    samples = [(r, w, truth.predict(r, w)) for r, w in [(1, 16), (2, 16), (1, 32), (4, 32)]]
    fitted = fit_pass_cost(samples)
    assert fitted.per_token_width == 0.0
    assert fitted.predict(8, 64) == pytest.approx(truth.predict(8, 64), rel=1e-3)


@pytest.mark.parametrize("capped", [False, True])
def test_big_batches_plan_fast_with_coarse_cuts(capped):
    rng = random.Random(7)
    lengths = [rng.randint(5, 128) for _ in range(256)]
    caps = ((128, 48),) if capped else ()
    cost = PassCost(5e-3, per_token=1e-7, caps=caps)
    started = time.perf_counter()
    passes = plan_passes(lengths, cost, step=8)
    assert time.perf_counter() - started < 2.0  # ~5 ms on an idle core; bounded, not timed
    assert sorted(i for p in passes for i in p) == list(range(256))
    flat = [lengths[i] for p in passes for i in p]
    assert flat == sorted(flat)
    assert all(len(p) <= (48 if capped else 256) for p in passes)
    assert len(passes) == (6 if capped else 1)  # a fixed cost this large: as few as the cap allows


def test_calibrate_extrapolates_from_the_largest_shape_timed():
    """A pass with a fixed cost (a small model): the smallest shape's time per token would
    predict every larger shape to overrun; the largest timed one's lets the grid be timed."""
    now = [0.0]

    def run(rows: int, width: int) -> None:  # 5 ms a pass + 1 us a token
        now[0] += 5e-3 + rows * width * 1e-6

    shapes = calibration_shapes(max_rows=32, max_width=128)
    samples = calibrate(run, shapes, budget_s=0.5, repeats=3, clock=lambda: now[0])
    timed = {(r, w) for r, w, _ in samples}
    assert max(r for r, _ in timed) == 32  # the pass sizes that set the row caps were timed
    assert {w for _, w in timed} == {16, 32, 64, 128}
    assert now[0] - (5e-3 + 16e-6) <= 0.5 + 0.01  # the budget (+ one pass), first one aside


def test_calibrate_stops_when_asked():
    calls = []
    samples = calibrate(
        lambda r, w: calls.append((r, w)),
        [(1, 16), (2, 16), (4, 16)],
        budget_s=60.0,
        stop=lambda: len(calls) >= 3,  # the first forward, a warm-up, one timed run
    )
    assert samples == [(1, 16, pytest.approx(0.0, abs=0.1))]
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("max_rows", "expected"), [(None, NO_CAP), (32, 16), (8, NO_CAP), (4, NO_CAP)]
)
def test_no_faith_in_batch_sizes_never_timed(max_rows, expected):
    samples = [(1, 64, 10.0), (4, 64, 20.0), (8, 64, 30.0)]  # batching pays up to 8 rows
    assert row_caps(samples, tolerance=0.1, max_rows=max_rows) == ((64, expected),)


# ---- a start-up timed on a loaded box (issue 28) ----------------------------------------------
# What a 1.5 s start-up timing saw with two busy loops on the 2 cores (the server's log): three
# shapes in the budget, every pass ~20 ms before its first row. Before: caps w16:4, w32:2 (no
# faith in row counts never timed), and 512 rows of width 128 ran as 256 passes of 2 rows.
LOADED = [(1, 16, 0.0199), (2, 16, 0.0201), (1, 32, 0.0198)]


def test_a_loaded_start_up_timing_does_not_shrink_the_passes():
    model = fit_pass_cost(LOADED, max_rows=32)
    assert model.fixed > 0.015  # the fit sees the fixed cost...
    for width in (16, 32, 128):  # ...and a large fixed cost argues for big passes
        assert model.row_cap(width) >= 32, model.describe()
    passes = plan_passes([128] * 32, model)
    assert [len(p) for p in passes] == [32]


FLOOR_CASES = [
    # (name, model, width, max rows, least cap)
    ("a row costs nothing more: no cap", PassCost(0.02), 128, 64, NO_CAP),
    ("the fixed cost is 20 rows' own", PassCost(0.02, per_row=1e-3), 128, 64, 20),
    ("... and 16 rows fill a pass: no cap", PassCost(0.02, per_row=1e-3), 128, 16, NO_CAP),
    ("cheap start-up: the least cap", PassCost(1e-4, per_row=1e-3), 16, 64, MIN_ROW_CAP),
    ("per token: wider rows amortise it sooner", PassCost(0.01, per_token=1e-5), 100, 64, 10),
]


@pytest.mark.parametrize(
    ("model", "width", "max_rows", "floor"),
    [c[1:] for c in FLOOR_CASES],
    ids=[c[0] for c in FLOOR_CASES],
)
def test_amortising_rows(model, width, max_rows, floor):
    assert amortising_rows(model, width, max_rows) == floor


def test_noise_cannot_cap_passes_below_what_amortises_the_fixed_cost():
    """Timings where every pass of more than one row looked 6x slow (a burst of load): the
    measured caps say 1 row per pass; the fit's fixed cost says many."""
    truth = PassCost(0.02, per_row=1e-3)
    noisy = [(r, w, truth.predict(r, w) * (6.0 if r > 1 and w == 128 else 1.0))
             for r in (1, 2, 4) for w in (128, 256)]  # fmt: skip
    assert dict(row_caps(noisy, tolerance=0.1, max_rows=64))[128] == 1
    model = fit_pass_cost(noisy, max_rows=64)
    assert model.row_cap(128) >= max(MIN_ROW_CAP, amortising_rows(model, 128, 64)) > 4


def _plan_at_every_row(lengths, cost, step):
    """plan_passes's program without caps, solved at every sorted row (its original form)."""
    n = len(lengths)
    order = sorted(range(n), key=lambda i: lengths[i])
    width = [lengths[i] for i in order]
    bucket = [-(-w // step) for w in width]
    starts = [k for k in range(n) if k == 0 or bucket[k] != bucket[k - 1]]
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in (k for k in starts if k < j):
            total = best[i] + cost.predict(j - i, width[j - 1])
            if total < best[j]:
                best[j], cut[j] = total, i
    passes, j = [], n
    while j > 0:
        passes.append(order[cut[j] : j])
        j = cut[j]
    return passes[::-1]


@pytest.mark.parametrize("seed", range(60))
def test_uncapped_plans_solve_only_where_length_runs_end_and_choose_the_same(seed):
    rng = random.Random(seed)
    pool = rng.choice([[12], [4, 9, 30, 31, 64, 120], list(range(1, 129))])
    lengths = [rng.choice(pool) for _ in range(rng.randint(0, 80))]
    cost = PassCost(
        fixed=rng.choice([0.0, 5.0, 200.0, 1e-3]),
        per_row=rng.choice([0.0, 3.0]),
        per_token=rng.choice([1.0, 1e-6]),
        per_token_width=rng.choice([0.0, 0.01]),
        caps=rng.choice([(), ((32, NO_CAP), (128, 500))]),  # none binds
    )
    step = rng.choice([1, 8])
    assert plan_passes(lengths, cost, step=step) == _plan_at_every_row(lengths, cost, step)
