"""The resident adapters' tensors, stacked per location (`stacks.Stack`), one row each.

`Bank.ensure(module)` copies an adapter's tensors out of the library's modules (whichever way
they got there: `load_adapter` or a slot pointed at them) into a row of every stack it has a
part in; `Bank.drop(module)` resets that row. The engine drops a module whenever the tensors
behind its name change (slot rebind, unload), so a row never outlives what it copied. A slot
handed to another adapter while its occupant stays resident `park`s the occupant's rows under
its own module name (the last `Bank.keep`), and binding it again `unpark`s them: no copy.

Rows are numbered per *family* (`family_of`: LoRA, IA3, prefix tuning, a bottleneck wiring, a
head wiring): an adapter holds a row only in the stacks of its own families, so a LoRA
adapter costs nothing in the bottleneck stacks. A family whose rows are a third used or less
is compacted (rows moved down, the stacks cut); an empty family frees its stacks. `nbytes` is
what every stack's written rows hold (free ones included; on the CPU, stacks are allocated
`RESERVE` rows ahead, never written): the adapter cache counts it in its byte budget.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from adapters.methods.bottleneck import BottleneckLayer
from adapters.methods.lora import IA3, LoRALinear
from adapters.methods.modeling import ParallelAdapter
from adapters.methods.prefix_tuning import PrefixTuningLayer
from torch import nn

from app.serving.onepass.heads import head_fills, head_parts
from app.serving.onepass.stacks import Rows, Stack
from app.serving.onepass.support import bn_activation, bn_wiring

FILLS = {
    "lora": {"a": 0.0, "b": 0.0},
    "ia3": {"m": 1.0},
    "bn": dict.fromkeys(("wd", "bd", "wu", "bu", "s", "lnb_w", "lnb_b", "lna_w", "lna_b"), 0.0),
    "prefix": {"k": 0.0, "v": 0.0},
}


PARKED = 64  # adapters out of a slot whose rows are kept (`Bank.park`)
# Rows each stack is allocated with on the CPU, where rows never written take no memory, and
# the adapters parked there: the default 32 slots + PARKED_CPU fit it, so no growth copies.
RESERVE, PARKED_CPU = 256, 192
BODY_ORDER = {"lora": 1, "ia3": 2, "prefix": 3}  # bottleneck wirings: 0


@dataclass
class Entry:
    rows: dict[Hashable, int] = field(default_factory=dict)  # family -> its row there
    activation: str = ""  # a bottleneck adapter's, applied per row
    parts: dict[tuple, int] = field(default_factory=dict)  # table key -> prefix length (or 0)


@dataclass
class Family:
    rows: Rows = field(default_factory=Rows)
    keys: list[tuple] = field(default_factory=list)  # its tables


def family_of(key: tuple) -> Hashable:
    """Which row numbering a table follows: ("lora" | "ia3" | "prefix", site) -> the kind,
    ("bn", site, wiring) -> ("bn", wiring), a head table -> its own key (one per wiring)."""
    if key[0] == "bn":
        return ("bn", key[2])
    return key[0] if key[0] in FILLS else key


def sites(model: Any) -> list[tuple[str, str, nn.Module]]:
    """(kind, qualified name, module) of every adapter layer the one-pass hooks handle."""
    out = []
    for name, module in model.base_model.named_modules():
        if isinstance(module, LoRALinear):
            out.append(("linear", name, module))
        elif isinstance(module, BottleneckLayer):
            out.append(("bn", name, module))
        elif isinstance(module, PrefixTuningLayer):
            out.append(("prefix", name, module))
    return out


class Bank:
    def __init__(self, model: Any, *, device: Any, dtype: Any) -> None:
        self.model = model
        self.sites = sites(model)
        self.device, self.dtype = device, dtype
        on_cpu = torch.device(device).type == "cpu"
        self.reserve, self.keep = (RESERVE, PARKED_CPU) if on_cpu else (0, PARKED)
        self.families: dict[Hashable, Family] = {}
        self.tables: dict[tuple, Stack] = {}
        self.entries: dict[str, Entry] = {}
        self._configs: dict[str, tuple[Any, str, tuple]] = {}  # module -> (config, _wiring's)
        self.parked: OrderedDict[str, None] = OrderedDict()  # out of their slots, oldest first
        # Bytes every stack holds (spare rows and padding included); an int set after each
        # change, so that other threads may read it (the cache's gauges).
        self.nbytes = 0

    def ensure(self, module: str) -> Entry:
        entry = self.entries.get(module)
        if entry is not None:
            return entry
        try:
            with torch.inference_mode():  # the stacks are inference tensors: edit them in it
                entry = self._add(module)
        finally:
            self.nbytes = sum(stack.nbytes for stack in self.tables.values())
        self.entries[module] = entry
        return entry

    def park(self, module: str, owner: str) -> None:
        """`module` (a slot) goes to another adapter, its occupant stays resident: keep its
        rows under `owner` (its own module name) for `unpark`, the last `keep` at most (the
        oldest dropped: the stacks stay near the rows in slots + `keep`, not one per resident
        adapter; past the allocation, growth copies would cost more than the copies saved:
        256 parked raised MiniLM's cold p99 to 70 ms before the CPU's stacks were reserved).
        `keep` is PARKED, or PARKED_CPU within the CPU's reserve (MiniLM, 2,000 adapters,
        Zipf: activations took 1.5 s of the window's 11 against 1.8 s with 64)."""
        self._rename(module, owner)
        if owner in self.entries:
            self.parked[owner] = None
        while len(self.parked) > self.keep:
            self.drop(next(iter(self.parked)))

    def unpark(self, owner: str, module: str) -> None:
        """The rows parked under `owner` now serve `module` (its slot); none: nothing."""
        if owner in self.parked:
            del self.parked[owner]
            self._rename(owner, module)

    def _rename(self, old: str, new: str) -> None:
        entry = self.entries.pop(old, None)
        if entry is not None:
            self.drop(new)
            self.entries[new] = entry

    def body_family(self, module: str) -> tuple:
        """A sort key of `module`'s family in the body (bottleneck wirings, LoRA, IA3, prefix
        tuning last: the other rows are then one span before it)."""
        names = [n for n in self.ensure(module).rows if n in BODY_ORDER or n[0] == "bn"]
        if not names:
            return (-1, "")
        return min((BODY_ORDER.get(n, 0), str(n)) for n in names)

    def drop(self, module: str) -> None:
        self.parked.pop(module, None)
        entry = self.entries.pop(module, None)
        if entry is not None:
            with torch.inference_mode():
                self._release(entry)
            self.nbytes = sum(stack.nbytes for stack in self.tables.values())

    def _add(self, module: str) -> Entry:
        activation, wiring = self._wiring(module)
        entry = Entry(activation=activation)
        try:
            for kind, site, layer in self.sites:
                for key, values, length in _parts(kind, site, layer, module, wiring):
                    self._put(entry, key, values, length)
            for key, values, labels in head_parts(self.model, module):
                self._put(entry, key, values, labels)
            for name, row in entry.rows.items():  # the fill where it has no part
                for table in self.families[name].keys:
                    if table not in entry.parts:
                        self.tables[table].cover(row)
        except Exception:
            self._release(entry)
            raise
        return entry

    def _wiring(self, module: str) -> tuple[str, tuple]:
        """A bottleneck module's activation and wiring, worked out once per config object (a
        slot keeps its config: converting it to a dict took ~a tenth of an activation)."""
        config = self.model.adapters_config.get(module)
        known = self._configs.get(module)
        if known is None or known[0] is not config:
            as_dict = config.to_dict() if hasattr(config, "to_dict") else config
            known = self._configs[module] = (config, bn_activation(as_dict), bn_wiring(as_dict))
        return known[1], known[2]

    def _put(self, entry: Entry, key: tuple, values: dict, length: int) -> None:
        name = family_of(key)
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = Family()
        if name not in entry.rows:
            entry.rows[name], grew = family.rows.take()
            if grew:
                for table in family.keys:
                    self.tables[table].resize(family.rows.capacity)
        stack = self.tables.get(key)
        if stack is None:
            fills = head_fills(key[1]) if key[0] == "head" else FILLS[key[0]]
            rows = family.rows
            stack = Stack(fills, capacity=rows.capacity, device=self.device, dtype=self.dtype,
                          reserve=self.reserve, ready=rows.top)  # fmt: skip
            self.tables[key] = stack
            family.keys.append(key)
        entry.parts[key] = length  # noted first: a put that fails half-way is still reset
        stack.put(entry.rows[name], values)

    def _release(self, entry: Entry) -> None:
        for key in entry.parts:
            self.tables[key].clear(entry.rows[family_of(key)])
        for name, row in entry.rows.items():
            family = self.families[name]
            family.rows.give(row)
            if family.rows.used == 0:  # nothing left: free its stacks
                for key in family.keys:
                    del self.tables[key]
                del self.families[name]
            else:
                self._compact(name, family)

    def _compact(self, name: Hashable, family: Family) -> None:
        capacity = family.rows.shrink_to()
        if capacity is None:
            return
        holders = [e for e in self.entries.values() if name in e.rows]
        moves = family.rows.compact(capacity, [e.rows[name] for e in holders])
        for key in family.keys:
            self.tables[key].resize(capacity, moves)
        for holder in holders:
            holder.rows[name] = moves.get(holder.rows[name], holder.rows[name])


