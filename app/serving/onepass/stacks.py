"""Adapter tensors as data: per location, one row per resident adapter, zero-padded.

A `Stack` holds named tensors of shape (capacity, *dims). A row is written when an adapter is
registered (a copy of its tensors, padded to the stack's largest shape: rank, bottleneck size,
prefix length) and reset to the stack's neutral fill when it leaves. Row 0 stays neutral: it
is what a row without an adapter part at a location reads.
"""

from __future__ import annotations

from typing import Any

import torch


class Stack:
    def __init__(self, fills: dict[str, float], *, capacity: int, device: Any, dtype: Any):
        self.fills = fills
        self.capacity = capacity
        self.device, self.dtype = device, dtype
        self.tensors: dict[str, torch.Tensor] = {}

    def put(self, row: int, values: dict[str, torch.Tensor]) -> None:
        """Write `values` into `row` (each padded with its fill to the stack's shape)."""
        for name, value in values.items():
            value = value.to(device=self.device, dtype=self.dtype)
            self._fit(name, tuple(value.shape))
            target = self.tensors[name][row]
            target.fill_(self.fills[name])
            target[tuple(slice(0, n) for n in value.shape)].copy_(value)

    def clear(self, row: int) -> None:
        for name, tensor in self.tensors.items():
            tensor[row].fill_(self.fills[name])

    def grow(self, capacity: int) -> None:
        self.capacity = capacity
        for name, tensor in list(self.tensors.items()):
            self.tensors[name] = self._resized(name, tensor, (capacity, *tensor.shape[1:]))

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
        new = torch.full(shape, self.fills[name], device=self.device, dtype=self.dtype)
        new[tuple(slice(0, n) for n in old.shape)].copy_(old)
        return new


class Rows:
    """Row numbers of a bank: 0 is the neutral row, never given out."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._free = list(range(capacity - 1, 0, -1))

    def take(self) -> tuple[int, bool]:
        """A free row, and whether the capacity doubled to make one."""
        grown = False
        if not self._free:
            self._free = list(range(2 * self.capacity - 1, self.capacity - 1, -1))
            self.capacity *= 2
            grown = True
        return self._free.pop(), grown

    def give(self, row: int) -> None:
        self._free.append(row)
