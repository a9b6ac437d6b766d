"""Operators (and, on a GPU, kernel launches) of one call, counted with torch.profiler.

Deterministic where wall time is not: the benches and tests count what a forward dispatches.
`aten` is every `aten::` operator event, nested ones included (as the issue-29 table counts);
`kernels` the device kernels launched (0 on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Counts:
    aten: int
    kernels: int


def count_ops(fn: Callable[[], Any], *, cuda: bool = False) -> Counts:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    aten = sum(1 for e in events if e.name.startswith("aten::"))
    kernels = sum(1 for e in events if str(e.device_type).endswith("CUDA"))
    return Counts(aten, kernels)
