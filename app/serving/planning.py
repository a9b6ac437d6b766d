"""Batch planning, pure functions: what goes into the next forward passes.

`collect` takes the next batch off the queue (and the expired items), `dispatch_delay` says
when to cut it, `plan_batch` groups it by body pass (adapters that can share one) and
`plan_passes` splits each group into forward passes by text length from a cost model of the
device (`app.serving.costs.PassCost`; `split_by_length` is the same cut with a fixed per-pass
overhead), and `group_segments` orders a pass into contiguous per-adapter segments.
No I/O, no clock reads: everything they need is passed in, so each has table-driven tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.serving.costs import PassCost
from app.serving.fairness import FairShare, one_tenant, spans, take_fair, tenant_runs
from app.serving.slicing import BatchRoom


@dataclass
class Timing:
    """Filled in by `Batcher.classify` as a request goes, also when it fails (milliseconds)."""

    queue_ms: float = 0.0  # waiting for a forward pass (until the error, if none ran)
    inference_ms: float = 0.0  # in forward passes (0 when none ran)
    tokenize_ms: float = 0.0  # tokenising the request's texts (app.observability spans)


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_batch_tokens: int
    max_wait_s: float
    max_queue: int
    timeout_s: float
    split_overhead_tokens: int = 32
    calibrate: bool = False  # time forward passes at start-up and plan passes with the fit
    calibration_budget_s: float = 1.5
    learn_costs: bool = False  # re-fit the cost model from the live passes' timings
    slice_slowdown: float = 1.25  # what time slices may cost a flood per text (1: no slices)
    preempt: bool = True  # a light key's pass may run between two layers of another's


@dataclass(eq=False)
class Request:
    """One classify call: its future completes when every item has a result."""

    future: asyncio.Future
    deadline: float
    results: list[Any]
    remaining: int
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    done: bool = False
    items: list[Item] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)  # adapter -> version of its rows
    tenant: Hashable = None  # whose request (the API key's id): the queue is shared fairly
    served: float | None = None  # its level among its tenant's requests (fairness._Lane)


@dataclass(eq=False)
class Item:
    request: Request
    slot: int
    adapter: str
    ids: list[int]
    enqueued: float = field(default_factory=time.monotonic)
    yielded: bool = False  # planned after warm rows once (`fairness.warm_first`): never again
    sent_back: bool = False  # went back to the queue unrun once (`passes.run_passes`): never again


def new_request(
    future: asyncio.Future, ids: list[list[int]], adapters: Sequence[str], *,
    deadline: float, tenant: Hashable,
) -> Request:  # fmt: skip
    """A request and its items, one per (adapter, text): adapter-major slots."""
    size = len(ids) * len(adapters)
    request = Request(future, deadline, [None] * size, size, tenant=tenant)
    now = time.monotonic()
    for a, name in enumerate(adapters):
        for t, row in enumerate(ids):
            request.items.append(Item(request, a * len(ids) + t, name, row, now))
    return request


# ---- pure functions ------------------------------------------------------------------------
def collect(
    queue: deque[Item],
    *,
    now: float,
    max_batch_size: int,
    max_batch_tokens: int,
    key: Callable[[str], Hashable] | None = None,
    fair: FairShare | None = None,
    budget: float | None = None,
    cost: PassCost | None = None,
    slowdown: float = math.inf,
) -> tuple[list[Item], list[Item]]:
    """Take the next batch off the front of `queue`: (batch, expired).

    Items whose request is finished or past its deadline are removed as expired. The batch
    holds at most `max_batch_size` items and at most `max_batch_tokens` padded tokens
    (rows x longest row); the first item is always taken so that no item can starve. With
    `key` (adapter -> the body pass its rows run in), `max_batch_size` and the token cap hold
    per key instead: rows of different keys never share a body pass, so a batch that mixes
    them may hold a full pass of each. The batch stops at the first item that does not fit.
    With `fair` and rows of several tenants queued, or a request whose rows go on past the
    batch while other requests wait behind it, the batch is shared between the tenants and,
    within a tenant, between its requests instead (`app.serving.fairness.take_fair`; each
    request's rows stay in order): a short request is not stuck behind all the rows of big
    ones. Otherwise (one row per request, the usual load) that is the FIFO taken here.
    With a `budget` (tenants contend: `app.serving.slicing.slice_budget`), a pass of each key
    holds only the rows that `cost` predicts to run within it (at least one; `slowdown`:
    `app.serving.slicing.slice_rows`).
    """

    def room() -> Callable[[Item], bool]:
        return BatchRoom(max_batch_size, max_batch_tokens, key, budget, cost, slowdown).admit

    if fair is not None and not one_tenant(queue):
        return take_fair(queue, fair, now=now, admit=room())
    admit, batch, expired = room(), [], []
    while queue:
        item = queue[0]
        if item.request.done or item.request.deadline <= now:
            expired.append(queue.popleft())
            continue
        if not admit(item):
            break
        batch.append(queue.popleft())
    if fair is None:
        return batch, expired
    if batch and queue and spans(queue, batch[-1].request):
        queue.extendleft(reversed(batch))  # share the batch between the requests instead
        batch, late = take_fair(queue, fair, now=now, admit=room())
        return batch, expired + late
    fair.served.clear()
    return batch, expired


def settle(item: Item, outcome: Any) -> list[Item]:
    """Record `outcome` (it has a `.version`) for `item`; return the items to run again.

    Every row of one adapter in one request must come from the same adapter version. When the
    adapter is replaced between two forward passes of a request, the rows that an older version
    made go back to the queue (they get the newer one); a row older than rows already kept is
    itself run again. So a response is never a mixture of versions.
    """
    request = item.request
    kept = request.versions.get(item.adapter)
    if kept is not None and outcome.version < kept:
        return [item]
    redo = []
    if kept is not None and outcome.version > kept:
        for other in request.items:
            old = request.results[other.slot]
            if other.adapter == item.adapter and old is not None and old.version < outcome.version:
                request.results[other.slot] = None
                request.remaining += 1
                redo.append(other)
    request.versions[item.adapter] = outcome.version
    request.results[item.slot] = outcome
    request.remaining -= 1
    return redo


def group_segments(adapters: Sequence[str]) -> list[tuple[str, list[int]]]:
    """Contiguous per-adapter segments: [(adapter, row indices)] in first-appearance order."""
    segments: dict[str, list[int]] = {}
    for index, name in enumerate(adapters):
        segments.setdefault(name, []).append(index)
    return list(segments.items())


def split_by_length(lengths: Sequence[int], *, overhead: int) -> list[list[int]]:
    """Split rows into forward passes of similar length when that saves padding.

    Minimises sum(rows x longest row) over the passes plus `overhead` padded tokens per pass
    (the fixed cost of one more forward). Returns row indices per pass, shortest texts first;
    a single pass when splitting does not pay. Dynamic programming over distinct lengths.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    # Cut candidates: after the last row of each distinct length (positions in `order`).
    ends = [
        k + 1
        for k in range(len(order))
        if k + 1 == len(order) or lengths[order[k]] != lengths[order[k + 1]]
    ]
    best = [0] * (len(ends) + 1)  # best[j]: cost of rows before ends[j - 1]
    cut = [0] * (len(ends) + 1)
    for j in range(1, len(ends) + 1):
        stop, width = ends[j - 1], lengths[order[ends[j - 1] - 1]]
        best[j], cut[j] = min(
            (best[i] + (stop - (ends[i - 1] if i else 0)) * width + overhead, i) for i in range(j)
        )
    passes, j = [], len(ends)
    while j > 0:
        start = ends[cut[j] - 1] if cut[j] else 0
        passes.append(order[start : ends[j - 1]])
        j = cut[j]
    return passes[::-1]


def plan_passes(lengths: Sequence[int], cost: PassCost, *, step: int = 1) -> list[list[int]]:
    """Split rows into forward passes minimising the predicted total time; shortest first.

    Passes hold rows contiguous in length order, at most `cost.row_cap(width)` rows each.
    Dynamic programming over the sorted rows: a pass may start where a new length begins
    (lengths rounded up to `step`, to bound the work for big batches) or, under a row cap,
    anywhere within the cap; the work is O(rows x (distinct lengths + cap)).
    """
    n = len(lengths)
    order = sorted(range(n), key=lambda i: lengths[i])
    width = [lengths[i] for i in order]
    bucket = [-(-w // step) for w in width]
    starts = [k for k in range(n) if k == 0 or bucket[k] != bucket[k - 1]]
    best = [0.0] + [math.inf] * n  # best[j]: cheapest plan for the first j sorted rows
    cut = [0] * (n + 1)
    # Where no cap binds, a pass starts where a length run begins, so it also ends where one
    # ends: only those positions need a plan (runs x runs predictions, not rows x runs).
    ends: Iterable[int] = range(1, n + 1)
    if n and all((cost.row_cap(w) or n) >= n for w in set(width)):
        ends = [*starts[1:], n]
    for j in ends:
        cap = cost.row_cap(width[j - 1]) or n
        # Without a cap, a pass only needs to start where a length begins (never worse).
        if cap >= j:
            candidates: Iterable[int] = (k for k in starts if k < j)
        elif step == 1:
            candidates = range(j - cap, j)
        else:  # a full pass, or one starting where a (rounded) length begins
            candidates = [j - cap, *(k for k in starts if j - cap < k < j)]
        for i in candidates:
            total = best[i] + cost.predict(j - i, width[j - 1])
            if total < best[j]:
                best[j], cut[j] = total, i
    passes, j = [], n
    while j > 0:
        passes.append(order[cut[j] : j])
        j = cut[j]
    return passes[::-1]


def plan_batch(
    lengths: Sequence[int],
    keys: Sequence[Hashable],
    cost: PassCost,
    tenants: Sequence[Hashable] | None = None,
) -> list[list[int]]:
    """Forward passes for a batch: rows grouped by key (one body pass each), then by length.

    Rows whose adapters cannot share a body pass (`keys`, e.g. different adapter methods) would
    run as separate body passes inside one forward anyway; planning them apart lets each group
    be cut by length on its own and keeps the passes (and the timings the cost model learns
    from) of one kind. Groups keep the order their first row arrived in. With `tenants` (one
    per row) naming several, the rows are first split into runs of whole tenants, smallest
    first (`app.serving.fairness.tenant_runs`), and each run is planned on its own.
    """
    runs = tenant_runs(lengths, tenants, cost) if tenants else [list(range(len(lengths)))]
    passes = []
    for run in runs:
        groups: dict[Hashable, list[int]] = {}
        for index in run:
            groups.setdefault(keys[index], []).append(index)
        for members in groups.values():
            sizes = [lengths[i] for i in members]
            step = 1 if len(sizes) <= 64 else 8  # coarser cuts keep big batches cheap to plan
            passes += [[members[j] for j in cut] for cut in plan_passes(sizes, cost, step=step)]
    return passes


def dispatch_delay(
    *, queued: int, oldest_age: float, max_batch_size: int, max_wait: float, expected: int
) -> float:
    """Seconds to wait before cutting a batch (0 = now, inf = nothing queued).

    Cut at once when the queue holds `expected` items (the recent concurrency: the Batcher
    passes the most items it held, queued and running, since its last cut; 1 for a lone
    client, so it never waits) or a full batch; otherwise wait for more until the oldest item
    has waited `max_wait`.
    """
    if queued <= 0:
        return math.inf
    if queued >= min(max_batch_size, max(expected, 1)):
        return 0.0
    return max(0.0, max_wait - oldest_age)
