"""Fair shares of the batch queue between tenants (planning.collect with a FairShare)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

import pytest

from app.serving.fairness import FairShare, refund
from app.serving.passes import run_passes
from app.serving.planning import Item, Request, collect

NOW = 100.0


def _queue(spec: list[tuple[str, int]], *, late: frozenset[int] = frozenset()) -> deque[Item]:
    """spec: (tenant, tokens) per row, one request per row, in arrival order."""
    items = deque()
    for slot, (tenant, tokens) in enumerate(spec):
        deadline = NOW - 1 if slot in late else NOW + 10
        request = Request(future=None, deadline=deadline, results=[], remaining=1, tenant=tenant)
        items.append(Item(request, slot, "a", list(range(tokens)), enqueued=NOW - 1 + slot / 1e3))
    return items


def _take(queue, fair, size=4, tokens=10_000):
    batch, expired = collect(
        queue, now=NOW, max_batch_size=size, max_batch_tokens=tokens, fair=fair
    )
    return [item.slot for item in batch], [item.slot for item in expired]


FAIR_CASES = [
    # (name, queue spec, batch size, first batch's slots)
    ("one tenant is plain FIFO", [("a", 3)] * 6, 4, [0, 1, 2, 3]),
    ("a light key behind a flood is in the next batch", [("f", 3)] * 40 + [("l", 3)], 4, None),
    ("two backlogs alternate", [("a", 3)] * 4 + [("b", 3)] * 4, 4, [0, 4, 1, 5]),
    ("tokens, not rows, are shared", [("a", 9)] * 3 + [("b", 3)] * 6, 5, [0, 3, 4, 5, 1]),
]


@pytest.mark.parametrize(("name", "spec", "size", "expected"), FAIR_CASES)
def test_fair_collect(name, spec, size, expected):
    queue = _queue(spec)
    slots, _ = _take(queue, FairShare(), size=size)
    if expected is None:  # the light row (the last) is in the first batch
        assert len(spec) - 1 in slots and len(slots) == size
    else:
        assert slots == expected
    assert len(queue) == len(spec) - len(slots)
    left = [item.slot for item in queue]
    assert left == sorted(left)  # the rest stays in arrival order


def test_a_flood_cannot_starve_a_light_key_across_batches():
    """Each batch serves the light key's next row while the flood's backlog is huge."""
    fair = FairShare()
    queue = _queue([("flood", 5)] * 200)
    for batch_index in range(10):
        light = _queue([("light", 5)])[0]
        light.slot = 1000 + batch_index
        queue.append(light)
        slots, _ = _take(queue, fair, size=8)
        assert light.slot in slots
    assert len(queue) == 200 - 10 * 7


def test_shares_even_out_over_time():
    """Two backlogged tenants get equal tokens over many batches (within one row)."""
    fair = FairShare()
    queue = _queue([("a", 4)] * 100 + [("b", 7)] * 100)
    served = {"a": 0, "b": 0}
    for _ in range(12):
        batch, _ = collect(queue, now=NOW, max_batch_size=6, max_batch_tokens=10_000, fair=fair)
        for item in batch:
            served[item.request.tenant] += len(item.ids)
    assert abs(served["a"] - served["b"]) <= 7


def test_an_idle_tenant_banks_no_credit():
    """A tenant back after idling starts level with the others, not with a big lead."""
    fair = FairShare()
    queue = _queue([("a", 5)] * 30 + [("b", 5)] * 30)
    for _ in range(3):
        _take(queue, fair, size=4)
    queue = deque(item for item in queue if item.request.tenant == "a")  # b went idle
    _take(queue, fair, size=4)
    back = _queue([("b", 5)] * 10)
    for item in back:
        item.slot += 100
    queue.extend(back)  # b is back: it alternates with a, no burst of banked credit
    batch, _ = collect(queue, now=NOW, max_batch_size=4, max_batch_tokens=10_000, fair=fair)
    assert [item.request.tenant for item in batch].count("b") == 2


def test_expired_rows_of_every_tenant_are_dropped():
    queue = _queue([("a", 3), ("a", 3), ("b", 3), ("b", 3)], late=frozenset({1, 2}))
    slots, expired = _take(queue, FairShare(), size=8)
    assert sorted(slots) == [0, 3] and sorted(expired) == [1, 2] and not queue


def test_a_tenant_whose_next_row_does_not_fit_waits_in_order():
    """The token cap closes a tenant for this batch without reordering its rows."""
    queue = _queue([("a", 2), ("b", 2), ("a", 50), ("a", 2), ("b", 2)])
    slots, _ = _take(queue, FairShare(), size=8, tokens=20)
    assert slots == [0, 1, 4]
    assert [item.slot for item in queue] == [2, 3]


def _requests(spec: list[tuple[str, int, int]], first: int = 0) -> deque[Item]:
    """spec: (tenant, rows, tokens per row) per request, in arrival order; slots count on."""
    items, slot = deque(), first
    for tenant, rows, tokens in spec:
        request = Request(future=None, deadline=NOW + 10, results=[], remaining=rows, tenant=tenant)
        for _ in range(rows):
            items.append(Item(request, slot, "a", list(range(tokens)), enqueued=NOW - 1))
            slot += 1
    return items


def test_a_short_request_rides_in_the_next_batch_behind_big_ones_of_its_tenant():
    """Issue 28's probe: two requests of 256 long texts, then one short text, one tenant.
    Before, the short one waited for all 512 rows (16 batches of 32)."""
    queue = _requests([(None, 256, 128), (None, 256, 128), (None, 1, 4)])
    slots, _ = _take(queue, FairShare(), size=32, tokens=16384)
    assert 512 in slots and len(slots) == 32
    big = [s for s in slots if s != 512]  # the big two share the rest, each in its order
    assert [s for s in big if s < 256] == list(range(16)) and len(big) == 31
    left = [item.slot for item in queue]
    assert left == sorted(left)


def test_big_requests_of_one_tenant_share_batches_and_finish():
    """A short request arriving before each batch goes first; the big one is never starved."""
    fair, queue = FairShare(), _requests([("a", 40, 8)])
    for k in range(10):
        queue.extend(_requests([("a", 1, 8)], first=100 + k))
        slots, _ = _take(queue, fair, size=4)
        assert 100 + k in slots and len(slots) == 4
    assert len(queue) == 40 - 30


def test_tenants_stay_fair_when_one_sends_big_and_small_requests():
    """Tenant a: a big request and a short one; tenant b: a flood of one-row requests. Each
    tenant gets half the batch, and a's short request is in it."""
    queue = _requests([("a", 64, 8)] + [("b", 1, 8)] * 64 + [("a", 1, 8)])
    slots, _ = _take(queue, FairShare(), size=8)
    tenants = [("a" if s < 64 or s == 128 else "b") for s in slots]
    assert 128 in slots and tenants.count("a") == tenants.count("b") == 4


