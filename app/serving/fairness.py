"""Fair shares of the batch queue between tenants (API keys), a pure function and its state.

When the queue holds rows of several tenants (`Request.tenant`, the key id of the request),
`take_fair` fills a batch one row at a time from the tenant served least so far, counted in
tokens (`FairShare.served`); each tenant's rows keep their arrival order, and ties go to the
tenant that has waited longest. A tenant that was idle starts level with the least-served
waiting tenant, so idling banks no credit and a newcomer is served in the very next batch.
This is start-time fair queueing with tokens as the cost (deficit round robin in the limit of
a small quantum): over any stretch of contention every waiting tenant gets an equal share of
the tokens, and a flooding key cannot push a light key's rows behind its own backlog.

With one tenant in the queue (always, without API keys) the batcher keeps its plain FIFO
(`planning.collect`), so nothing changes for a single-tenant server.

A fair batch alone does not keep a light key fast: its one row would share the flood's
full-size pass. `tenant_runs` splits a batch of several tenants into runs of whole tenants,
smallest first, that `planning.plan_batch` plans as passes of their own.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from app.serving.costs import PassCost


@dataclass
class FairShare:
    """Tokens served per waiting tenant (relative: the least-served one is at 0)."""

    served: dict[Hashable, float] = field(default_factory=dict)


def tenant_of(item: Any) -> Hashable:
    return item.request.tenant


def one_tenant(queue: deque) -> bool:
    """Whether every row in `queue` belongs to the same tenant (stops at the first other)."""
    if not queue:
        return True
    first = tenant_of(queue[0])
    return all(tenant_of(item) == first for item in queue)


def take_fair(
    queue: deque,
    fair: FairShare,
    *,
    now: float,
    admit: Callable[[Any], bool],
) -> tuple[list, list]:
    """Take a batch fairly off `queue` (changed in place): (batch, expired).

    `admit(item)` says whether a row still fits the batch (and counts it when it does); a
    tenant whose next row does not fit is done for this batch (its rows stay in order). The
    first row taken always fits, so every batch makes progress.
    """
    lanes: dict[Hashable, deque] = {}
    expired = []
    for item in queue:
        if item.request.done or item.request.deadline <= now:
            expired.append(item)
        else:
            lanes.setdefault(tenant_of(item), deque()).append(item)
    served = fair.served
    for gone in served.keys() - lanes.keys():  # idle tenants are forgotten: no banked credit
        del served[gone]
    floor = min(served.values(), default=0.0)
    heap = [(served.setdefault(t, floor), order, t) for order, t in enumerate(lanes)]
    heapq.heapify(heap)
    batch = []
    while heap:
        level, order, tenant = heapq.heappop(heap)
        lane = lanes[tenant]
        if not admit(lane[0]):
            continue
        item = lane.popleft()
        batch.append(item)
        served[tenant] = level + max(len(item.ids), 1)
        if lane:
            heapq.heappush(heap, (served[tenant], order, tenant))
    floor = min(served.values(), default=0.0)
    for tenant in served:  # keep the numbers small: only the differences matter
        served[tenant] -= floor
    gone = {id(item) for item in batch} | {id(item) for item in expired}
    rest = [item for item in queue if id(item) not in gone]  # arrival order kept
    queue.clear()
    queue.extend(rest)
    return batch, expired


def tenant_runs(
    lengths: Sequence[int], tenants: Sequence[Hashable], cost: PassCost
) -> list[list[int]]:
    """A batch's rows as runs of whole tenants, the smallest tenant first: [row indices].

    Tenants are ordered by their predicted time alone (`cost`, their rows as one pass); next
    tenants share a run when that lowers the sum of every tenant's slowdown (its finish time /
    its time alone), each run estimated as one pass. Dynamic programming over the ordered
    tenants, O(tenants^2); over `MAX_BLOCKS` tenants, neighbours in that order go in blocks
    that are never cut (the DP stays cheap on the event loop). So a light key's row runs in a
    small pass before a flood's full one, yet many light keys of one row each still share one
    pass (each alone would wait for all the passes before it). Rows keep their order within
    a tenant; one tenant: one run.
    """
    lanes: dict[Hashable, list[int]] = {}
    for row, tenant in enumerate(tenants):
        lanes.setdefault(tenant, []).append(row)
    if len(lanes) <= 1:
        return list(lanes.values())
    alone = {id(g): cost.predict(len(g), max(lengths[i] for i in g)) for g in lanes.values()}
    groups = sorted(lanes.values(), key=lambda g: alone[id(g)])
    step = -(-len(groups) // MAX_BLOCKS)
    blocks = [
        sorted(r for g in groups[k : k + step] for r in g) for k in range(0, len(groups), step)
    ]
    weights = [sum(1 / max(alone[id(g)], 1e-12) for g in groups[k : k + step])
               for k in range(0, len(groups), step)]  # fmt: skip
    cut = _cheapest_cuts(
        [len(b) for b in blocks], [max(lengths[i] for i in b) for b in blocks], weights, cost
    )
    runs, j = [], len(blocks)
    while j > 0:
        runs.append(sorted(row for block in blocks[cut[j] : j] for row in block))
        j = cut[j]
    return runs[::-1]


MAX_BLOCKS = 16


def _cheapest_cuts(
    sizes: list[int], widths: list[int], weights: list[float], cost: PassCost
) -> list[int]:
    """cut[j]: where the last run of the best plan for blocks 0..j-1 starts (the DP above)."""
    later = list(accumulate(reversed(weights)))[::-1]  # later[i]: weight still waiting at i
    fixed, per_row, per_token, per_token_width = (
        cost.fixed, cost.per_row, cost.per_token, cost.per_token_width
    )  # fmt: skip
    best = [0.0] + [math.inf] * len(sizes)
    cut = [0] * (len(sizes) + 1)
    for j in range(1, len(sizes) + 1):
        rows = width = 0
        for i in range(j - 1, -1, -1):  # a run of blocks i..j-1, as one pass
            rows += sizes[i]
            width = max(width, widths[i])
            waiting = later[i] * (
                fixed + rows * (per_row + width * (per_token + per_token_width * width))
            )
            if waiting >= best[j]:  # grows as i falls, and best[i] >= 0: no better start
                break
            if best[i] + waiting < best[j]:
                best[j], cut[j] = best[i] + waiting, i
    return cut
