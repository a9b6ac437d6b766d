"""The pass cost model, re-fitted online from the server's own forward passes.

The start-up timing (`app.serving.costs.calibrate`) is short and runs once. Within its budget
it may never time the larger passes of long texts (on a CPU a 16-row pass of 128 tokens takes
half a second), and then it caps them at twice the largest row count it saw; and it times a
bare body forward, not the served pass with its adapter segments and heads. `CostLearner`
keeps the timings of live forward passes and re-fits every `refit_every` passes, at most once
per `min_interval_s` (a re-fit runs on the event loop: ~0.1 ms quiet, ms on a loaded box; at
60 passes/s every 8 passes would be 7 a second):

- a live pass of `rows` texts padded to `width` counts at its width bucket (the next
  calibration width: 16, 32, 64, ..., the token cap), its time scaled to that width with the
  current model
  (only the width dependence is borrowed from the model; the row dependence is measured);
- per (rows, bucket), the median of the recent live timings replaces the start-up sample,
  so one noisy pass moves nothing and the served cost wins over the bare one;
- `fit_pass_cost` then fits the terms and the row caps from the merged samples. A cap set
  for want of timings (twice the largest row count timed) lets the planner run passes that
  large; if they pay, they become the largest timed and the cap doubles again; if not, the
  cap stays where batching stopped paying. Timings older than `memory_s` are forgotten,
  so a cap that noise once lowered is explored again.

`CostLearner` is pure bookkeeping (the caller passes the clock's reading). `DeviceCosts` is
what the batcher holds: the start-up timing (run on the inference thread), then the learner.
"""

from __future__ import annotations

import bisect
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from app.serving.costs import (
    PassCost,
    Sample,
    TooFewTimings,
    calibrate_engine,
    calibration_shapes,
    fit_pass_cost,
)
from app.serving.planning import Limits

log = logging.getLogger(__name__)

BUCKETS = (16, 32, 64, 128, 256, 512)  # calibration_shapes' widths


class CostLearner:
    def __init__(
        self,
        model: PassCost,
        calibration: Sequence[Sample] = (),
        *,
        max_rows: int,
        widths: Sequence[int] = BUCKETS,
        refit_every: int = 8,
        min_interval_s: float = 0.0,
        keep: int = 8,
        memory_s: float = 60.0,
        tolerance: float = 0.1,
    ) -> None:
        self.model = model
        self.max_rows = max_rows
        self.widths = sorted(set(widths))
        self.refit_every = refit_every
        self.min_interval_s = min_interval_s
        self._fitted_at = -float("inf")
        self.memory_s = memory_s
        self.tolerance = tolerance
        self._keep = keep
        self._calibration = {(r, w): s for r, w, s in calibration}
        self._live: dict[tuple[int, int], deque[tuple[float, float]]] = {}
        self._since_fit = 0
        self.refits = 0

    def reset(self, model: PassCost, calibration: Sequence[Sample]) -> None:
        """A new start-up timing: keep the live timings, re-fit with the new samples."""
        self.model = model
        self._calibration = {(r, w): s for r, w, s in calibration}

    def observe(self, rows: int, width: int, seconds: float, *, now: float) -> PassCost | None:
        """Record one live forward pass; the re-fitted model when this one triggered a fit."""
        if rows < 1 or width < 1 or seconds <= 0:
            return None
        bucket = self.bucket_of(width)
        scale = self.model.predict(rows, bucket) / max(self.model.predict(rows, width), 1e-12)
        key = (rows, bucket)
        self._live.setdefault(key, deque(maxlen=self._keep)).append((now, seconds * scale))
        self._since_fit += 1
        if self._since_fit < self.refit_every or now - self._fitted_at < self.min_interval_s:
            return None
        self._since_fit, self._fitted_at = 0, now
        return self.refit(now=now)

    def samples(self, *, now: float) -> list[Sample]:
        """Start-up samples, each replaced by the median of its recent live timings if any."""
        merged = dict(self._calibration)
        for key in list(self._live):
            recent = [s for t, s in self._live[key] if now - t <= self.memory_s]
            if not recent:
                del self._live[key]
                continue
            merged[key] = statistics.median(recent)
        return [(r, w, s) for (r, w), s in sorted(merged.items())]

    def refit(self, *, now: float) -> PassCost | None:
        try:
            fitted = fit_pass_cost(
                self.samples(now=now), tolerance=self.tolerance, max_rows=self.max_rows
            )
        except TooFewTimings:
            return None
        self.model = fitted
        self.refits += 1
        return fitted

    def bucket_of(self, width: int) -> int:
        """The calibration width a pass of this padded width counts at (the next one up)."""
        index = bisect.bisect_left(self.widths, width)
        return self.widths[index] if index < len(self.widths) else width


class DeviceCosts:
    """The model the batcher plans with: fixed overhead, then timed, then learnt online."""

    def __init__(self, engine: Any, limits: Limits) -> None:
        self.engine = engine
        self.limits = limits
        self.model = PassCost.from_overhead(limits.split_overhead_tokens)
        self.learner: CostLearner | None = None
        if limits.learn_costs:
            grid = calibration_shapes(max_rows=1, max_width=engine.max_length)
            self.learner = CostLearner(
                self.model,
                max_rows=limits.max_batch_size,
                widths=[w for _, w in grid],
                min_interval_s=1.0,
            )
        self.calibrating = False

    def calibrate(self, stop: Callable[[], bool]) -> None:
        """Time the device (call on the inference thread); on failure keep the fixed model."""
        budget = self.limits.calibration_budget_s
        self.calibrating = True
        try:
            model, samples = calibrate_engine(
                self.engine, max_rows=self.limits.max_batch_size, budget_s=budget, stop=stop
            )
        except TooFewTimings as exc:
            log.warning("%s in %g s; planning with a fixed pass overhead", exc, budget)
        except Exception:
            log.exception("timing forward passes failed; planning with a fixed pass overhead")
        else:
            self.model = model
            log.info("pass cost model (%d shapes timed): %s", len(samples), model.describe())
            if self.learner is not None:
                self.learner.reset(model, samples)
        finally:
            self.calibrating = False

    def observe(self, rows: int, width: int, forward_s: Sequence[float]) -> None:
        """One served batch: learn from it when it ran as exactly one forward pass."""
        if self.learner is None or self.calibrating or len(forward_s) != 1:
            return
        before = self.model.caps
        fitted = self.learner.observe(rows, width, forward_s[0], now=time.monotonic())
        if fitted is not None:
            self.model = fitted
            if fitted.caps != before:
                log.info("pass cost model re-fitted from live passes: %s", fitted.describe())