def _parts(kind: str, site: str, layer: Any, module: str, wiring: tuple):
    """(table key, tensors, prefix length or 0) of adapter `module` at one site; nothing
    when it has no part there."""
    if kind == "linear" and module in layer.loras:
        part = layer.loras[module]
        if isinstance(part, IA3):
            yield ("ia3", site), {"m": part.lora_B.reshape(1, -1) * part.scaling}, 0
        else:  # the scaling folded into B: one operator less per site and pass
            yield ("lora", site), {"a": part.lora_A.t(), "b": part.lora_B.t() * part.scaling}, 0
    elif kind == "bn" and module in layer.adapters:
        yield ("bn", site, wiring), _bottleneck(layer.adapters[module]), 0
    elif kind == "prefix" and module in layer.prefixes:
        pool = layer.pool.prefix_tunings[module][layer.location_key]
        kv = pool(1)[layer.prefixes[module]]  # (2, 1, heads, length, head size)
        yield ("prefix", site), {"k": kv[0, 0], "v": kv[1, 0]}, int(kv.shape[3])


def _bottleneck(adapter: Any) -> dict[str, torch.Tensor]:
    down = next(m for m in adapter.adapter_down if isinstance(m, nn.Linear))
    up = adapter.adapter_up
    width = up.weight.shape[0]
    scaling = adapter.scaling
    if not torch.is_tensor(scaling):
        scaling = torch.tensor([float(scaling)], dtype=up.weight.dtype)
    values = {
        "wd": down.weight.t(),
        "bd": down.bias.view(1, -1),
        "wu": up.weight.t(),
        "bu": up.bias.view(1, -1),
        "s": scaling.reshape(1, -1).expand(1, width),
    }
    for norm, prefix in (("adapter_norm_before", "lnb"), ("adapter_norm_after", "lna")):
        if hasattr(adapter, norm):
            values[f"{prefix}_w"] = getattr(adapter, norm).weight.view(1, -1)
            values[f"{prefix}_b"] = getattr(adapter, norm).bias.view(1, -1)
    return values


def is_parallel(adapter: Any) -> bool:
    return isinstance(adapter, ParallelAdapter)
