"""Which rows of a forward pass may share one `BatchSplit` body pass. Pure functions.

`BatchSplit` runs every adapter layer's composition once over the whole batch, so the
adapters in one split must agree on everything the layer does around them: where they sit
(`mh_adapter`, `leave_out`, LoRA's matrices and locations), and the wiring the layer takes from
the FIRST child and applies to all (a bottleneck layer's residual and layer-norm handling in
`pre_forward`/`post_forward`, LoRA's `composition_mode`, prefix tuning's length). Measured with
adapters 1.3.0 (docs/serving-mixed-methods.md): mixing methods raises TypeError/KeyError, and
some mixes are silently wrong (seq_bn + par_bn; prefix lengths 30 + 10; two DoRA LoRAs).

The key is the adapter config minus the fields each family lets differ inside one split (those
only change an adapter's own weights and its own forward: sizes, activations, scaling, init).
Everything else must match. Architectures not listed here, and LoRA variants with their own
weight transforms (DoRA, VeRA), get a key of their own: one adapter per body pass.

Some adapters see the padding: a gate is averaged over every position, pads included. Their
rows only share a pass with rows of the same length (no padding at all), so each row still
equals that text alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.serving.onepass.support import ONEPASS_KEY, stackable

# Fields that may differ between adapters sharing one split; each was measured exact.
FREE_FIELDS: dict[str, frozenset[str]] = {
    "bottleneck": frozenset(
        {"reduction_factor", "non_linearity", "init_weights", "init_weights_seed", "dropout"}
        | {"scaling"}
    ),
    "lora": frozenset({"r", "alpha", "dropout", "init_weights_seed"}),
    "prefix_tuning": frozenset(
        {"bottleneck_size", "non_linearity", "dropout", "init_weights_seed", "flat"}
    ),
}


@dataclass(frozen=True)
class Compat:
    """How one adapter may be batched: with adapters of equal `key`; `by_length`: unpadded."""

    key: Hashable
    by_length: bool


@dataclass(frozen=True)
class Piece:
    """Rows `rows` of segment `segment`, in one body pass with the other pieces of its group."""

    segment: int
    rows: tuple[int, ...]


def compat_of(slot: str, config: Mapping[str, Any] | None, *, onepass: bool = True) -> Compat:
    """Adapters with equal keys give exact outputs when mixed in one body pass: one
    `BatchSplit`, or (`onepass`, app.serving.onepass) every stackable adapter together."""
    if onepass and stackable(config):
        return Compat(ONEPASS_KEY, by_length=False)
    if not isinstance(config, Mapping):
        return Compat(("alone", slot), by_length=True)
    family = config.get("architecture") or "bottleneck"  # bottleneck configs name none
    free = FREE_FIELDS.get(family)
    if free is None:  # unions, prompt tuning, ReFT, ...: unmeasured, so the safest path
        return Compat(("alone", slot), by_length=True)
    if family == "lora" and _own_transform(config):
        return Compat(("alone", slot), by_length=False)
    fixed = {k: v for k, v in config.items() if k not in free}
    return Compat((family, freeze(fixed)), by_length=bool(config.get("use_gating")))


def plan_pieces(compats: Sequence[Compat], lengths: Sequence[Sequence[int]]) -> list[list[Piece]]:
    """Group the rows of a pass (per segment: its adapter's Compat, its rows' token counts).

    One group per body pass, in the order groups first appear; inside a group, pieces keep
    the segments' order. A segment is split by row length only when its adapter needs it.
    """
    groups: dict[Hashable, list[Piece]] = {}
    for index, (compat, sizes) in enumerate(zip(compats, lengths, strict=True)):
        if not compat.by_length:
            groups.setdefault((compat.key, None), []).append(Piece(index, tuple(range(len(sizes)))))
            continue
        by_size: dict[int, list[int]] = {}
        for row, size in enumerate(sizes):
            by_size.setdefault(size, []).append(row)
        for size, rows in by_size.items():
            groups.setdefault((compat.key, size), []).append(Piece(index, tuple(rows)))
    return list(groups.values())


def _own_transform(config: Mapping[str, Any]) -> bool:
    return bool(config.get("use_dora")) or any(
        config.get(k) is not None for k in ("vera_d", "vera_b")
    )


def freeze(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set | frozenset):
        return tuple(sorted(repr(v) for v in value))
    return value if isinstance(value, Hashable) else repr(value)
