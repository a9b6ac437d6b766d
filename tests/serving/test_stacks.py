"""Stacks allocated ahead (the CPU's `RESERVE`) and stacks grown row by row hold the same rows.

Rows are written only once handed out (`Stack.cover`), so a stack allocated ahead grows into
its allocation without a copy, and what it counts (`nbytes`) is the rows written, not the
allocation. The same random sequence of puts, clears, growths and shrinks runs on a stack with
a reserve and one without; every row handed out must read the same in both and equal what was
put (padded with the fill) or the fill. A put into a row never written writes it once: the
fill only where no value goes (the bank covers a row only in the stacks where it puts nothing).
"""

from __future__ import annotations

import random

import torch

from app.serving.onepass.bank import PARKED, PARKED_CPU, RESERVE, Bank
from app.serving.onepass.stacks import Rows, Stack

FILLS = {"a": 0.0, "m": 1.0}


def _family(reserve: int) -> tuple[Rows, Stack]:
    rows = Rows()
    stack = Stack(FILLS, capacity=rows.capacity, device="cpu", dtype=torch.float32,
                  reserve=reserve, ready=rows.top)  # fmt: skip
    return rows, stack


def _expected(value: dict[str, torch.Tensor] | None, shapes: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, shape in shapes.items():
        row = torch.full(shape, FILLS[name])
        if value is not None and name in value:
            row[tuple(slice(0, n) for n in value[name].shape)] = value[name]
        out[name] = row
    return out


def test_a_reserved_stack_and_a_grown_one_hold_the_same_rows(monkeypatch):
    empty = torch.empty  # new stack memory reads NaN, not zeros or a freed stack's fill
    monkeypatch.setattr(torch, "empty", lambda *a, **k: empty(*a, **k).fill_(float("nan")))
    rng = random.Random(7)
    families = {reserve: _family(reserve) for reserve in (0, 64)}
    held: dict[int, dict | None] = {}  # row -> what its holder put (None: nothing)
    shrinks = 0
    for _ in range(400):
        if held and (rng.random() < 0.45 or len(held) > 40):  # one leaves (and maybe a shrink)
            row = rng.choice(sorted(held))
            del held[row]
            moves = {}
            for rows, stack in families.values():
                stack.clear(row)
                rows.give(row)
                capacity = rows.shrink_to()
                if capacity is not None:
                    moves = rows.compact(capacity, sorted(held))
                    stack.resize(capacity, moves)
                    shrinks += 1
            held = {moves.get(r, r): v for r, v in held.items()}
            continue
        width = rng.choice((2, 3, 5))  # other widths pad, or widen, the stack
        value = {"a": torch.randn(width, 4)}
        if rng.random() < 0.5:
            value["m"] = torch.randn(1, 6)
        covered = rng.random() < 0.5  # the bank covers a row only where it puts nothing
        taken = set()
        for rows, stack in families.values():
            row, grew = rows.take()
            if grew:
                stack.resize(rows.capacity)
            if covered:
                stack.cover(row)
            stack.put(row, value)
            shapes = {n: tuple(t.shape[1:]) for n, t in stack.tensors.items()}
            for name, want in _expected(value, shapes).items():  # read back at once
                assert torch.equal(stack.tensors[name][row], want), (row, name)
            taken.add(row)
        (row,) = taken  # both number rows alike
        held[row] = value
    shapes = {n: tuple(t.shape[1:]) for n, t in families[0][1].tensors.items()}
    for reserve, (rows, stack) in families.items():
        assert stack.ready == rows.top and max(held, default=-1) < stack.ready, reserve
        for row in range(stack.ready):
            want = _expected(held.get(row), shapes)
            for name, tensor in stack.tensors.items():
                assert tuple(tensor.shape[1:]) == shapes[name]
                assert torch.equal(tensor[row], want[name]), (reserve, row, name)
        written = sum(t[: stack.ready].numel() * t.element_size() for t in stack.tensors.values())
        assert stack.nbytes == written
    assert shrinks >= 2  # both compacted, several times (moved rows included above)
    assert families[64][1].tensors["a"].shape[0] == 64  # the allocation, never grown past
    assert families[0][1].tensors["a"].shape[0] == families[0][0].capacity


def test_growing_within_the_reserve_copies_nothing():
    rows, stack = _family(reserve=64)
    stack.put(rows.take()[0], {"a": torch.ones(3, 4)})
    pointer = stack.tensors["a"].data_ptr()
    for _ in range(30):
        row, grew = rows.take()
        if grew:
            stack.resize(rows.capacity)
        stack.cover(row)
        stack.put(row, {"a": torch.full((3, 4), float(row))})
    assert rows.capacity == 41  # grown 8 times (1, 2, 3, 5, ... 41), none past the 64
    assert stack.tensors["a"].data_ptr() == pointer  # the same allocation: no growth copy
    assert stack.nbytes == 31 * 3 * 4 * 4  # the rows written, not the 64 allocated


def test_the_bank_reserves_rows_on_the_cpu_only():
    class _Model:
        base_model = torch.nn.Module()

    cpu = Bank(_Model(), device="cpu", dtype=torch.float32)
    other = Bank(_Model(), device="meta", dtype=torch.float32)
    assert (cpu.reserve, cpu.keep) == (RESERVE, PARKED_CPU) and 32 + PARKED_CPU <= RESERVE
    assert (other.reserve, other.keep) == (0, PARKED)
