"""Which rows of a one-pass batch each stacked site applies to, decided once per batch.

The engine orders a pass's segments by body family (`OnePass.order`: bottleneck wirings,
LoRA, IA3, prefix tuning last), so the rows of each family are one contiguous span of the
batch. Per family, a `Rows`: the span and the rows' rows in the family's stacks. LoRA, IA3
and prefix tuning act on their span only (views: nothing gathered, results written in place);
an adapter of the family without a part at a site reads its never-written row there, which
holds the neutral fill (zero LoRA, unit IA3 scale, a fully masked prefix). Bottlenecks: per
site, the rows of the adapters with a part there: the family's span when that is all of them
or when the wiring is neutral with zero weights (`compute.Wiring.neutral`), else gathered
(`sel`). Sites where no row has a part are skipped. Per prefix site, the longest prefix of
the family's rows and every such row's length.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from app.serving.onepass.bank import Entry, family_of
from app.serving.onepass.compute import wiring_of

BODY = ("lora", "ia3", "prefix")  # the families that act on spans of the batch


@dataclass(frozen=True)
class Rows:
    start: int  # the batch rows [start, stop)
    stop: int
    ids: Any  # their rows in the family's stacks (long tensor)
    sel: Any = None  # instead of the span: gathered batch rows (long tensor)


@dataclass
class Plan:
    size: int  # rows in the batch
    sites: set[tuple]  # ("lora" | "ia3" | "prefix", site) with a part in this batch
    families: dict[Hashable, Rows]
    bottlenecks: dict[str, list[tuple]]  # site -> [(wiring, Rows, activations)]
    prefixes: dict[str, tuple[int, tuple]]  # site -> (longest prefix, lengths of its rows)
    masks: dict[tuple, Any] = field(default_factory=dict)  # prefix masks, shared by sites


def build_plan(entries: Sequence[Entry], sizes: Sequence[int], device: Any) -> Plan:
    members: dict[Hashable, list[tuple[int, int]]] = {}  # family -> [(batch row, its row)]
    parts: dict[tuple, list[int]] = {}  # bottleneck table key -> batch rows with a part
    lengths: dict[str, dict[int, int]] = {}  # prefix site -> batch row -> its length
    acts: list[str] = []
    for entry, size in zip(entries, sizes, strict=True):
        rows = range(len(acts), len(acts) + size)
        acts += [entry.activation] * size
        for name, row in entry.rows.items():
            members.setdefault(name, []).extend((r, row) for r in rows)
        for key, length in entry.parts.items():
            if key[0] == "bn":
                parts.setdefault(key, []).extend(rows)
            elif key[0] == "prefix":
                lengths.setdefault(key[1], {}).update(dict.fromkeys(rows, length))
    sites = {key for entry in entries for key in entry.parts if key[0] in ("lora", "ia3")}
    sites |= {("prefix", site) for site in lengths}
    shared: dict[tuple, Any] = {}
    families = {name: _span(shared, name, pairs, device) for name, pairs in members.items()
                if name in BODY or name[0] == "bn"}  # fmt: skip
    prefixes = {}
    for site, per in lengths.items():
        own = [per.get(r, 0) for r, _ in members["prefix"]]  # every row of the family
        prefixes[site] = (max(own), tuple(own))
    bottlenecks: dict[str, list[tuple]] = {}
    for key, rows in parts.items():
        _, site, wiring = key
        family = family_of(key)
        pairs = dict(members[family])
        chosen = families[family]
        if len(rows) < len(pairs) and not wiring_of(wiring).neutral:
            chosen = _gathered(shared, rows, [pairs[r] for r in rows], device)
        else:
            rows = list(range(chosen.start, chosen.stop))
        names = [acts[r] for r in rows]
        bottlenecks.setdefault(site, []).append((wiring, chosen, _acts(shared, names, device)))
    return Plan(len(acts), sites, families, bottlenecks, prefixes)


def _span(shared: dict, name: Hashable, pairs: list[tuple[int, int]], device: Any) -> Rows:
    start, stop = pairs[0][0], pairs[-1][0] + 1
    if stop - start != len(pairs):
        raise ValueError(f"rows of {name!r} are not contiguous: order segments by family")
    return Rows(start, stop, _tensor(shared, [row for _, row in pairs], device))


def _gathered(shared: dict, rows: list[int], ids: list[int], device: Any) -> Rows:
    sel = _tensor(shared, rows, device)
    return Rows(rows[0], rows[-1] + 1, _tensor(shared, ids, device), sel)


def _tensor(shared: dict, values: list[int], device: Any) -> Any:
    key = ("long", tuple(values))
    if key not in shared:
        shared[key] = torch.tensor(values, dtype=torch.long).to(device)
    return shared[key]


def _acts(shared: dict, names: list[str], device: Any) -> tuple:
    """((first activation, None), (other, rows mask), ...) for rows of these activations."""
    distinct = list(dict.fromkeys(names))
    out = [(distinct[0], None)]
    for name in distinct[1:]:
        key = ("act", name, tuple(names))
        if key not in shared:
            shared[key] = torch.tensor([n == name for n in names]).view(-1, 1, 1).to(device)
        out.append((name, shared[key]))
    return tuple(out)
