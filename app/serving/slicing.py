"""Time-sliced passes while tenants contend (issue 28): pure functions and their bookkeeping.

A fair batch and runs of whole tenants (`app.serving.fairness`) serve a light key first only
when its request is queued at the moment a batch is cut. A request that arrives while a
flood's full-size pass runs on the inference thread waits for that whole pass (MiniLM on a
CPU: 32 rows, ~50-60 ms). So while more than one tenant is active (`RecentTenants`: queued a
request within the last `WINDOW_S`), every batch is cut to a predicted duration of about the
lightest active tenant's own request alone (`slice_budget`): a newcomer waits at most one
such slice, and is taken first into the next batch (its fair share).
With one tenant (or without API keys) there is no budget and nothing changes. A slice never
costs the flood more than `APP_FAIR_SLICE_SLOWDOWN` of its time per text (`slice_rows`), so
where a pass is mostly its fixed cost (a GPU; MiniLM on a CPU) passes stay big. No clock
reads here: `now` is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.serving.costs import PassCost

WINDOW_S = 1.0  # a tenant that queued a request this recently is active
FLOOR_FIXED = 2.0  # a slice may take at least this many times a pass's fixed cost
# Nor less than this (seconds): waiting for a pass that short costs a light key less than its
# own HTTP and tokenising do (the tiny model on a CPU: slices cost its flood 15-17% of its
# answers and left the light key's p99 as it was). The uncalibrated model counts padded
# tokens, never this few.
MIN_SLICE_S = 0.005

Shape = tuple[int, int]  # (rows, widest row) of a tenant's latest request


@dataclass
class RecentTenants:
    """The tenants that queued a request lately: when last, and that request's shape."""

    window_s: float = WINDOW_S
    seen: dict[Hashable, tuple[float, Shape]] = field(default_factory=dict)

    def note(self, tenant: Hashable, rows: int, width: int, now: float) -> None:
        """A request of `tenant` with `rows` rows (texts x adapters), `width` tokens at most,
        was queued at `now`."""
        self.seen[tenant] = (now, (rows, width))

    def active(self, now: float) -> dict[Hashable, Shape]:
        """The tenants seen within the window before `now` (older ones are forgotten)."""
        for tenant in [t for t, (at, _) in self.seen.items() if now - at > self.window_s]:
            del self.seen[tenant]
        return {tenant: shape for tenant, (_, shape) in self.seen.items()}


def slice_budget(active: Mapping[Hashable, Shape], cost: PassCost) -> float | None:
    """The predicted duration one pass may take while tenants contend; None with one tenant.

    That is the predicted pass of the lightest active tenant's typical request, but at least
    `FLOOR_FIXED` x the fixed cost of a pass (a slice is never mostly start-up) and
    `MIN_SLICE_S`."""
    if len(active) < 2:
        return None
    lightest = min(cost.predict(rows, width) for rows, width in active.values())
    return max(lightest, FLOOR_FIXED * cost.fixed, MIN_SLICE_S)


def slice_rows(
    cost: PassCost, width: int, budget: float, *, full: int = 0, slowdown: float = math.inf
) -> int | None:
    """The most rows of `width` whose pass is predicted within `budget`, never below 1;
    None when a row costs nothing more (no cap).

    Nor below the fewest rows whose predicted time per row is within `slowdown` x that of a
    `full` pass (`APP_FAIR_SLICE_SLOWDOWN`): a slice never costs the flood more than that part
    of its throughput. Where a pass is mostly its fixed cost (MiniLM on a CPU: a one-text pass
    ~15 ms; a GPU) that floor keeps passes big; slowdown 1 turns slicing off."""
    marginal = cost.predict(2, width) - cost.predict(1, width)
    if marginal <= 0:
        return None
    rows = max(1, math.floor((budget - cost.fixed) / marginal + 1e-9))
    if full <= rows:
        return rows
    room = slowdown * cost.predict(full, width) / full - marginal  # per row, for the fixed cost
    return full if room <= 0 else max(rows, min(full, math.ceil(cost.fixed / room - 1e-9)))


class BatchRoom:
    """The caps of one batch being filled: rows and padded tokens per body-pass key, and
    with a `budget` the rows whose pass `cost` predicts within it (`slice_rows`)."""

    def __init__(
        self,
        max_rows: int,
        max_tokens: int,
        key: Callable[[str], Hashable] | None,
        budget: float | None = None,
        cost: PassCost | None = None,
        slowdown: float = math.inf,
    ) -> None:
        self.max_rows, self.max_tokens, self.key = max_rows, max_tokens, key
        self.slowdown = slowdown
        self.budget, self.cost = (budget, cost) if cost is not None else (None, None)
        self.rows: dict[Hashable, int] = {}
        self.widths: dict[Hashable, int] = {}

    def admit(self, item: Any) -> bool:
        """Whether `item` (with `.adapter` and `.ids`) still fits; counted in when it does."""
        group = self.key(item.adapter) if self.key is not None else None
        count = self.rows.get(group, 0)
        if count >= self.max_rows:
            return False
        width = max(self.widths.get(group, 0), len(item.ids))
        if count and width * (count + 1) > self.max_tokens:
            return False
        if count and self.budget is not None:
            cap = slice_rows(
                self.cost, width, self.budget, full=self.max_rows, slowdown=self.slowdown
            )
            if cap is not None and count + 1 > cap:
                return False
        self.rows[group], self.widths[group] = count + 1, width
        return True
