"""Compatibility keys and pass planning (pure): which adapters may share one BatchSplit."""

from __future__ import annotations

import pytest
from adapters import (
    ConfigUnion,
    DoubleSeqBnConfig,
    IA3Config,
    LoRAConfig,
    ParBnConfig,
    PrefixTuningConfig,
    PromptTuningConfig,
    SeqBnConfig,
)

from app.serving.onepass.support import ONEPASS_KEY
from app.serving.split_groups import Compat, Piece, compat_of, plan_pieces


def _key(config, slot="x", *, onepass=False):
    """The library path's key (BatchSplit groups); `onepass`: the engine's default key."""
    config = config.to_dict() if hasattr(config, "to_dict") else config
    return compat_of(slot, config, onepass=onepass)


def test_every_stackable_config_shares_the_one_pass_key():
    """With the one-pass path (issue 29), wiring no longer splits passes; gating still does."""
    configs = [SeqBnConfig(), DoubleSeqBnConfig(), ParBnConfig(), LoRAConfig(), IA3Config(),
               PrefixTuningConfig(), PrefixTuningConfig(prefix_length=10, flat=True)]  # fmt: skip
    keys = {_key(c, f"s{i}", onepass=True) for i, c in enumerate(configs)}
    assert keys == {Compat(ONEPASS_KEY, by_length=False)}
    gated = _key(SeqBnConfig(use_gating=True), onepass=True)
    assert gated.key != ONEPASS_KEY and gated.by_length


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (SeqBnConfig(), SeqBnConfig(reduction_factor=4, non_linearity="gelu")),
        (SeqBnConfig(), SeqBnConfig(init_weights="houlsby", dropout=0.1)),
        (ParBnConfig(), ParBnConfig(scaling=2.0, reduction_factor=8)),
        (DoubleSeqBnConfig(), DoubleSeqBnConfig(reduction_factor=64)),
        (LoRAConfig(), LoRAConfig(r=4, alpha=16, dropout=0.1)),
        (IA3Config(), IA3Config(init_weights_seed=3)),
        (PrefixTuningConfig(), PrefixTuningConfig(bottleneck_size=64, non_linearity="relu")),
        (PrefixTuningConfig(), PrefixTuningConfig(flat=True)),  # trained ones are stored flat
    ],
)
def test_same_wiring_shares_a_key(a, b):
    assert _key(a, "a") == _key(b, "b")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (SeqBnConfig(), DoubleSeqBnConfig()),
        (SeqBnConfig(), ParBnConfig()),  # silently wrong when mixed (measured)
        (SeqBnConfig(), SeqBnConfig(leave_out=[0])),
        (SeqBnConfig(), SeqBnConfig(use_gating=True)),
        (SeqBnConfig(), SeqBnConfig(original_ln_before=False)),
        (SeqBnConfig(), LoRAConfig()),
        (LoRAConfig(), IA3Config()),
        (LoRAConfig(), LoRAConfig(attn_matrices=["q", "k", "v"])),
        (LoRAConfig(), LoRAConfig(selfattn_lora=False, intermediate_lora=True)),
        (LoRAConfig(), LoRAConfig(init_weights="bert")),
        (IA3Config(), IA3Config(intermediate_lora=False)),
        (PrefixTuningConfig(), PrefixTuningConfig(prefix_length=10)),  # silently wrong mixed
        (PrefixTuningConfig(), LoRAConfig()),
    ],
)
def test_different_wiring_gets_different_keys(a, b):
    assert _key(a, "a").key != _key(b, "b").key


@pytest.mark.parametrize(
    ("config", "by_length"),
    [
        (LoRAConfig(use_dora=True), False),  # two DoRA LoRAs mix wrongly (measured)
        (ConfigUnion(PrefixTuningConfig(), ParBnConfig()), True),
        (PromptTuningConfig(), True),
        (None, True),
        ({"architecture": "something_new"}, True),
    ],
)
def test_unmeasured_or_unsafe_configs_run_alone(config, by_length):
    a, b = _key(config, "a"), _key(config, "b")
    assert a.key != b.key  # never in one split with another adapter, even of the same config
    assert a.by_length is by_length


def test_gated_adapters_see_no_padding():
    assert _key(SeqBnConfig(use_gating=True)).by_length
    assert _key(LoRAConfig(use_gating=True)).by_length
    assert not _key(SeqBnConfig()).by_length and not _key(LoRAConfig()).by_length


A, B, C = Compat("a", False), Compat("b", False), Compat("c", True)


@pytest.mark.parametrize(
    ("compats", "lengths", "expected"),
    [
        ([A], [[5, 3]], [[(0, (0, 1))]]),
        ([A, B, A], [[5], [4], [3]], [[(0, (0,)), (2, (0,))], [(1, (0,))]]),
        ([B, A, B], [[5], [4, 4], [3]], [[(0, (0,)), (2, (0,))], [(1, (0, 1))]]),
        # by_length: rows of one length share a pass; groups in order of first appearance
        ([C], [[5, 3, 5, 3, 4]], [[(0, (0, 2))], [(0, (1, 3))], [(0, (4,))]]),
        ([C, A, C], [[5, 3], [3], [3]], [[(0, (0,))], [(0, (1,)), (2, (0,))], [(1, (0,))]]),
        ([], [], []),
    ],
)
def test_plan_pieces(compats, lengths, expected):
    got = plan_pieces(compats, lengths)
    assert got == [[Piece(s, rows) for s, rows in group] for group in expected]
    # every row of every segment is planned exactly once
    planned = sorted((p.segment, r) for group in got for p in group for r in p.rows)
    assert planned == [(s, r) for s, rows in enumerate(lengths) for r in range(len(rows))]
