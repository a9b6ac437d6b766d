"""Batch planning (app.serving.planning), table-driven: collect, grouping, dispatch, split."""

from __future__ import annotations

import math
import random
from collections import deque

import pytest

from app.serving.costs import PassCost
from app.serving.planning import (
    Item,
    Request,
    collect,
    dispatch_delay,
    group_segments,
    plan_batch,
    plan_passes,
    split_by_length,
)

NOW = 100.0


def _request(*, deadline: float = NOW + 10, done: bool = False) -> Request:
    return Request(future=None, deadline=deadline, results=[], remaining=0, done=done)


def _queue(spec: list[tuple[str, int, str]]) -> deque[Item]:
    """spec: (adapter, token count, state) with state 'ok' | 'late' | 'done'."""
    items = deque()
    for slot, (adapter, tokens, state) in enumerate(spec):
        request = _request(deadline=NOW - 1 if state == "late" else NOW + 10, done=state == "done")
        items.append(Item(request, slot, adapter, list(range(tokens)), enqueued=NOW - 1))
    return items


COLLECT_CASES = [
    # (name, queue spec, max size, max tokens, expected batch slots, expected expired, left)
    ("empty", [], 4, 100, [], [], 0),
    ("fits all", [("a", 5, "ok"), ("b", 5, "ok")], 4, 100, [0, 1], [], 0),
    ("size cap", [("a", 2, "ok")] * 5, 3, 100, [0, 1, 2], [], 2),
    (
        "token cap counts padding",
        [("a", 10, "ok"), ("a", 2, "ok"), ("a", 30, "ok")],
        8,
        40,
        [0, 1],
        [],
        1,
    ),
    ("first item always taken", [("a", 50, "ok"), ("a", 1, "ok")], 8, 40, [0], [], 1),
    (
        "late items expire",
        [("a", 3, "late"), ("b", 3, "ok"), ("c", 3, "late")],
        8,
        100,
        [1],
        [0, 2],
        0,
    ),
    ("finished requests expire", [("a", 3, "done"), ("b", 3, "ok")], 8, 100, [1], [0], 0),
    (
        "expired do not use the size cap",
        [("a", 1, "late")] * 3 + [("b", 1, "ok")] * 2,
        1,
        100,
        [3],
        [0, 1, 2],
        1,
    ),
    ("fifo order kept", [("b", 1, "ok"), ("a", 1, "ok"), ("b", 1, "ok")], 8, 100, [0, 1, 2], [], 0),
]


@pytest.mark.parametrize(
    ("spec", "size", "tokens", "batch", "expired", "left"),
    [case[1:] for case in COLLECT_CASES],
    ids=[case[0] for case in COLLECT_CASES],
)
def test_collect(spec, size, tokens, batch, expired, left):
    queue = _queue(spec)
    got_batch, got_expired = collect(queue, now=NOW, max_batch_size=size, max_batch_tokens=tokens)
    assert [item.slot for item in got_batch] == batch
    assert [item.slot for item in got_expired] == expired
    assert len(queue) == left


METHOD = {"s1": "seq_bn", "s2": "seq_bn", "l1": "lora", "p1": "prefix"}
KEYED_CASES = [
    # (name, queue spec, max size, max tokens, expected batch slots, left)
    ("one key: the plain size cap", [("s1", 2, "ok")] * 5, 3, 100, [0, 1, 2], 2),
    ("two keys: a full pass each", [("s1", 2, "ok"), ("l1", 2, "ok")] * 4, 3, 100,
     [0, 1, 2, 3, 4, 5], 2),
    ("adapters of one key share its cap", [("s1", 2, "ok"), ("s2", 2, "ok")] * 2, 3, 100,
     [0, 1, 2], 1),
    ("token cap per key", [("s1", 20, "ok"), ("l1", 20, "ok"), ("s1", 20, "ok")], 8, 40,
     [0, 1, 2], 0),
    ("stops at the first that does not fit (fifo)",
     [("s1", 2, "ok"), ("s1", 2, "ok"), ("l1", 2, "ok")], 1, 100, [0], 2),
    ("unknown adapters count as one key", [("x", 2, "ok"), ("y", 2, "ok")], 1, 100, [0], 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "size", "tokens", "batch", "left"),
    [case[1:] for case in KEYED_CASES],
    ids=[case[0] for case in KEYED_CASES],
)
def test_collect_caps_each_body_pass(spec, size, tokens, batch, left):
    queue = _queue(spec)
    got, _ = collect(queue, now=NOW, max_batch_size=size, max_batch_tokens=tokens,
                     key=METHOD.get)  # fmt: skip
    assert [item.slot for item in got] == batch
    assert len(queue) == left


