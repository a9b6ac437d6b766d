"""Classification metrics (accuracy, macro-F1) in numpy, and the Trainer hook that uses them."""

from __future__ import annotations

from collections.abc import Sequence
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


def f1_binary(predictions: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (GLUE's MRPC F1)."""
    preds, gold = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp, fp, fn = (preds & gold).sum(), (preds & ~gold).sum(), (~preds & gold).sum()
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def classification_metrics(
    predictions: Sequence[int], labels: Sequence[int], num_labels: int
) -> dict[str, float]:
    out = {
        "accuracy": accuracy(predictions, labels),
        "f1_macro": f1_macro(predictions, labels, num_labels),
    }
    if num_labels == 2:
        out["f1"] = f1_binary(predictions, labels)
    return out


# ---- multi-label ---------------------------------------------------------------------------
THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _f1_counts(preds: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-label true positives, false positives, false negatives (columns are labels)."""
    return (preds & gold).sum(0), (preds & ~gold).sum(0), (~preds & gold).sum(0)


def tune_thresholds(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per label, the grid threshold with the best F1 on these rows (0.5 where it never
    occurs: nothing to tune on)."""
    gold = np.asarray(gold) > 0.5
    best = np.full(gold.shape[1], 0.5)
    best_f1 = np.full(gold.shape[1], -1.0)
    for t in THRESHOLD_GRID:
        tp, fp, fn = _f1_counts(probs >= t, gold)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        better = (f1 > best_f1) & (gold.sum(0) > 0)
        best, best_f1 = np.where(better, t, best), np.where(better, f1, best_f1)
    return best


def multilabel_metrics(
    probs: np.ndarray, gold: np.ndarray, thresholds: np.ndarray | float = 0.5
) -> dict[str, Any]:
    """micro/macro F1 over labels, subset accuracy, and per-label F1 ('per_label')."""
    gold = np.asarray(gold) > 0.5
    if gold.size == 0:
        raise ValueError("no examples to score")
    preds = np.asarray(probs) >= np.asarray(thresholds)
    tp, fp, fn = _f1_counts(preds, gold)
    per_label = np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    seen = (tp + fp + fn) > 0
    micro = 2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1)
    return {
        "f1_micro": float(micro),
        "f1_macro": float(per_label[seen].mean()) if seen.any() else 0.0,
        "accuracy": float((preds == gold).all(axis=1).mean()),
        "per_label": [float(v) for v in per_label],
    }


# ---- regression ----------------------------------------------------------------------------
def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def regression_metrics(predictions: Sequence[float], targets: Sequence[float]) -> dict[str, float]:
    pred, gold = np.asarray(predictions, np.float64).ravel(), np.asarray(targets, np.float64)
    if gold.size == 0:
        raise ValueError("no examples to score")
    return {
        "pearson": pearson(pred, gold),
        "spearman": pearson(_ranks(pred), _ranks(gold)),
        "mse": float(((pred - gold) ** 2).mean()),
    }


# ---- per task ------------------------------------------------------------------------------
# The eval metric that picks the best step (and stops early), per task; see select_metric.
SELECT_METRIC = {"single_label": "accuracy", "multi_label": "f1_macro", "regression": "pearson"}


def select_metric(task: str, *, text_pair: bool = False, num_labels: int = 2) -> str:
    """The task's metric, except binary sentence pairs: the F1 of label 1 (GLUE's MRPC F1;
    paraphrase sets are skewed, so accuracy rewards the majority answer)."""
    if task == "single_label" and text_pair and num_labels == 2:
        return "f1"
    return SELECT_METRIC[task]


def task_metrics(
    task: str, logits: np.ndarray, gold: Any, *, num_labels: int,
    thresholds: Sequence[float] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The task's metrics; multi-label tunes thresholds on these rows unless given
    (returned as 'thresholds')."""
    logits = np.asarray(logits)
    if task == "regression":
        return regression_metrics(logits.reshape(len(logits), -1)[:, 0], gold)
    if task == "multi_label":
        probs = sigmoid(logits)
        tuned = np.asarray(thresholds) if thresholds is not None else tune_thresholds(probs, gold)
        return {**multilabel_metrics(probs, gold, tuned), "thresholds": [float(t) for t in tuned]}
    return classification_metrics(np.argmax(logits, axis=-1), gold, num_labels)


class TrainerMetrics:
    """A `compute_metrics` for transformers.Trainer; keeps the last per-label details
    (thresholds, per-label F1) apart from the scalar metrics the Trainer logs."""

    def __init__(
        self, task: str, num_labels: int, scale: tuple[float, float] | None = None
    ) -> None:
        self.task, self.num_labels, self.scale = task, num_labels, scale
        self.last_details: dict[str, Any] = {}

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, tuple):
            logits = logits[0]
        if self.scale is not None:  # standardised regression targets: back to their units
            mean, std = self.scale
            logits, labels = np.asarray(logits) * std + mean, np.asarray(labels) * std + mean
        out = task_metrics(self.task, logits, labels, num_labels=self.num_labels)
        self.last_details = {k: out.pop(k) for k in ("thresholds", "per_label") if k in out}
        return out


def trainer_metrics(
    num_labels: int, task: str = "single_label", scale: tuple[float, float] | None = None
) -> TrainerMetrics:
    """A `compute_metrics` for transformers.Trainer (logits -> the task's metrics)."""
    return TrainerMetrics(task, num_labels, scale)
