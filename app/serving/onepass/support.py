"""Which adapter configs the one-pass path runs exactly. Pure functions of the config dict.

Covered: bottleneck adapters (seq_bn, double_seq_bn, par_bn and custom wirings: layer-norm
placement, residual placement, adapter layer norms, float / learned / channel scaling, any
activation, reduction factors per layer, leave_out), LoRA (any r, alpha, matrices, locations),
IA3, prefix tuning (flat or reparametrised, any length). Not covered, so they keep the
library's path: gating (a gate averaged over every position sees the padding), DoRA, VeRA,
multi-task LoRA, Compacter (PHM layers), stochastic depth, invertible adapters, unions (mam,
unipelt), prompt tuning, ReFT, and any architecture not named here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ONEPASS_KEY = ("onepass",)  # the body-pass key every stackable adapter shares
BN_WIRING = (
    "is_parallel",
    "original_ln_before",
    "original_ln_after",
    "residual_before_ln",
    "adapter_residual_before_ln",
    "ln_before",
    "ln_after",
)


def stackable(config: Mapping[str, Any] | None) -> bool:
    """Does the one-pass path compute this adapter exactly as the library does?"""
    if not isinstance(config, Mapping) or config.get("use_gating"):
        return False
    family = config.get("architecture") or "bottleneck"
    if family == "bottleneck":
        return _bottleneck(config)
    if family == "lora":
        return _lora(config)
    return family == "prefix_tuning"


def bn_wiring(config: Mapping[str, Any]) -> tuple:
    """What a bottleneck layer does around the adapter's weights: adapters of equal wiring
    share one stack per location (their activations may differ: applied per row)."""
    return tuple((k, str(config.get(k)).lower()) for k in BN_WIRING)


def bn_activation(config: Mapping[str, Any]) -> str:
    return str(config.get("non_linearity")).lower()


def _bottleneck(config: Mapping[str, Any]) -> bool:
    scaling = config.get("scaling", 1.0)
    if not isinstance(scaling, int | float) and scaling not in ("learned", "channel"):
        return False
    if config.get("is_parallel") and config.get("ln_before"):
        return False  # unmeasured
    return not (
        config.get("phm_layer")
        or config.get("stochastic_depth")
        or config.get("inv_adapter")
        or config.get("residual_before_ln") not in (True, False, "post_add")
    )


def _lora(config: Mapping[str, Any]) -> bool:
    if config.get("use_dora") or config.get("dtype") is not None:
        return False
    if config.get("vera_d") is not None or config.get("vera_b") is not None:
        return False
    if "n_up_projection" in config or "task_specific_matrix_type" in config:
        return False  # multi-task LoRA
    mode = config.get("composition_mode", "add")
    return mode == "add" or (mode == "scale" and config.get("r", 1) == 1)
