"""What one batch needs from the bank: each row's bank row, and per site who takes part.

Built in Python from the batch's adapters (a handful of small tensors per batch, however many
adapters): the row index of every batch row; the LoRA / IA3 / prefix sites some adapter of
the batch has a part in (rows without a part read the neutral entry there); per bottleneck
site, the rows of each wiring (gathered when they are not the whole batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from app.serving.onepass.bank import Bank, Entry
from app.serving.onepass.compute import wiring_of


@dataclass
class Plan:
    ids: torch.Tensor  # bank row of every batch row
    sites: set[tuple]  # ("lora" | "ia3" | "prefix", site) with a part in this batch
    bottlenecks: dict[str, list[tuple]]  # site -> [(wiring, rows or None, ids, activations)]
    prefixes: dict[str, tuple[int, tuple]]  # site -> (longest prefix, every row's length)
    masks: dict[tuple, Any] = field(default_factory=dict)  # prefix masks, shared by sites


def build_plan(entries: Sequence[Entry], sizes: Sequence[int], bank: Bank, device: Any) -> Plan:
    rows = [entry.row for entry, size in zip(entries, sizes, strict=True) for _ in range(size)]
    ids = torch.tensor(rows, dtype=torch.long).to(device)
    sites: set[tuple] = set()
    members: dict[tuple, list[int]] = {}  # bottleneck table key -> batch rows
    lengths: dict[str, dict[int, int]] = {}  # prefix site -> segment -> its length
    acts = [
        entry.activation for entry, size in zip(entries, sizes, strict=True) for _ in range(size)
    ]
    start = 0
    for index, (entry, size) in enumerate(zip(entries, sizes, strict=True)):
        for key, length in entry.parts.items():
            if key[0] == "bn":
                members.setdefault(key, []).extend(range(start, start + size))
            else:
                sites.add(key)
            if key[0] == "prefix":
                lengths.setdefault(key[1], {})[index] = length
        start += size
    prefixes = {site: (max(per.values()), _per_row(per, sizes)) for site, per in lengths.items()}
    return Plan(ids, sites, _bottlenecks(members, acts, ids, device), prefixes)


def _per_row(per_segment: dict[int, int], sizes: Sequence[int]) -> tuple:
    return tuple(per_segment.get(i, 0) for i, size in enumerate(sizes) for _ in range(size))


def _bottlenecks(members: dict[tuple, list[int]], acts: list[str], ids, device) -> dict:
    """Per site, (wiring, rows or None for all, their bank rows, their activations);
    equal row sets share their index tensors."""
    out: dict[str, list] = {}
    shared: dict[tuple, Any] = {}
    per_site: dict[str, int] = {}
    for _, site, _ in members:
        per_site[site] = per_site.get(site, 0) + 1
    for (_, site, wiring), rows in members.items():
        # One wiring at the site, neutral with zero weights: every row runs through it.
        if len(rows) == len(acts) or (per_site[site] == 1 and wiring_of(wiring).neutral):
            first, member = acts[rows[0]], set(rows)
            names = [acts[r] if r in member else first for r in range(len(acts))]
            sel, sel_ids = None, ids
        else:
            names = [acts[r] for r in rows]
            sel, sel_ids = _shared(shared, ("rows", tuple(rows)), rows, ids, device)
        out.setdefault(site, []).append((wiring, sel, sel_ids, _acts(shared, names, device)))
    return out


def _shared(shared: dict, key: tuple, rows: list[int], ids, device) -> Any:
    if key not in shared:
        sel = torch.tensor(rows, dtype=torch.long).to(device)
        shared[key] = (sel, ids[sel])
    return shared[key]


def _acts(shared: dict, names: list[str], device) -> tuple:
    """((first activation, None), (other, rows mask), ...) for rows of these activations."""
    distinct = list(dict.fromkeys(names))
    out = [(distinct[0], None)]
    for name in distinct[1:]:
        key = ("act", name, tuple(names))
        if key not in shared:
            flags = torch.tensor([n == name for n in names]).view(-1, 1, 1).to(device)
            shared[key] = flags
        out.append((name, shared[key]))
    return tuple(out)
