"""Learning curves and the best evaluated weights: two Trainer callbacks.

`CurveRecorder` keeps the per-step training loss and every evaluation's metrics, the shape
stored in the manifest (``training["curves"]``), drawn by `training.plots` and returned by
``GET /train-jobs/{id}``::

    {"metric": "accuracy", "best_step": 300, "stopped_early": false,
     "train": [{"step": 10, "epoch": 0.04, "loss": 0.69, "learning_rate": 0.0005}, ...],
     "eval": [{"step": 100, "epoch": 0.36, "loss": 0.41, "accuracy": 0.86,
               "f1_macro": 0.86}, ...]}

`BestKeeper` snapshots the trainable weights (adapter + head, or everything for full
fine-tuning) in memory whenever the eval metric improves, stops training after `patience`
evaluations without improvement, and puts the best snapshot back at the end: the stored
adapter is the best evaluated one, not the last, without writing Trainer checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

METRIC = "accuracy"
MAX_TRAIN_POINTS = 1000
# Eval scores kept per point, when the task has them (single-label: accuracy, f1_macro and,
# binary, f1; multi-label: f1_macro, f1_micro, accuracy = exact match; regression: pearson,
# spearman).
EVAL_SCORES = ("accuracy", "f1_macro", "f1", "f1_micro", "pearson", "spearman")


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def train_point(state: Any, logs: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": int(state.global_step),
        "epoch": round(float(state.epoch or 0.0), 4),
        "loss": _number(logs.get("loss")),
        "learning_rate": _number(logs.get("learning_rate")),
    }


def eval_point(state: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    point = {
        "step": int(state.global_step),
        "epoch": round(float(state.epoch or 0.0), 4),
        "loss": _number(metrics.get("eval_loss")),
        "accuracy": _number(metrics.get("eval_accuracy")),
        "f1_macro": _number(metrics.get("eval_f1_macro")),
    }
    point.update({k: _number(metrics[f"eval_{k}"]) for k in EVAL_SCORES if f"eval_{k}" in metrics})
    return point


def thin(points: list[dict[str, Any]], limit: int = MAX_TRAIN_POINTS) -> list[dict[str, Any]]:
    """At most `limit` points, evenly spaced, always keeping the last."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    return kept if kept[-1] is points[-1] else [*kept[: limit - 1], points[-1]]


class CurveRecorder(TrainerCallback):
    def __init__(self, metric: str = METRIC) -> None:
        self.metric = metric
        self.train: list[dict[str, Any]] = []
        self.eval: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        if logs and "loss" in logs:
            self.train.append(train_point(state, logs))
        return control

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> Any:
        point = eval_point(state, dict(metrics or {}))
        if not self.eval or self.eval[-1]["step"] != point["step"]:
            self.eval.append(point)
        return control

    def curves(self, *, best_step: int | None, stopped_early: bool) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "best_step": best_step,
            "stopped_early": stopped_early,
            "train": thin(self.train),
            "eval": list(self.eval),
        }


class BestKeeper(TrainerCallback):
    """Keep the best evaluated trainable weights; stop after `patience` evals without gain.

    patience 0 never stops early (the best weights are still kept). Ties keep the earlier step.
    No early stop before `min_step`: a run that sits at chance for its first evaluations (a
    slow start after warm-up) is not cut off there.
    """

    def __init__(
        self, model: Any, *, patience: int, min_step: int = 0, metric: str = METRIC,
        details: Callable[[], dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        self.model = model
        self.metric = metric  # eval_<metric>: higher is better
        self.details = details  # per-label extras of the latest evaluation (thresholds, ...)
        self.best_details: dict[str, Any] = {}
        self.patience = patience
        self.min_step = min_step  # no early stop before this step (slow starters)
        self.best_score: float | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, Any] | None = None
        self.stale = 0
        self.stopped_early = False
        self.evaluated_steps: set[int] = set()
        self._snapshot: dict[str, Any] | None = None

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> Any:
        metrics = dict(metrics or {})
        step = int(state.global_step)
        if step in self.evaluated_steps:
            return control
        self.evaluated_steps.add(step)
        score = _number(metrics.get(f"eval_{self.metric}"))
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score, self.best_step, self.best_metrics = score, step, metrics
            self.best_details = dict(self.details()) if self.details else {}
            self.stale = 0
            self._snapshot = self._take()
            return control
        self.stale += 1
        if self._may_stop(step, state.max_steps):
            self.stopped_early = True
            control.should_training_stop = True
        return control

    def _may_stop(self, step: int, max_steps: int) -> bool:
        ready = self.patience and self.stale >= self.patience
        return bool(ready) and self.min_step <= step < max_steps

    def _take(self) -> dict[str, Any]:
        return {
            name: param.detach().clone()
            for name, param in self.model.named_parameters()
            if param.requires_grad
        }

    def restore(self) -> bool:
        """Put the best snapshot's weights back; False when there is none."""
        if self._snapshot is None:
            return False
        import torch

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in self._snapshot.items():
                params[name].copy_(value)
        return True
