"""Random adapters with each kind of prediction head (for store and serving tests).

    save_task_adapter(factory, "emo", out, task="multi_label", labels={0: "joy", ...}, seed=1)

task: single_label (classification head), multi_label (classification, multilabel=True),
regression (classification with one label), or an unsupported head kind ("tagging",
"multiple_choice") to test refusals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def add_task_head(model: Any, slot: str, task: str, labels: dict[int, str]) -> None:
    if task == "regression":
        model.add_classification_head(slot, num_labels=1, id2label=labels)
    elif task in ("single_label", "multi_label"):
        model.add_classification_head(
            slot, num_labels=len(labels), id2label=labels, multilabel=task == "multi_label"
        )
    elif task == "tagging":
        model.add_tagging_head(slot, num_labels=len(labels), id2label=labels)
    elif task == "multiple_choice":
        model.add_multiple_choice_head(slot, num_choices=2)
    else:
        raise ValueError(task)


def save_task_adapter(
    factory: Any, name: str, out: str | Path, *, task: str, labels: dict[int, str], seed: int,
    config: Any = "seq_bn", std: float = 0.5,
) -> Path:  # fmt: skip
    """`factory.save` with the head of `task` (weights drawn from `seed`)."""
    import torch

    from training.modeling import save_adapter_files

    model = factory.model
    torch.manual_seed(seed)
    slot = name.replace(".", "_")
    model.add_adapter(slot, config=config)
    add_task_head(model, slot, task, labels)
    try:
        with torch.no_grad():
            for pname, param in model.named_parameters():
                if f".{slot}." in pname:
                    param.normal_(0, std)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_adapter_files(model, out, slot)
    finally:
        model.delete_adapter(slot)
        model.delete_head(slot)
    return out
