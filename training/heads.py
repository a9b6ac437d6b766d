"""The prediction head per task, and what the manifest records of it.

The heads are the adapters library's own, so that `load_adapter(..., with_head=True)` (and
the server's `add_prediction_head_from_config`) rebuild them from head_config.json:
single_label a classification head (softmax over its labels), multi_label a classification
head with ``multilabel=True`` (head type ``multilabel_classification``: sigmoid per label,
BCE loss), regression a classification head with one label (MSE loss; its one logit is the
predicted value).
"""

from __future__ import annotations

from typing import Any

CARD_SCORES = {
    "single_label": ("accuracy", "f1_macro", "f1"),
    "multi_label": ("f1_macro", "f1_micro", "accuracy"),
    "regression": ("pearson", "spearman", "mse"),
}


def add_head(model: Any, key: str, label_names: list[str], task: str) -> None:
    id2label = dict(enumerate(label_names))
    if task == "regression":
        model.add_classification_head(key, num_labels=1, id2label={0: label_names[0]})
        return
    model.add_classification_head(
        key, num_labels=len(label_names), id2label=id2label, multilabel=task == "multi_label"
    )


def fold_target_scale(model: Any, key: str, scale: tuple[float, float] | None) -> None:
    """Make the head output raw targets: its last linear layer predicted (y - mean) / std, so
    W <- W * std and b <- b * std + mean. Exact; serving then reads the value directly."""
    if scale is None:
        return
    import torch

    mean, std = scale
    last = [m for m in model.heads[key].modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(std)
        last.bias.mul_(std).add_(mean)


def head_fields(config: Any, prepared: Any, details: dict[str, Any]) -> dict[str, Any]:
    """The manifest's task, thresholds (multi-label: per label index, tuned on the eval
    split at the best step) and text_pair."""
    thresholds = None
    if prepared.task == "multi_label":
        tuned = details.get("thresholds") or [0.5] * len(prepared.label_names)
        thresholds = {i: float(t) for i, t in enumerate(tuned)}
    return {
        "task": prepared.task,
        "thresholds": thresholds,
        "text_pair": config.text_pair_column is not None,
    }


def final_metrics(
    train: dict[str, Any], evaluation: dict[str, Any], prepared: Any, details: dict[str, Any]
) -> dict[str, float]:
    """The best evaluation's scores (the task's), eval/train loss and speed; multi-label adds
    each label's F1 as ``f1/<label>``."""
    scores = {
        k.removeprefix("eval_"): float(v)
        for k, v in evaluation.items()
        if k.removeprefix("eval_") in (*CARD_SCORES[prepared.task], "loss")
        and isinstance(v, int | float)
    }
    out = {k: v for k, v in scores.items() if k != "loss"}
    out.update(
        eval_loss=float(evaluation["eval_loss"]),
        train_loss=float(train.get("train_loss", float("nan"))),
        train_runtime_s=float(train["train_runtime"]),
        train_samples_per_s=float(train["train_samples_per_second"]),
    )
    for name, f1 in zip(prepared.label_names, details.get("per_label") or [], strict=False):
        out[f"f1/{name}"] = float(f1)
    return out
