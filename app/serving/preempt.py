"""A light key's short pass, run between two layers of another key's long one (issue 28).

Time slices (`app.serving.slicing`) bound a light key's wait to one slice, but where a pass is
mostly its fixed cost (MiniLM on a CPU: one text ~12 ms, the slice a flood keeps ~35 ms) a
slice cannot be short without costing the flood much of its throughput. And a light key that
sends its next request when it has its answer arrives just after the flood's next slice began:
it waits most of it, every time (light key's queue p50 35 ms, p99 42 ms). So while a pass runs
on the inference thread, a request of a key with no row in that pass and few rows queued
(`light`) is taken off the queue and offered to it (`Preemption.offer`): the inference thread
runs it as a pass of its own at the next stop (before an encoder layer or its feed-forward
part: `Engine.between_layers`), then goes on with the interrupted pass. The light key waits
part of a layer instead of a pass; the flood loses the light pass's own time, as it does
when that pass runs between its slices.

A nested pass changes nothing the interrupted one reads: it runs only where its adapters are on
the device in their slots at the store's version and stacked on the one-pass path already
(`Engine.nestable`, `InferenceThread._in_place`, checked on the inference thread when it is
taken); otherwise its rows go back to the queue, first. Nested passes take at most as long as
the interrupted pass has run so far (`Preemption.poll`): keys that send many small requests
get at most half of the device while a flood's pass runs, never all of it. Rows offered that
a pass did not take (it ended first) go back to the queue and are offered to the batch's next
pass. A light key's rows are not charged to its fair share: it has nothing queued after them,
so `fairness.take_fair` would forget it anyway (no banked credit either way). The interrupted
pass's time (`inference_batch_seconds`, a request's inference time) includes the nested
one's, and the cost model does not learn from it. On a GPU the thread stops where it has
queued the kernels so far, so a nested pass waits for those (not measured: no GPU was lent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

LIGHT_SHARE = 4  # a light key's queued rows are at most this part of the running pass's


def light(queued: Iterable, tenant: Hashable, running: Sequence) -> list | None:
    """`tenant`'s rows in `queued` when they may run nested in the pass of `running`: it has
    no row there and its queued rows are at most 1 / LIGHT_SHARE of it; else None. No key
    (None): never (one tenant shares batches, `app.serving.fairness`)."""
    if tenant is None or any(item.request.tenant == tenant for item in running):
        return None
    rows = [item for item in queued if item.request.tenant == tenant]
    if not rows or len(rows) * LIGHT_SHARE > len(running):
        return None
    return rows


class Preemption:
    """Rows offered to the pass on the inference thread, to run between two of its layers.

    `arm(running)` / `disarm` (event loop) frame each pass (`running`: its rows); `offer` /
    `offer_light` (event loop) hand rows over while it runs; `poll` (inference thread, between
    layers) takes them and calls `run(rows)`.
    """

    def __init__(self, run: Callable[[list], Any], clock: Callable[[], float] = time.perf_counter):
        self._run, self._clock = run, clock
        self._lock = threading.Lock()
        self._running: Sequence | None = None  # the rows of the pass that runs, if any
        self._rows: list | None = None  # offered, not taken yet
        self._started = 0.0  # when the pass began (`arm`)
        self._nested_s = 0.0  # the nested passes' time within it
        self._nesting = False  # a nested pass runs: no pass inside it

    def arm(self, running: Sequence = ()) -> None:
        """A pass of `running` starts: rows may be offered to it."""
        with self._lock:
            self._running, self._rows = running, None
            self._started, self._nested_s = self._clock(), 0.0

    def disarm(self) -> tuple[list, bool]:
        """The pass ended: (the rows offered and not taken, whether a nested pass ran)."""
        with self._lock:
            rows, took = self._rows or [], self._nested_s > 0
            self._running, self._rows = None, None
        return rows, took

    def offer(self, rows: list) -> bool:
        """Hand `rows` to the running pass; False when none runs (they stay queued). Rows
        offered before it reaches its next layer share one nested pass."""
        with self._lock:
            if self._running is None:
                return False
            self._rows = [*(self._rows or ()), *rows]
            return True

    def offer_light(self, queue: Any, tenants: Iterable[Hashable]) -> None:
        """Offer the rows of each light key of `tenants` (`light`) in `queue` (a
        `RequestQueue`) to the running pass, if any; those it takes leave the queue."""
        running = self._running
        if running is None:
            return
        for tenant in tenants:
            rows = light(queue.items, tenant, running)
            if rows and self.offer(rows):
                queue.take(rows)

    def poll(self) -> None:
        """Between two layers of a pass: run the rows offered (inference thread), unless the
        nested passes have taken longer than the pass itself so far (then a later layer may)."""
        if self._rows is None or self._nesting:  # the common case, without the lock
            return
        with self._lock:
            now = self._clock()
            if not self._rows or self._nested_s > now - self._started - self._nested_s:
                return
            rows, self._rows = self._rows, None
        self._nesting = True
        try:
            self._run(rows)
        finally:
            self._nesting = False
            with self._lock:
                self._nested_s += max(self._clock() - now, 1e-9)
