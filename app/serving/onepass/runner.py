"""The one-pass body forward: the base model's own forward, hooks on the adapter layers.

`OnePass` hooks every adapter layer of the model once: a forward hook on each LoRA-wrapped
linear (LoRA, IA3), a forward hook on each prefix-tuning layer, and the bottleneck layers'
`bottleneck_layer_forward`. The hooks act only while `body` runs a batch (no AdapterSetup is
active then, so the library applies no adapter of its own); otherwise they step aside and the
library's own path runs unchanged.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from app.serving.onepass import compute
from app.serving.onepass.bank import Bank
from app.serving.onepass.heads import apply_heads
from app.serving.onepass.plan import Plan, build_plan

MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta"})  # checked against the library


def supported_model(model: Any) -> bool:
    """Encoders whose adapter layers the hooks know (BERT-like: bottleneck layers are the
    sub-layer outputs, prefixes enter an additive 4-d attention mask)."""
    return getattr(model.config, "model_type", None) in MODEL_TYPES


class OnePass:
    def __init__(self, model: Any) -> None:
        first = next(model.parameters())
        self.model = model
        self.bank = Bank(model, device=first.device, dtype=first.dtype)
        self.plan: Plan | None = None
        for kind, site, layer in self.bank.sites:
            if kind == "linear":
                layer.register_forward_hook(partial(self._linear, site))
            elif kind == "prefix":
                layer.register_forward_hook(partial(self._prefix, site))
            else:
                original = layer.bottleneck_layer_forward
                layer.bottleneck_layer_forward = partial(self._bottleneck, site, original)

    def forget(self, module: str) -> None:
        """The tensors behind `module` changed or left: its row is stale."""
        self.bank.drop(module)

    def body(self, modules: list[str], sizes: list[int], input_ids: Any, mask: Any) -> Any:
        """The base model's output for rows run through their own adapters (`modules[i]`
        for the next `sizes[i]` rows)."""
        if self.model.adapters_config.active_setup is not None:
            raise RuntimeError("one-pass forward needs no active adapter setup on the model")
        entries = {m: self.bank.ensure(m) for m in dict.fromkeys(modules)}
        self.plan = build_plan([entries[m] for m in modules], sizes, self.bank, input_ids.device)
        try:
            return self.model.base_model(input_ids=input_ids, attention_mask=mask, return_dict=True)
        finally:
            self.plan = None

    def heads(self, body: Any, modules: list[str], sizes: list[int]) -> Any:
        """Each segment's logits from its own head (float32 lists), all heads batched; None
        when a head is of a type the stacks do not hold (the caller applies it alone)."""
        return apply_heads(self.bank, body, modules, sizes)

    # ---- hooks ---------------------------------------------------------------------------
    def _linear(self, site: str, layer: Any, args: tuple, out: Any) -> Any:
        plan = self.plan
        if plan is None:
            return None
        tables = self.bank.tables
        if ("lora", site) in plan.sites:
            out = compute.lora(out, args[0], tables["lora", site].tensors, plan.ids)
        if ("ia3", site) in plan.sites:
            out = compute.ia3(out, tables["ia3", site].tensors, plan.ids)
        return out

    def _prefix(self, site: str, layer: Any, args: tuple, out: Any) -> Any:
        plan = self.plan
        if plan is None or ("prefix", site) not in plan.sites:
            return None
        key, value, mask = out
        width, lengths = plan.prefixes[site]
        tensors = self.bank.tables["prefix", site].tensors
        cached = plan.masks.get((lengths, id(mask)))
        if cached is None:
            rows = torch.tensor(lengths, dtype=torch.float32).view(-1, 1).to(key.device)
            cached = compute.prefix_mask(mask, rows, width, key)
            plan.masks[lengths, id(mask)] = cached
        key, value = compute.prefix_kv(key, value, tensors, plan.ids, width)
        return key, value, cached

    def _bottleneck(self, site: str, original: Any, h: Any, inp: Any, ln: Any) -> Any:
        plan = self.plan
        groups = plan.bottlenecks.get(site) if plan is not None else None
        if not groups:
            return original(h, inp, ln)
        out = None
        for wiring, sel, ids, acts in groups:
            tensors = self.bank.tables["bn", site, wiring].tensors
            w = compute.wiring_of(wiring)
            if sel is None:  # every row of the batch: no gather
                return compute.bottleneck(h, inp, ln, w, tensors, ids, acts)
            if out is None:
                out = ln(h + inp) if ln is not None else h + inp  # rows without a bottleneck
            part = compute.bottleneck(h[sel], inp[sel], ln, w, tensors, ids, acts)
            out = out.index_copy(0, sel, part)
        return out
