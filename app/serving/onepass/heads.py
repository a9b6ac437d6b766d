"""Every segment's own classification head, in a fixed number of operators.

The library's classification heads (single-label, multi-label, regression: `adapters.heads`
ClassificationHead / MultiLabelClassificationHead) are a stack of linear layers on the first
token (or the pooler output). Heads of one wiring (layers, activation, pooler, bias) share a
stack per layer; a pass places each segment's rows in a (segments, longest segment, hidden)
block, applies every segment's own weights with one batched matmul per layer, and takes each
segment's own labels off the padded output. Other head types keep the per-segment path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from adapters.methods.modeling import Activation_Function_Class
from torch import nn

from adapters_store.tasks import HEAD_TYPES


def head_parts(model: Any, module: str):
    """(table key, tensors, label count) of `module`'s head; nothing when not stackable."""
    if module not in model.heads:
        return
    head = model.heads[module]
    config = getattr(head, "config", None) or {}
    if config.get("head_type") not in HEAD_TYPES:
        return
    linears = [m for m in head if isinstance(m, nn.Linear)]
    wiring = ("head", len(linears), str(config.get("activation_function")),
              bool(config.get("use_pooler")))  # fmt: skip
    values = {}
    for i, linear in enumerate(linears):
        values[f"w{i}"] = linear.weight.t()
        bias = linear.bias if linear.bias is not None else linear.weight.new_zeros(1)
        values[f"b{i}"] = bias.view(1, -1).expand(1, linear.weight.shape[0])
    yield wiring, values, linears[-1].weight.shape[0]


def head_fills(layers: int) -> dict[str, float]:
    return {f"{kind}{i}": 0.0 for i in range(layers) for kind in "wb"}


def apply_heads(bank: Any, body: Any, modules: Sequence[str], sizes: Sequence[int]) -> Any:
    """Logits per segment and row (float32 lists), or None when a head is not stackable."""
    keys = []
    for module in modules:
        found = [k for k in bank.entries[module].parts if k[0] == "head"]
        if not found:
            return None
        keys.append(found[0])
    out: list[Any] = [None] * len(modules)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    for key in dict.fromkeys(keys):
        group = [i for i, k in enumerate(keys) if k == key]
        logits = _group(bank, body, key, [modules[i] for i in group],
                        [(starts[i], sizes[i]) for i in group])  # fmt: skip
        for i, rows in zip(group, logits, strict=True):
            out[i] = rows
    return out


def _group(bank, body, key: tuple, modules: list[str], spans: list[tuple[int, int]]) -> list:
    _, layers, activation, pooler = key
    hidden = body["pooler_output"] if pooler else body["last_hidden_state"][:, 0]
    if len(spans) == 1:  # one segment: its rows are a span, its weights one row of the stacks
        return [_one(bank, hidden, key, modules[0], spans[0])]
    width = max(size for _, size in spans)
    rows = [start + j for start, size in spans for j in range(size)]
    slots = [s * width + j for s, (_, size) in enumerate(spans) for j in range(size)]
    device = hidden.device
    rows_t = torch.tensor(rows, dtype=torch.long).to(device)
    slots_t = torch.tensor(slots, dtype=torch.long).to(device)
    ids = torch.tensor([bank.entries[m].rows[key] for m in modules], dtype=torch.long).to(device)
    x = hidden.new_zeros(len(spans) * width, hidden.shape[-1])
    x = x.index_copy(0, slots_t, hidden.index_select(0, rows_t)).view(len(spans), width, -1)
    t = bank.tables[key].tensors
    act = Activation_Function_Class(activation) if activation != "None" else None
    for i in range(layers):
        x = torch.baddbmm(t[f"b{i}"][ids], x, t[f"w{i}"][ids])
        if i < layers - 1 and act is not None:
            x = act(x)
    flat = x.reshape(len(spans) * width, -1).index_select(0, slots_t).float().cpu().tolist()
    out, at = [], 0
    for module, (_, size) in zip(modules, spans, strict=True):
        labels = bank.entries[module].parts[key]
        out.append([row[:labels] for row in flat[at : at + size]])
        at += size
    return out


def _one(bank, hidden: Any, key: tuple, module: str, span: tuple[int, int]) -> list:
    """`_group` of one segment: the same operators on a batch of one, without the gathers."""
    _, layers, activation, _ = key
    start, size = span
    x = hidden[start : start + size].unsqueeze(0)
    t, at = bank.tables[key].tensors, bank.entries[module].rows[key]
    act = Activation_Function_Class(activation) if activation != "None" else None
    for i in range(layers):
        x = torch.baddbmm(t[f"b{i}"][at : at + 1], x, t[f"w{i}"][at : at + 1])
        if i < layers - 1 and act is not None:
            x = act(x)
    labels = bank.entries[module].parts[key]
    return [row[:labels] for row in x[0].float().cpu().tolist()]
