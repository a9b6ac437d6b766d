"""The one-pass body forward: the base model's own forward, hooks on the adapter layers.

`OnePass` hooks every adapter layer of the model once: a forward hook on each LoRA-wrapped
linear (LoRA, IA3), the forward of each self-attention that holds a prefix-tuning layer (its
own queries, keys and values, then `compute.prefix_attention`: prefix rows attend over their
prefixes, the others over their own keys only), and the bottleneck layers'
`bottleneck_layer_forward`. The hooks act only while `body` runs a batch (no AdapterSetup is
active then, so the library applies no adapter of its own); otherwise they step aside and the
library's own path runs unchanged.

Before each encoder layer of a one-pass body and before its feed-forward part (`stops`),
`between` (when set) may run another, short one-pass body on the same thread
(`app.serving.preempt`): `body` keeps the plan of the pass it interrupts and puts it back.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from app.serving.onepass import compute
from app.serving.onepass.bank import Bank
from app.serving.onepass.heads import apply_heads
from app.serving.onepass.plan import Plan, build_plan

MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta"})  # checked against the library


def supported_model(model: Any) -> bool:
    """Encoders whose adapter layers the hooks know (BERT-like: bottleneck layers are the
    sub-layer outputs; self-attention over absolute positions with an additive 4-d mask)."""
    config = model.config
    return (
        getattr(config, "model_type", None) in MODEL_TYPES
        and getattr(config, "position_embedding_type", "absolute") == "absolute"
        and not getattr(config, "is_decoder", False)
    )


class OnePass:
    def __init__(self, model: Any) -> None:
        first = next(model.parameters())
        self.model = model
        self.bank = Bank(model, device=first.device, dtype=first.dtype)
        self.plan: Plan | None = None
        self.between: Callable[[], None] | None = None  # called at each stop of a body
        self.sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
        for module in stops(model):
            module.register_forward_pre_hook(self._between)
        for kind, site, layer in self.bank.sites:
            if kind == "linear":
                layer.register_forward_hook(partial(self._linear, site))
            elif kind == "prefix":
                attention = model.base_model.get_submodule(site.rsplit(".", 1)[0])
                original = attention.forward
                attention.forward = partial(self._attention, site, attention, original)
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
        outer, self.plan = self.plan, build_plan([entries[m] for m in modules], sizes,
                                                 input_ids.device)  # fmt: skip
        try:
            return self.model.base_model(input_ids=input_ids, attention_mask=mask, return_dict=True)
        finally:
            self.plan = outer  # a body run between the layers of another gives it back

    def ready(self, module: str) -> bool:
        """Whether `module`'s rows are in the stacks: a body over it writes nothing."""
        return module in self.bank.entries

    def order(self, modules: list[str]) -> list[int]:
        """The order to run segments of these modules in (indexes): by body family, so each
        family's rows are one span of the batch (`plan`)."""
        families = [self.bank.body_family(m) for m in modules]
        return sorted(range(len(modules)), key=lambda i: families[i])

    def heads(self, body: Any, modules: list[str], sizes: list[int]) -> Any:
        """Each segment's logits from its own head (float32 lists), all heads batched; None
        when a head is of a type the stacks do not hold (the caller applies it alone)."""
        return apply_heads(self.bank, body, modules, sizes)

    # ---- hooks ---------------------------------------------------------------------------
    def _between(self, layer: Any, args: tuple) -> None:
        between = self.between
        if between is not None and self.plan is not None:
            between()

    def _linear(self, site: str, layer: Any, args: tuple, out: Any) -> Any:
        plan = self.plan
        if plan is None:
            return None
        tables = self.bank.tables
        if ("lora", site) in plan.sites:
            out = compute.lora(out, args[0], tables["lora", site].tensors, plan.families["lora"])
        if ("ia3", site) in plan.sites:
            out = compute.ia3(out, tables["ia3", site].tensors, plan.families["ia3"])
        return out

    def _attention(self, site: str, attn: Any, original: Any, hidden: Any, *args, **kw) -> Any:
        plan = self.plan
        if plan is None:  # not a one-pass body: the library's own attention
            return original(hidden, *args, **kw)
        prefixed = ("prefix", site) in plan.sites
        mask = args[0] if args else kw.get("attention_mask")
        rest = [*args[1:], *(v for k, v in kw.items() if k != "attention_mask")]
        plain = not any(x is not None and x is not False for x in rest)
        if not prefixed and (not self.sdpa or not plain or attn.training):
            return original(hidden, *args, **kw)
        if not plain:
            raise RuntimeError("one-pass prefix attention takes hidden states and a mask only")
        heads, size = attn.num_attention_heads, attn.attention_head_size
        qkv = [
            m(hidden).view(hidden.shape[0], -1, heads, size).transpose(1, 2)
            for m in (attn.query, attn.key, attn.value)
        ]
        if prefixed:
            tensors = self.bank.tables["prefix", site].tensors
            rows, at = plan.families["prefix"], plan.prefixes[site]
            out = compute.prefix_attention(*qkv, mask, tensors, rows, at, plan.masks)
        else:  # the library's SDPA attention without its copies for Parallel composition
            out = compute.attention(*qkv, mask)
        return out.transpose(1, 2).reshape(hidden.shape[0], -1, heads * size), None

    def _bottleneck(self, site: str, original: Any, h: Any, inp: Any, ln: Any) -> Any:
        plan = self.plan
        groups = plan.bottlenecks.get(site) if plan is not None else None
        if not groups:
            return original(h, inp, ln)
        out = None
        for wiring, rows, acts in groups:
            tensors = self.bank.tables["bn", site, wiring].tensors
            w = compute.wiring_of(wiring)
            if rows.sel is None and rows.start == 0 and rows.stop == h.shape[0]:
                return compute.bottleneck(h, inp, ln, w, tensors, rows.ids, acts)
            if out is None:
                out = ln(h + inp) if ln is not None else h + inp  # rows without a bottleneck
            if rows.sel is None:  # a span: views in, written in place
                span = slice(rows.start, rows.stop)
                out[span] = compute.bottleneck(h[span], inp[span], ln, w, tensors, rows.ids, acts)
            else:
                part = compute.bottleneck(h[rows.sel], inp[rows.sel], ln, w, tensors, rows.ids,
                                          acts)  # fmt: skip
                out = out.index_copy(0, rows.sel, part)
        return out


def stops(model: Any) -> list[Any]:
    """Where a body may stop for another: each encoder layer (BERT-like: `encoder.layer`) and
    its feed-forward part (`intermediate`, ~60% of a layer's time), in order; [] without."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = list(getattr(encoder, "layer", []))
    found = [(layer, getattr(layer, "intermediate", None)) for layer in layers]
    return [m for pair in found for m in pair if m is not None]
