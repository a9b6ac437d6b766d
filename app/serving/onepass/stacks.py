"""Adapter tensors as data: per location, one row per resident adapter, zero-padded.

A `Stack` holds named tensors of shape (capacity, *dims). A row is written when an adapter is
registered (a copy of its tensors, padded to the stack's largest shape: rank, bottleneck size,
prefix length) and reset to the stack's neutral fill when it leaves: an adapter of the family
without a part at this location reads that fill (zero LoRA, unit IA3 scale, ...).

`Rows` numbers the rows of one family of stacks (every stack of a family has the same
capacity): the lowest free row first, so a family that shrinks (`compact`) moves few rows.
Capacity grows by half (geometric: a copy per growth, amortised) and shrinks back when a
third or less is in use, so the rows held stay within 1.5x (3x just before a shrink) of the
rows in use.
"""

from __future__ import annotations

import heapq
from typing import Any

import torch


def grown(capacity: int) -> int:
    return max(1, -(-capacity * 3 // 2))


class Stack:
    def __init__(self, fills: dict[str, float], *, capacity: int, device: Any, dtype: Any):
        self.fills = fills
        self.capacity = capacity
        self.device, self.dtype = device, dtype
        self.tensors: dict[str, torch.Tensor] = {}

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def put(self, row: int, values: dict[str, torch.Tensor]) -> None:
        """Write `values` into `row` (each padded with its fill to the stack's shape)."""
        for name, value in values.items():
            value = value.to(device=self.device, dtype=self.dtype)
            self._fit(name, tuple(value.shape))
            target = self.tensors[name][row]
            if target.shape == value.shape:  # the common case: no padding to fill
                target.copy_(value)
                continue
            target.fill_(self.fills[name])
            target[tuple(slice(0, n) for n in value.shape)].copy_(value)

    def clear(self, row: int) -> None:
        for name, tensor in self.tensors.items():
            tensor[row].fill_(self.fills[name])

    def resize(self, capacity: int, moves: dict[int, int] | None = None) -> None:
        """`capacity` rows, the first min(old, new) kept; `moves` (old row -> new row) copied
        first, when shrinking."""
        for name, tensor in list(self.tensors.items()):
            for old, new in (moves or {}).items():
                tensor[new].copy_(tensor[old])
            if capacity < self.capacity:
                self.tensors[name] = tensor[:capacity].clone()  # frees the rest
            else:
                self.tensors[name] = self._resized(name, tensor, (capacity, *tensor.shape[1:]))
        self.capacity = capacity

    def _fit(self, name: str, dims: tuple[int, ...]) -> None:
        old = self.tensors.get(name)
        if old is None:
            shape = (self.capacity, *dims)
            self.tensors[name] = torch.full(
                shape, self.fills[name], device=self.device, dtype=self.dtype
            )
            return
        shape = (self.capacity, *(max(a, b) for a, b in zip(old.shape[1:], dims, strict=True)))
        if shape != tuple(old.shape):
            self.tensors[name] = self._resized(name, old, shape)

    def _resized(self, name: str, old: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """`old` copied into a tensor of `shape`, the rest filled: each byte written once (a
        stack of hundreds of resident adapters is hundreds of MB: a fill of the whole, then
        a copy over most of it, doubled what a growth cost)."""
        new = torch.empty(shape, device=self.device, dtype=self.dtype)
        new[tuple(slice(0, n) for n in old.shape)].copy_(old)
        for dim, n in enumerate(old.shape):  # the slabs past `old` along each dimension
            if n < shape[dim]:
                new[(slice(None),) * dim + (slice(n, None),)].fill_(self.fills[name])
        return new


class Rows:
    """Row numbers of one family of stacks."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._free = list(range(capacity))
        self.used = 0

    def take(self) -> tuple[int, bool]:
        """The lowest free row, and whether the capacity grew to make one."""
        grew = False
        if not self._free:
            old, self.capacity = self.capacity, grown(self.capacity)
            self._free = list(range(old, self.capacity))
            grew = True
        self.used += 1
        return heapq.heappop(self._free), grew

    def give(self, row: int) -> None:
        heapq.heappush(self._free, row)
        self.used -= 1

    def shrink_to(self) -> int | None:
        """The capacity to shrink to when a third or less is in use, else None."""
        if self.used * 3 > self.capacity:
            return None
        target = grown(self.used)
        return target if target < self.capacity else None

    def compact(self, capacity: int, live: list[int]) -> dict[int, int]:
        """Shrink to `capacity`: live rows at or past it move to free rows below it;
        -> {old row: new row}."""
        low = sorted(r for r in self._free if r < capacity)
        moves = {}
        for row in sorted(live):
            if row >= capacity:
                moves[row] = low.pop(0)
        self._free = low
        heapq.heapify(self._free)
        self.capacity = capacity
        return moves
