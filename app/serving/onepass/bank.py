"""The resident adapters' tensors, stacked per location (`stacks.Stack`), one row each.

`Bank.ensure(module)` copies an adapter's tensors out of the library's modules (whichever way
they got there: `load_adapter` or a slot pointed at them) into a row of every stack it has a
part in; `Bank.drop(module)` resets that row. The engine drops a module whenever the tensors
behind its name change (slot rebind, unload), so a row never outlives what it copied.
"""

from __future__ import annotations

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


@dataclass
class Entry:
    row: int
    activation: str = ""  # a bottleneck adapter's, applied per row
    parts: dict[tuple, int] = field(default_factory=dict)  # table key -> prefix length (or 0)


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
        self.rows = Rows()
        self.tables: dict[tuple, Stack] = {}
        self.entries: dict[str, Entry] = {}

    def ensure(self, module: str) -> Entry:
        entry = self.entries.get(module)
        if entry is not None:
            return entry
        with torch.inference_mode():  # the stacks are inference tensors: edit them in it
            entry = self._add(module)
        self.entries[module] = entry
        return entry

    def drop(self, module: str) -> None:
        entry = self.entries.pop(module, None)
        if entry is not None:
            with torch.inference_mode():
                self._release(entry)

    def _add(self, module: str) -> Entry:
        row, grown = self.rows.take()
        if grown:
            for stack in self.tables.values():
                stack.grow(self.rows.capacity)
        config = self.model.adapters_config.get(module)
        config = config.to_dict() if hasattr(config, "to_dict") else config
        entry = Entry(row, activation=bn_activation(config))
        wiring = bn_wiring(config)
        try:
            for kind, site, layer in self.sites:
                for key, values, length in _parts(kind, site, layer, module, wiring):
                    # noted first: a put that fails half-way is still reset on release
                    entry.parts[key] = length
                    self._table(key).put(row, values)
            for key, values, labels in head_parts(self.model, module):
                entry.parts[key] = labels
                self._table(key).put(row, values)
        except Exception:
            self._release(entry)
            raise
        return entry

    def _release(self, entry: Entry) -> None:
        for key in entry.parts:
            self.tables[key].clear(entry.row)
        self.rows.give(entry.row)

    def _table(self, key: tuple) -> Stack:
        stack = self.tables.get(key)
        if stack is None:
            fills = head_fills(key[1]) if key[0] == "head" else FILLS[key[0]]
            stack = Stack(fills, capacity=self.rows.capacity, device=self.device, dtype=self.dtype)
            self.tables[key] = stack
        return stack


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