def test_without_a_fair_share_the_queue_is_fifo():
    queue = _queue([("f", 3)] * 40 + [("l", 3)])
    slots, _ = _take(queue, None, size=4)
    assert slots == [0, 1, 2, 3]


def test_rows_given_back_unrun_are_not_charged():
    """`refund` undoes what `take_fair` charged: taking the same rows again gives the same batch."""
    fair, queue = FairShare(), _requests([("a", 6, 8), ("b", 6, 8), ("a", 1, 4)])
    batch, _ = collect(queue, now=NOW, max_batch_size=4, max_batch_tokens=10_000, fair=fair)
    levels = {id(i.request): i.request.served for i in batch}
    refund(batch, fair)
    queue.extendleft(reversed(batch))
    again, _ = collect(queue, now=NOW, max_batch_size=4, max_batch_tokens=10_000, fair=fair)
    assert [i.slot for i in again] == [i.slot for i in batch]
    assert {id(i.request): i.request.served for i in again} == levels


def _replan(passes, pass_s, arrive_after):
    """run_passes over `passes` of `_Row`s: (numbers run in order, numbers given back)."""
    ran = []

    async def run(items):
        await asyncio.sleep(pass_s)
        ran.extend(items)

    rest = asyncio.run(run_passes(passes, run, lambda: len(ran) >= arrive_after))
    return [r.n for r in ran], [r.n for r in rest]


@dataclass(eq=False)
class _Row:
    n: int
    sent_back: bool = False


def test_a_batch_cut_into_slow_passes_stops_for_a_newcomer():
    """run_passes: after a pass, a request that arrived and a rest of over REPLAN_S give the
    rest back; quick passes, or no newcomer, run the whole batch."""

    def scenario(pass_s, arrive_after):
        return _replan([[_Row(k)] for k in range(5)], pass_s, arrive_after)

    assert scenario(0.06, 1) == ([0], [1, 2, 3, 4])
    assert scenario(0.06, 99) == ([0, 1, 2, 3, 4], [])
    assert scenario(0.001, 1) == ([0, 1, 2, 3, 4], [])


def test_a_row_goes_back_once_at_most():
    """Rows given back are marked; a batch holding any runs to its end (the longest texts,
    planned last, would otherwise go back at every batch of a busy queue); the next may stop."""
    rows = [_Row(k) for k in range(4)]
    assert _replan([[r] for r in rows], 0.06, 1) == ([0], [1, 2, 3])
    assert all(r.sent_back for r in rows[1:]) and not rows[0].sent_back
    newcomers = [_Row(k) for k in (10, 11, 12)]
    again = [[newcomers[0]], [newcomers[1]], [rows[2], newcomers[2]], [rows[1]], [rows[3]]]
    assert _replan(again, 0.06, 1) == ([10, 11, 2, 12, 1, 3], [])  # in its planned order
    assert _replan([[_Row(k)] for k in range(3)], 0.06, 1) == ([0], [1, 2])