def test_plan_batch_groups_by_key_then_cuts_by_length():
    cost = PassCost.from_overhead(4)
    keys = ["seq_bn", "lora", "seq_bn", "lora", "seq_bn", "prefix"]
    lengths = [5, 5, 60, 6, 5, 5]
    passes = plan_batch(lengths, keys, cost)
    assert sorted(i for p in passes for i in p) == list(range(6))
    assert all(len({keys[i] for i in p}) == 1 for p in passes)  # never two keys in a pass
    seq = [p for p in passes if keys[p[0]] == "seq_bn"]
    assert seq == [[0, 4], [2]]  # cut by length inside the group, as plan_passes does
    assert [keys[p[0]] for p in passes] == ["seq_bn", "seq_bn", "lora", "prefix"]
    # with one key it is exactly plan_passes
    assert plan_batch(lengths, ["k"] * 6, cost) == plan_passes(lengths, cost)


GROUP_CASES = [
    ("empty", [], []),
    ("one adapter", ["a", "a", "a"], [("a", [0, 1, 2])]),
    ("contiguous", ["a", "a", "b"], [("a", [0, 1]), ("b", [2])]),
    ("interleaved", ["a", "b", "a", "c", "b"], [("a", [0, 2]), ("b", [1, 4]), ("c", [3])]),
    ("first appearance order", ["z", "a", "z"], [("z", [0, 2]), ("a", [1])]),
    ("all distinct", ["c", "b", "a"], [("c", [0]), ("b", [1]), ("a", [2])]),
]


@pytest.mark.parametrize(
    ("adapters", "expected"), [c[1:] for c in GROUP_CASES], ids=[c[0] for c in GROUP_CASES]
)
def test_group_segments(adapters, expected):
    segments = group_segments(adapters)
    assert segments == expected
    # Every row exactly once.
    assert sorted(i for _, rows in segments for i in rows) == list(range(len(adapters)))


DELAY_CASES = [
    # (name, queued, oldest age, max batch, max wait, expected (last batch), delay)
    ("nothing queued", 0, 0.0, 8, 0.005, 4, math.inf),
    ("lone client never waits", 1, 0.0, 8, 0.005, 1, 0.0),
    ("full batch goes now", 8, 0.0, 8, 0.005, 32, 0.0),
    ("as many as last time", 4, 0.0, 8, 0.005, 4, 0.0),
    ("fewer than last time waits", 2, 0.001, 8, 0.005, 4, 0.004),
    ("waited long enough", 2, 0.006, 8, 0.005, 4, 0.0),
    ("zero wait setting", 1, 0.0, 8, 0.0, 8, 0.0),
    ("expected capped by max batch", 8, 0.0, 8, 0.005, 100, 0.0),
]


@pytest.mark.parametrize(
    ("queued", "age", "size", "wait", "expected", "delay"),
    [c[1:] for c in DELAY_CASES],
    ids=[c[0] for c in DELAY_CASES],
)
def test_dispatch_delay(queued, age, size, wait, expected, delay):
    got = dispatch_delay(
        queued=queued, oldest_age=age, max_batch_size=size, max_wait=wait, expected=expected
    )
    assert got == pytest.approx(delay)


SPLIT_CASES = [
    # (name, lengths, overhead, expected passes as lists of row indices)
    ("empty", [], 32, []),
    ("one row", [7], 32, [[0]]),
    ("equal lengths never split", [9, 9, 9, 9], 0, [[0, 1, 2, 3]]),
    ("short and long apart", [10] * 4 + [60] * 4, 32, [[0, 1, 2, 3], [4, 5, 6, 7]]),
    ("splitting does not pay", [10] * 4 + [60] * 4, 1000, [list(range(8))]),
    ("shortest first, sorted", [50, 5, 49, 6], 10, [[1, 3], [2, 0]]),
    ("free passes: one per length", [3, 1, 2], 0, [[1], [2], [0]]),
    ("one long outlier", [8] * 30 + [120], 64, [list(range(30)), [30]]),
]


@pytest.mark.parametrize(
    ("lengths", "overhead", "expected"),
    [c[1:] for c in SPLIT_CASES],
    ids=[c[0] for c in SPLIT_CASES],
)
def test_split_by_length(lengths, overhead, expected):
    assert split_by_length(lengths, overhead=overhead) == expected


def _cost(passes, lengths, overhead):
    return sum(len(p) * max(lengths[i] for i in p) + overhead for p in passes)


def _brute_force(lengths, overhead):
    """The cheapest split of the length-sorted rows into contiguous passes, by enumeration."""
    ordered = sorted(lengths)
    best = None
    for mask in range(1 << max(len(ordered) - 1, 0)):
        passes, start = [], 0
        for k in range(1, len(ordered)):
            if mask >> (k - 1) & 1:
                passes.append(ordered[start:k])
                start = k
        passes.append(ordered[start:])
        cost = sum(len(p) * max(p) + overhead for p in passes)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_split_by_length_is_optimal_and_complete(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 10))]
    overhead = rng.choice([0, 8, 32, 200])
    passes = split_by_length(lengths, overhead=overhead)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    flat = [lengths[i] for p in passes for i in p]
    assert flat == sorted(flat)
    assert _cost(passes, lengths, overhead) == _brute_force(lengths, overhead)
