"""Adapter tensors as data: per location, one row per resident adapter, zero-padded.

A `Stack` holds named tensors of shape (rows, *dims). A row is written when an adapter is
registered (a copy of its tensors, padded to the stack's largest shape: rank, bottleneck size,
prefix length) and reset to the stack's neutral fill when it leaves: an adapter of the family
without a part at this location reads that fill (zero LoRA, unit IA3 scale, ...).

Rows are written only once handed out (`cover`: the fill, the first time): rows [0, ready)
hold values, the rest were never written. A stack may be allocated ahead of its capacity
(`reserve` rows, on the CPU: pages never written take no memory), so that the family grows
into it without a copy. Each growth past it copied every row on the inference thread, with a
fault per new page: 13-55 ms for 27-93 MiniLM bottleneck rows, the cold requests' p99.

`Rows` numbers the rows of one family of stacks (every stack of a family has the same
capacity): the lowest free row first, so a family that shrinks (`compact`) moves few rows.
Capacity grows by half (geometric: a copy per growth past the allocation, amortised) and
shrinks back when a third or less is in use, so the rows written stay within 1.5x (3x just
before a shrink) of the rows in use.
"""

from __future__ import annotations

import heapq
from typing import Any

import torch


def grown(capacity: int) -> int:
    return max(1, -(-capacity * 3 // 2))


class Stack:
    def __init__(
        self, fills: dict[str, float], *, capacity: int, device: Any, dtype: Any,
        reserve: int = 0, ready: int | None = None,
    ) -> None:  # fmt: skip
        self.fills = fills
        self.capacity = capacity
        self.reserve = reserve  # rows allocated at least
        self.ready = capacity if ready is None else ready  # rows [0, ready) were written
        self.device, self.dtype = device, dtype
        self.tensors: dict[str, torch.Tensor] = {}

    @property
    def nbytes(self) -> int:
        """What the written rows hold (rows allocated ahead and never written: nothing)."""
        return sum(t[: self.ready].numel() * t.element_size() for t in self.tensors.values())

    def cover(self, row: int) -> None:
        """Rows up to `row` hold the fill if never written: `row` was handed out."""
        if row >= self.ready:
            for name, tensor in self.tensors.items():
                tensor[self.ready : row + 1].fill_(self.fills[name])
            self.ready = row + 1

    def put(self, row: int, values: dict[str, torch.Tensor]) -> None:
        """Write `values` into `row` (each padded with its fill to the stack's shape). A row
        never written before is written once: the fill goes only where no value does (a
        fill, then a copy over it, wrote each new byte twice: the fills were a fifth of an
        activation's profile, MiniLM bottleneck adapters)."""
        fresh = row >= self.ready
        if fresh:
            self.cover(row - 1)
        for name, value in values.items():
            value = value.to(device=self.device, dtype=self.dtype)
            self._fit(name, tuple(value.shape))
            target = self.tensors[name][row]
            if target.shape == value.shape:  # the common case: no padding to fill
                target.copy_(value)
                continue
            target.fill_(self.fills[name])
            target[tuple(slice(0, n) for n in value.shape)].copy_(value)
        if fresh:
            for name in self.tensors.keys() - values.keys():
                self.tensors[name][row].fill_(self.fills[name])
            self.ready = row + 1

    def clear(self, row: int) -> None:
        for name, tensor in self.tensors.items():
            tensor[row].fill_(self.fills[name])

    def resize(self, capacity: int, moves: dict[int, int] | None = None) -> None:
        """`capacity` rows, the first min(old, new) kept; `moves` (old row -> new row) copied
        first, when shrinking. Growing within the allocation copies nothing; shrinking
        copies the rows kept into a new allocation (the old one's written pages freed)."""
        for tensor in self.tensors.values():
            for old, new in (moves or {}).items():
                tensor[new].copy_(tensor[old])
        self.ready = min(self.ready, capacity)  # rows past a shrunk capacity: moved or free
        for name, tensor in list(self.tensors.items()):
            if capacity < self.capacity or capacity > tensor.shape[0]:
                shape = (self._allocated(capacity), *tensor.shape[1:])
                self.tensors[name] = self._resized(name, tensor, shape)
        self.capacity = capacity

    def _allocated(self, capacity: int) -> int:
        return max(capacity, self.reserve)

    def _fit(self, name: str, dims: tuple[int, ...]) -> None:
        old = self.tensors.get(name)
        if old is None:
            shape = (self._allocated(self.capacity), *dims)
            self.tensors[name] = torch.empty(shape, device=self.device, dtype=self.dtype)
            self.tensors[name][: self.ready].fill_(self.fills[name])
            return
        shape = (old.shape[0], *(max(a, b) for a, b in zip(old.shape[1:], dims, strict=True)))
        if shape != tuple(old.shape):
            self.tensors[name] = self._resized(name, old, shape)

    def _resized(self, name: str, old: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The written rows of `old` copied into a tensor of `shape`, their padding filled:
        each byte written once, rows never written left so (a stack of hundreds of resident
        adapters is hundreds of MB: a fill of the whole, then a copy over most of it, doubled
        what a growth cost)."""
        new = torch.empty(shape, device=self.device, dtype=self.dtype)
        rows = self.ready
        new[(slice(0, rows), *(slice(0, n) for n in old.shape[1:]))].copy_(old[:rows])
        for dim, n in enumerate(old.shape[1:], start=1):  # padding past `old`, each dimension
            if n < shape[dim]:
                new[(slice(0, rows),) + (slice(None),) * (dim - 1) + (slice(n, None),)].fill_(
                    self.fills[name]
                )
        return new


class Rows:
    """Row numbers of one family of stacks."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self._free = list(range(capacity))
        self.used = 0
        self.top = 0  # rows [0, top) were handed out since the last shrink (free ones too)

    def take(self) -> tuple[int, bool]:
        """The lowest free row, and whether the capacity grew to make one."""
        grew = False
        if not self._free:
            old, self.capacity = self.capacity, grown(self.capacity)
            self._free = list(range(old, self.capacity))
            grew = True
        self.used += 1
        row = heapq.heappop(self._free)
        self.top = max(self.top, row + 1)
        return row, grew

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
        self.top = min(self.top, capacity)
        return moves
