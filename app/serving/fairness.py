"""Fair shares of the batch queue between tenants (API keys), a pure function and its state.

`take_fair` fills a batch one row at a time from the tenant (`Request.tenant`, the key id of
the request) served least so far, counted in tokens (`FairShare.served`); ties go to the
tenant that has waited longest. A tenant that was idle starts level with the least-served
waiting tenant, so idling banks no credit and a newcomer is served in the very next batch.
This is start-time fair queueing with tokens as the cost (deficit round robin in the limit of
a small quantum): over any stretch of contention every waiting tenant gets an equal share of
the tokens, and a flooding key cannot push a light key's rows behind its own backlog.

Within a tenant (one tenant: always, without API keys) the requests share the tenant's rows
the same way (`_Lane`): a short request queued behind two of 256 texts rides in the next
batch instead of waiting for all 512 rows (issue 28); each request's rows keep their order.
With one row per request, as under many clients, that is the plain FIFO.

A fair batch alone does not keep a light key fast: its one row would share the flood's
full-size pass. `tenant_runs` splits a batch of several tenants into runs of whole tenants,
smallest first, that `planning.plan_batch` plans as passes of their own. One that arrives
while a flood's pass runs waits for it: `app.serving.slicing` keeps those passes short.

Nor does it keep hot adapters fast under a storm of cold ones: `warm_first` plans the rows whose
adapter is not on the device (each pass activates its adapters before its forward) after the
rest, so a hot adapter's rows never wait for a cold one's activation in their own pass.
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


def one_tenant(queue: deque) -> bool:
    """Whether every row in `queue` belongs to the same tenant (stops at the first other)."""
    if not queue:
        return True
    first = queue[0].request.tenant
    return all(item.request.tenant == first for item in queue)


def spans(queue: deque, request: Any) -> bool:
    """Whether `request` has rows at the front of `queue` and another request waits behind."""
    return queue[0].request is request and any(item.request is not request for item in queue)


def take_fair(
    queue: deque,
    fair: FairShare,
    *,
    now: float,
    admit: Callable[[Any], bool],
) -> tuple[list, list]:
    """Take a batch fairly off `queue` (changed in place): (batch, expired).

    `admit(item)` says whether a row still fits the batch (and counts it when it does); a
    tenant whose next row does not fit is done for this batch (its rows stay in the order
    `_lanes` gives them). The first row taken always fits, so every batch makes progress.
    """
    lanes, floors, expired = _lanes(queue, now)
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
        tokens = max(len(item.ids), 1)
        served[tenant] = level + tokens
        request = item.request  # its level within its tenant (`_lanes`)
        base = request.served
        request.served = (floors[tenant] if base is None else base) + tokens
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


def refund(items: Sequence, fair: FairShare) -> None:
    """Rows taken by `take_fair` that go back to the queue unrun: their tokens are not served."""
    for item in items:
        tokens, request = max(len(item.ids), 1), item.request
        if request.served is not None:
            request.served -= tokens
        if request.tenant in fair.served:
            fair.served[request.tenant] -= tokens


def _lanes(queue: deque, now: float) -> tuple[dict[Hashable, deque], dict[Hashable, float], list]:
    """Each tenant's live rows in the order its requests share them; the tenants' floors (the
    least level of a waiting request); the expired rows.

    A request's level (`Request.served`, tokens taken) starts at its tenant's floor; a row is
    due at its request's level plus the tokens of the request's rows before it, and a tenant's
    rows go in order of that (ties: the earlier request). So a short request behind big ones
    of its tenant rides in the next batch, and big ones share what is left instead of running
    one after the other. With one row per new request (many clients) that is arrival order,
    and nothing is sorted.
    """
    lanes: dict[Hashable, deque] = {}
    floors: dict[Hashable, float] = {}
    shared: set[Hashable] = set()  # tenants with a request that holds several rows or a level
    last = None
    expired = []
    for item in queue:
        request = item.request
        if request.done or request.deadline <= now:
            expired.append(item)
            continue
        tenant = request.tenant
        lane = lanes.get(tenant)
        if lane is None:
            lane = lanes[tenant] = deque()
            floors[tenant] = math.inf
        lane.append(item)
        if request.served is not None:
            floors[tenant] = min(floors[tenant], request.served)
            shared.add(tenant)
        elif request is last:
            shared.add(tenant)
        last = request
    for tenant in lanes:
        if floors[tenant] == math.inf:
            floors[tenant] = 0.0
        if tenant in shared:
            lanes[tenant] = _shared(lanes[tenant], floors[tenant])
    return lanes, floors, expired


def _shared(lane: deque, floor: float) -> deque:
    """A tenant's rows in order of when each is due (`_lanes`)."""
    due: dict[Any, float] = {}
    order: dict[Any, int] = {}
    keyed = []
    for item in lane:
        request = item.request
        level = due.get(request)
        if level is None:
            level = floor if request.served is None else request.served
            order[request] = len(order)
        due[request] = level + max(len(item.ids), 1)
        keyed.append((level, order[request], len(keyed), item))
    keyed.sort(key=lambda k: k[:3])
    return deque(k[3] for k in keyed)


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


def late_rows(items: Sequence, on_device: Callable[[str], bool]) -> list[bool]:
    """Which of a batch's rows `warm_first` plans last: those whose adapter is not on the
    device, unless they yielded once already (each is marked: `Item.yielded`). So when the
    rest of a batch goes back to the queue (`passes.run_passes`), a cold row is not put last
    again, and a stream of warm rows cannot starve it."""
    late = [not (item.yielded or on_device(item.adapter)) for item in items]
    for item, cold in zip(items, late, strict=True):
        item.yielded |= cold
    return late


def warm_first(
    cold: Sequence[bool], plan: Callable[[list[int]], list[list[int]]]
) -> list[list[int]]:
    """A batch's passes, the rows flagged `cold` planned apart after the others: [row indices].

    `plan(rows)` plans a subset of the rows (its answer indexes into `rows`). A batch all warm
    or all cold is planned whole, as before (`late_rows` says which rows are cold).
    """
    warm = [row for row, late in enumerate(cold) if not late]
    if len(warm) in (0, len(cold)):
        return plan(list(range(len(cold))))
    rest = [row for row, late in enumerate(cold) if late]
    return [[part[i] for i in rows] for part in (warm, rest) for rows in plan(part)]


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
