"""Classification metrics (accuracy, macro-F1) in numpy, and the Trainer hook that uses them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    preds, gold = np.asarray(predictions), np.asarray(labels)
    if gold.size == 0:
        raise ValueError("no examples to score")
    return float((preds == gold).mean())


def f1_macro(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> float:
    """Unweighted mean of per-class F1 over all `num_labels` classes.

    A class that never occurs and is never predicted is left out of the mean (as scikit-learn
    does with ``labels`` unset), so a binary eval set of one class is not punished for it.
    """
    preds, gold = np.asarray(predictions), np.asarray(labels)
    if gold.size == 0:
        raise ValueError("no examples to score")
    scores = []
    for cls in range(num_labels):
        tp = int(((preds == cls) & (gold == cls)).sum())
        fp = int(((preds == cls) & (gold != cls)).sum())
        fn = int(((preds != cls) & (gold == cls)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def classification_metrics(
    predictions: Sequence[int], labels: Sequence[int], num_labels: int
) -> dict[str, float]:
    return {
        "accuracy": accuracy(predictions, labels),
        "f1_macro": f1_macro(predictions, labels, num_labels),
    }


def trainer_metrics(num_labels: int) -> Callable[[Any], dict[str, float]]:
    """A `compute_metrics` for transformers.Trainer (logits -> argmax -> metrics)."""

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        return classification_metrics(np.argmax(logits, axis=-1), labels, num_labels)

    return compute
