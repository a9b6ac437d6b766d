"""What a forward pass costs on THIS device: a model timed at start-up, used by the planner.

`calibrate` times body-only forward passes over a small grid of (rows, padded width) shapes
within a time budget (on the inference thread, before or between batches). `fit_pass_cost`
turns the timings into a `PassCost`:

    seconds(rows, width) = fixed + per_row * rows + per_token * rows * width
                           + per_token_width * rows * width ** 2      (attention)

fitted by non-negative least squares on relative error, plus a row cap per width: the most
rows whose measured time per text is within `tolerance` of the best measured at that width
(on a CPU, long texts often run no faster per text in a batch of 32 than alone, and cache
pressure can make them slower). A cap never goes below `MIN_ROW_CAP`, nor below the rows
that the fitted fixed cost needs to be amortised (`amortising_rows`): a start-up timed on a
loaded box sees noisy per-text times (a burst makes 4 rows look slower per text than 2), yet
the fit says a pass costs ~20-50 ms before its first row, and a large fixed cost argues for
bigger passes, never smaller ones (issue 28: caps of 2 rows ran 512 rows as 256 passes). The
planner (`app.serving.planning.plan_passes`) cuts passes
to minimise the predicted total and never puts more rows in one pass than the cap.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class PassCost:
    fixed: float
    per_row: float = 0.0
    per_token: float = 0.0
    per_token_width: float = 0.0
    caps: tuple[tuple[int, int], ...] = field(default=())  # (width, max rows) by width

    @classmethod
    def from_overhead(cls, overhead_tokens: int) -> PassCost:
        """The uncalibrated model: a pass costs `overhead_tokens` padded tokens more."""
        return cls(fixed=float(overhead_tokens), per_token=1.0)

    def predict(self, rows: int, width: int) -> float:
        tokens = rows * width
        return (
            self.fixed
            + self.per_row * rows
            + self.per_token * tokens
            + self.per_token_width * tokens * width
        )

    def row_cap(self, width: int) -> int | None:
        """Most rows worth putting in one pass of this width (None: no cap)."""
        if not self.caps:
            return None
        widths = [w for w, _ in self.caps]
        index = min(bisect.bisect_left(widths, width), len(widths) - 1)
        return self.caps[index][1]

    def describe(self) -> str:
        caps = ", ".join(f"w{w}:{r}" for w, r in self.caps) or "none"
        return (
            f"fixed {self.fixed * 1e3:.2f} ms, per row {self.per_row * 1e3:.3f} ms, per token "
            f"{self.per_token * 1e6:.2f} us, per token x width {self.per_token_width * 1e9:.2f} "
            f"ns; row caps {caps}"
        )


Sample = tuple[int, int, float]  # (rows, width, seconds)
NO_CAP = 1 << 30


def _features(rows: int, width: int) -> list[float]:
    return [1.0, float(rows), float(rows * width), float(rows * width * width)]


def _least_squares(samples: Sequence[Sample], active: list[int]) -> list[float]:
    import numpy as np

    a = np.array([[_features(r, w)[k] for k in active] for r, w, _ in samples])
    y = np.array([s for _, _, s in samples])
    weight = 1.0 / np.maximum(y, 1e-12)  # relative error: small shapes count as much
    a = a * weight[:, None]
    scale = np.abs(a).max(axis=0)  # the terms span ~9 orders of magnitude: equalise columns
    solution, *_ = np.linalg.lstsq(a / scale, y * weight, rcond=None)
    solution = solution / scale
    coef = [0.0] * 4
    for k, value in zip(active, solution, strict=True):
        coef[k] = float(value)
    return coef


class TooFewTimings(ValueError):
    pass


def fit_pass_cost(
    samples: Sequence[Sample], *, tolerance: float = 0.1, max_rows: int | None = None
) -> PassCost:
    """Non-negative fit of the cost terms (a negative term is dropped, the rest refitted).

    Terms the samples cannot tell apart (too few distinct widths or row counts) are left
    out; TooFewTimings unless at least two row counts and two widths were timed.
    """
    widths = {w for _, w, _ in samples}
    rows = {r for r, _, _ in samples}
    if len(widths) < 2 or len(rows) < 2:
        raise TooFewTimings(
            f"{len(samples)} shape(s) timed ({len(rows)} row counts, {len(widths)} widths): "
            "too few to fit a cost model"
        )
    active = [0, 1, 2, 3]
    if len(widths) < 3:  # with two widths, rows x width^2 is a mix of rows and rows x width
        active.remove(3)
    while True:
        coef = _least_squares(samples, active)
        negative = [k for k in active if coef[k] < 0]
        if not negative or len(active) == 1:
            break
        active.remove(min(negative, key=lambda k: coef[k]))
    model = PassCost(*(max(c, 0.0) for c in coef))
    caps = row_caps(samples, tolerance=tolerance, max_rows=max_rows)
    return replace(
        model, caps=tuple((w, max(c, amortising_rows(model, w, max_rows))) for w, c in caps)
    )


MIN_ROW_CAP = 4  # however noisy the timing, a pass may hold this many rows


def amortising_rows(model: PassCost, width: int, max_rows: int | None = None) -> int:
    """The floor of a row cap at `width`: `MIN_ROW_CAP`, or the rows whose own cost in the
    `model` first outweighs its fixed cost, if more (a cap below that would trust noisy times
    per text over the fit, which says such a pass is mostly start-up); `NO_CAP` when that is
    `max_rows` or more, or when a row costs nothing more."""
    marginal = model.per_row + width * (model.per_token + model.per_token_width * width)
    if marginal <= 0:
        return NO_CAP
    rows = max(MIN_ROW_CAP, math.ceil(model.fixed / marginal - 1e-9))
    return NO_CAP if max_rows is not None and rows >= max_rows else rows


def row_caps(
    samples: Iterable[Sample], *, tolerance: float, max_rows: int | None = None
) -> tuple[tuple[int, int], ...]:
    """Per measured width: the most rows whose time per text is within `tolerance` of the best.

    Leaning to the larger passes keeps a noisy timing from capping what batching wins, and
    a served pass has costs of its own (heads, delivery) that more rows amortise. When that
    is the largest row count measured at the width, batching still paid there: no cap (a
    large number), unless the budget stopped the timing below `max_rows`; then the cap is
    twice the largest count measured (no faith in gains that were never seen).
    """
    by_width: dict[int, dict[int, float]] = {}
    for rows, width, seconds in samples:
        per_text = seconds / rows
        slot = by_width.setdefault(width, {})
        slot[rows] = min(per_text, slot.get(rows, per_text))
    caps = []
    for width in sorted(by_width):
        per_text = by_width[width]
        limit = min(per_text.values()) * (1 + tolerance)
        cap = max(r for r, t in per_text.items() if t <= limit)
        if cap == max(per_text):
            cap = NO_CAP if max_rows is None or cap >= max_rows else 2 * cap
        caps.append((width, cap))
    return tuple(caps)


def calibration_shapes(*, max_rows: int, max_width: int) -> list[tuple[int, int]]:
    """The (rows, width) grid, cheapest first: rows 1..max_rows by doubling, widths 16..512."""
    rows = sorted({min(r, max_rows) for r in (1, 2, 4, 8, 16, 32, 64) if r <= max(max_rows, 1)})
    widths = [w for w in (16, 32, 64, 128, 256, 512) if w <= max_width] or [max_width]
    if max_width not in widths and max_width < 512:
        widths.append(max_width)
    return sorted(((r, w) for r in rows for w in widths), key=lambda s: (s[0] * s[1], s[0]))


def calibrate(
    run: Callable[[int, int], Any],
    shapes: Sequence[tuple[int, int]],
    *,
    budget_s: float,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
    stop: Callable[[], bool] = lambda: False,
) -> list[Sample]:
    """Time `run(rows, width)` per shape: the best of `repeats` timings, after one warm-up.

    The first round takes the shapes in order and skips one whose predicted time would overrun
    `budget_s`: its tokens at the time per token of the largest shape timed so far (a pass has
    a fixed cost, so extrapolating from the largest is pessimistic, yet not by the 100x that
    the smallest shape's time per token predicts for a big pass of a small model). Later
    rounds go over the chosen shapes again, round-robin, so that a burst of load on a shared
    machine hits every shape alike instead of spoiling one, and stop at the budget. Once
    `stop()` is true no more shapes are timed.
    """
    if shapes:
        run(*shapes[0])  # the very first forward pays one-off set-up: not in the budget
    started = clock()
    best: dict[tuple[int, int], float] = {}
    per_token = 0.0

    def timed(rows: int, width: int) -> None:
        if stop():  # the server is stopping: give the inference thread back
            return
        t0 = clock()
        run(rows, width)
        elapsed = clock() - t0
        best[rows, width] = min(elapsed, best.get((rows, width), elapsed))

    largest = 0
    for rows, width in shapes:
        estimate = per_token * rows * width * (repeats + 1)
        if stop() or (best and clock() - started + estimate > budget_s):
            continue
        run(rows, width)  # warm-up: allocator, kernels
        timed(rows, width)
        if (rows, width) in best and rows * width >= largest:
            largest, per_token = rows * width, best[rows, width] / (rows * width)
    for _ in range(repeats - 1):
        for rows, width in list(best):
            if clock() - started <= budget_s:
                timed(rows, width)
    return [(rows, width, seconds) for (rows, width), seconds in best.items()]


def forward_timer(engine: Any) -> Callable[[int, int], None]:
    """A `run(rows, width)` for `calibrate`: one body-only forward of the engine's model."""
    import torch

    model, device = engine.model, engine.device
    vocab = int(getattr(engine.base_config, "vocab_size", 1000))
    low, high = min(1000, vocab // 2), vocab - 1
    generator = torch.Generator().manual_seed(0)

    def run(rows: int, width: int) -> None:
        ids = torch.randint(low, high, (rows, width), generator=generator).to(device)
        with torch.inference_mode():
            out = model.base_model(input_ids=ids, attention_mask=torch.ones_like(ids))
            out.last_hidden_state[0, 0, 0].item()  # waits for the device

    return run


def calibrate_engine(
    engine: Any, *, max_rows: int, budget_s: float, stop: Callable[[], bool] = lambda: False
) -> tuple[PassCost, list[Sample]]:
    """Time the engine's model (on the calling thread) and fit: (model, the timings).

    Raises TooFewTimings when the budget was too short for a fit.
    """
    shapes = calibration_shapes(max_rows=max_rows, max_width=engine.max_length)
    samples = calibrate(forward_timer(engine), shapes, budget_s=budget_s, stop=stop)
    return fit_pass_cost(samples, max_rows=max_rows), samples
