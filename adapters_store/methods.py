"""The adapter methods we train and serve, declared once; and the adapters library's module
containers, declared once.

A method's name is the adapters library's `ADAPTER_CONFIG_MAP` key: training passes it as the
adapter config, the store records it as a manifest's `adapter_config`, the job API and the
console offer it. Adding a method is one `Method(...)` line here (and a test, if it needs one).

Containers: the library keeps every adapter's modules in `nn.ModuleDict`s keyed by the adapter's
name. In a parameter or tensor name, the part after one of `ADAPTER_CONTAINERS` is an adapter's
own name; a parameter under any of them (or under the top-level `heads`) belongs to an adapter
or a head, never to the base model. (Before this registry three lists disagreed: serving named
all nine, the fit check six and the fingerprint seven; the missing ones are used only by
methods we do not train: UniPELT gates, Compacter's shared parameters, AdapterFusion.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One adapter method: its config name, the default recipe's learning rate, a summary."""

    name: str
    learning_rate: float  # the default recipe's (docs/training-recipe.md gives the sources)
    summary: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("seq_bn", 1e-3, "bottleneck after the feed-forward block (Pfeiffer)"),
        Method("double_seq_bn", 1e-3, "bottleneck after attention and feed-forward (Houlsby)"),
        Method("par_bn", 1e-3, "parallel bottleneck; the same rate as seq_bn"),
        Method("lora", 1e-3, "low-rank update of the attention projections"),
        Method("prefix_tuning", 5e-4, "learned key/value prefixes"),
        Method("ia3", 3e-3, "learned rescaling of keys, values and feed-forward"),
    )
}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
DEFAULT_METHOD = "seq_bn"
CUSTOM_LEARNING_RATE = 1e-3  # an adapter config given as a JSON object
FULL_LEARNING_RATE = 3e-5  # full fine-tuning, for comparison

HEADS_CONTAINER = "heads"  # top level of the model: heads.<adapter>.<layer>...
ADAPTER_CONTAINERS = frozenset(
    {"adapters", "loras", "refts", "prefix_tunings", "prefix_gates", "prompt_tunings"}
    | {"shared_parameters", "adapter_fusion_layer", HEADS_CONTAINER}
)


def adapter_name_at(parts: list[str], index: int) -> bool:
    """Is `parts[index]` (of a dotted parameter name) an adapter's name: does it follow one of
    the library's containers?"""
    return index > 0 and parts[index - 1] in ADAPTER_CONTAINERS


def is_base_parameter(name: str) -> bool:
    """A parameter of the base model, not of an adapter or a head."""
    parts = name.split(".")
    if parts[0] == HEADS_CONTAINER:
        return False
    return not any(p in ADAPTER_CONTAINERS for p in parts[:-1] if p != HEADS_CONTAINER)
