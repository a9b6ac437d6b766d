"""Every row's own adapter at one location, in a fixed number of operators.

Each function takes the stacked tensors of one location (`stacks.Stack.tensors`) and which
batch rows it applies to with their stack rows (`plan.Rows`: every row, or the rows of one
family gathered and put back), gathers those rows' tensors and applies them with batched
matmuls. The arithmetic follows the library's modules (adapters 1.3: `methods/modeling.py`
Adapter / ParallelAdapter, `methods/lora.py` LoRA / IA3, `methods/prefix_tuning.py`), so each
row equals its adapter run alone up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from adapters.methods.modeling import Activation_Function_Class

Tensors = dict[str, torch.Tensor]
LN_EPS = 1e-5  # nn.LayerNorm's default, which the library's adapter layer norms use


def lora(out: torch.Tensor, x: torch.Tensor, t: Tensors, rows: Any) -> torch.Tensor:
    """out + x A^T (B^T alpha / r) on the span of LoRA rows (`plan.Rows`), in place (`out` is
    the linear's own fresh output)."""
    a, b = t["a"][rows.ids], t["b"][rows.ids]
    if rows.start == 0 and rows.stop == out.shape[0]:
        return torch.baddbmm(out, torch.bmm(x, a), b)
    out[rows.start : rows.stop].baddbmm_(torch.bmm(x[rows.start : rows.stop], a), b)
    return out


def ia3(out: torch.Tensor, t: Tensors, rows: Any) -> torch.Tensor:
    """out * (scale vector * alpha) on the span of IA3 rows, in place."""
    if rows.start == 0 and rows.stop == out.shape[0]:
        return out * t["m"][rows.ids]
    out[rows.start : rows.stop].mul_(t["m"][rows.ids])
    return out


@dataclass(frozen=True)
class Wiring:
    """A bottleneck layer's wiring around its adapter (`support.bn_wiring`, decoded).

    `neutral`: with all-zero weights the layer gives exactly the plain sub-layer output
    (LN(h + input)): the up-projection adds 0 to a residual equal to h, then the model's own
    norm follows. So rows without a part here (adapters of the wiring that leave this layer
    out) can run through it reading zeros. True for seq_bn, double_seq_bn and par_bn."""

    parallel: bool
    ln_before_orig: bool
    ln_after_orig: bool
    residual_before_ln: Any  # True, False or "post_add"
    adapter_residual_before_ln: bool
    ln_before: bool
    ln_after: bool

    @property
    def neutral(self) -> bool:
        residual_is_h = (
            self.parallel
            or self.residual_before_ln is True
            or (self.residual_before_ln is False and not self.ln_before_orig)
        )
        quiet_norm = not (self.ln_after and self.adapter_residual_before_ln and not self.parallel)
        return residual_is_h and quiet_norm and self.ln_after_orig


@lru_cache(maxsize=64)
def wiring_of(key: tuple) -> Wiring:
    """The Wiring of a `support.bn_wiring` key."""
    f = dict(key)
    return Wiring(
        parallel=f["is_parallel"] == "true",
        ln_before_orig=f["original_ln_before"] == "true",
        ln_after_orig=f["original_ln_after"] == "true",
        residual_before_ln={"true": True, "false": False}.get(f["residual_before_ln"], "post_add"),
        adapter_residual_before_ln=f["adapter_residual_before_ln"] == "true",
        ln_before=f["ln_before"] == "true",
        ln_after=f["ln_after"] == "true",
    )


@lru_cache(maxsize=64)
def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    return Activation_Function_Class(name)


def _act(down: torch.Tensor, acts: Sequence[tuple[str, Any]]) -> torch.Tensor:
    """Each row's own activation: the first for all, the others where their mask holds."""
    out = activation(acts[0][0])(down)
    for name, mask in acts[1:]:
        out = torch.where(mask, activation(name)(down), out)
    return out


def bottleneck(
    h: torch.Tensor, inp: torch.Tensor, ln: Any, w: Wiring, t: Tensors, ids, acts
) -> Any:
    """The library's pre_forward, adapter forward and post_forward of one bottleneck adapter
    per row: `h` the sub-layer's output, `inp` its residual input, `ln` the model's norm,
    `acts` the rows' activations ((name, None) or (name, rows mask) pairs)."""
    x, residual = _pre(h, inp, ln, w)
    if w.ln_before:
        x = _row_norm(x, t["lnb_w"][ids], t["lnb_b"][ids])
    down = _act(torch.baddbmm(t["bd"][ids], x, t["wd"][ids]), acts)
    out = torch.baddbmm(t["bu"][ids], down, t["wu"][ids]) * t["s"][ids]
    if w.parallel:
        if w.ln_after:
            out = _row_norm(out, t["lna_w"][ids], t["lna_b"][ids])
        out = out + h
    else:
        if w.adapter_residual_before_ln:
            out = out + residual
        if w.ln_after:
            out = _row_norm(out, t["lna_w"][ids], t["lna_b"][ids])
        if not w.adapter_residual_before_ln:
            out = out + residual
    if w.ln_after_orig:
        out = ln(out + inp) if ln is not None else out + inp
    return out


def _pre(h: torch.Tensor, inp: torch.Tensor, ln: Any, w: Wiring) -> tuple[Any, Any]:
    if w.parallel:
        return inp, inp
    x, residual = h, h  # residual_before_ln True: the adapter's residual is h itself
    if w.ln_before_orig:
        x = x + inp if inp is not None else x
        if w.residual_before_ln == "post_add":
            residual = x
        x = ln(x) if ln is not None else x
    if not w.residual_before_ln:
        residual = x
    return x, residual


def _row_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(bias, F.layer_norm(x, x.shape[-1:], eps=LN_EPS), weight)


def attention(q, k, v, mask: Any):
    """Scaled dot-product attention as the library's SDPA attention runs it (eval mode, no
    prefix): the same operator on the same values, without copying q, k and v first (its
    `match_attn_matrices_for_parallel` repeats each once when no Parallel block widens them)."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def prefix_attention(q, k, v, mask: Any, t: Tensors, rows: Any, site: tuple, cache: dict):
    """Scaled dot-product attention of (batch, heads, tokens, head size) queries, keys and
    values, where the span of prefix-tuning rows (`rows`, a `plan.Rows`) attends over each
    row's own prefix (padded to the longest, `site` = (width, their lengths), the padding
    masked) in front of its keys, and the other rows over their own keys only. `mask`: the
    model's additive 4-d mask or None (no padding); masks derived from it are kept in `cache`
    (one per batch: the layers share them)."""
    start, stop = rows.start, rows.stop
    if start == 0 and stop == q.shape[0]:
        return _prefixed(q, k, v, mask, t, rows.ids, site, cache)
    pieces = []
    for a, b in ((0, start), (start, stop), (stop, q.shape[0])):
        if a == b:
            continue
        part = None if mask is None else mask[a:b]
        if a == start:
            pieces.append(_prefixed(q[a:b], k[a:b], v[a:b], part, t, rows.ids, site, cache))
        else:
            pieces.append(F.scaled_dot_product_attention(q[a:b], k[a:b], v[a:b], attn_mask=part))
    return torch.cat(pieces)


def _prefixed(q, k, v, mask: Any, t: Tensors, ids, site: tuple, cache: dict):
    width, lengths = site
    key = (width, lengths)
    if key not in cache:
        cache[key] = prefix_mask(mask, lengths, width, q)
    keys = torch.cat([t["k"][ids][:, :, :width], k], dim=2)
    values = torch.cat([t["v"][ids][:, :, :width], v], dim=2)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=cache[key])


def prefix_mask(mask: Any, lengths: tuple, width: int, q: torch.Tensor) -> Any:
    """The attention mask with `width` prefix positions in front of the keys': position j of
    row i is visible when j < lengths[i] (the rest is padding: masked). `mask` None (no
    padding): every token visible."""
    rows, queries = q.shape[0], q.shape[2]
    low = torch.finfo(q.dtype).min
    own = torch.tensor(lengths, dtype=torch.float32).view(-1, 1).to(q.device)
    visible = torch.arange(width, device=q.device, dtype=torch.float32) < own
    front = torch.where(visible, 0.0, low).to(q.dtype).view(rows, 1, 1, width)
    front = front.expand(rows, 1, queries, width)
    if mask is None:
        mask = torch.zeros(rows, 1, queries, queries, device=q.device, dtype=q.dtype)
    return torch.cat([front, mask.expand(rows, 1, queries, mask.shape[-1])], dim=-1)
