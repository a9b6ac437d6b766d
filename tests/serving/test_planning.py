"""app.serving.planning.settle: a request's rows of one adapter come from one adapter version."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.serving.planning import Item, Request, settle


@dataclass(frozen=True)
class Out:
    version: int


def _request(adapters: list[str]) -> Request:
    request = Request(future=None, deadline=0.0, results=[None] * len(adapters), remaining=0)
    request.items = [Item(request, slot, name, [0]) for slot, name in enumerate(adapters)]
    request.remaining = len(adapters)
    return request


CASES = [
    # (adapter per slot, deliveries (slot, version) in order, slots re-run per delivery)
    ("same version", ["a", "a", "a"], [(0, 1), (1, 1), (2, 1)], [[], [], []]),
    (
        "newer later: earlier rows re-run",
        ["a", "a", "a"],
        [(0, 1), (1, 1), (2, 2)],
        [[], [], [0, 1]],
    ),
    ("older than kept: itself re-runs", ["a", "a"], [(0, 2), (1, 1)], [[], [1]]),
    ("other adapters untouched", ["a", "b", "a"], [(0, 1), (1, 5), (2, 2)], [[], [], [0]]),
    ("re-run then settles", ["a", "a"], [(0, 1), (1, 2), (0, 2)], [[], [0], []]),
]


@pytest.mark.parametrize(
    ("adapters", "deliveries", "redo"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_settle(adapters, deliveries, redo):
    request = _request(adapters)
    for (slot, version), expected in zip(deliveries, redo, strict=True):
        again = settle(request.items[slot], Out(version))
        assert [item.slot for item in again] == expected
    # Whatever was re-run is pending again; what is kept agrees per adapter.
    kept = [r for r in request.results if r is not None]
    assert request.remaining == len(adapters) - len(kept)
    for name in set(adapters):
        versions = {
            request.results[i].version
            for i, a in enumerate(adapters)
            if a == name and request.results[i]
        }
        assert len(versions) <= 1
        if versions:
            assert versions == {request.versions[name]}


def test_a_whole_request_completes_on_the_newest_version():
    request = _request(["a"] * 4)
    assert settle(request.items[0], Out(1)) == []
    assert settle(request.items[1], Out(1)) == []
    again = settle(request.items[2], Out(2))
    assert [i.slot for i in again] == [0, 1] and request.remaining == 3
    for item in [*again, request.items[3]]:
        assert settle(item, Out(2)) == []
    assert request.remaining == 0
    assert [r.version for r in request.results] == [2, 2, 2, 2]
