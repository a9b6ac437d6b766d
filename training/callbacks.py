"""Trainer callbacks: progress reports and cooperative cancellation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from training.errors import TrainingCancelled

Progress = Callable[[dict[str, Any]], None]
ShouldStop = Callable[[], bool]

_NOISY = "There are adapters available but none are activated"


class _DropPerForwardWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _NOISY not in record.getMessage()


def silence_adapters_warning() -> None:
    """Drop the adapters library's per-forward 'none are activated' warning (idempotent)."""
    logger = logging.getLogger("adapters.model_mixin")
    if not any(isinstance(f, _DropPerForwardWarning) for f in logger.filters):
        logger.addFilter(_DropPerForwardWarning())


class ReportCallback(TrainerCallback):
    """Calls `progress` at every logging step and evaluation; checks `should_stop` every step.

    A stop request ends training at the end of the current step (the caller then raises
    TrainingCancelled); during evaluation it raises TrainingCancelled at once.
    """

    def __init__(
        self, progress: Progress | None, should_stop: ShouldStop | None, metric: str | None = None
    ) -> None:
        self.progress = progress
        self.should_stop = should_stop
        self.metric = metric  # the eval metric that picks the best step (eval events carry it)
        self.cancelled = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
            control.should_training_stop = True
            control.should_evaluate = False
            control.should_save = False
        return control

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
            raise TrainingCancelled("training was cancelled during evaluation")
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        if self.progress is not None and logs and "loss" in logs:
            event = _event(state, "train", loss=logs["loss"])
            self.progress({**event, "learning_rate": logs.get("learning_rate")})
        return control

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any
    ) -> Any:
        if self.progress is not None:
            loss = (metrics or {}).get("eval_loss")
            event = _event(state, "eval", loss=loss, eval=dict(metrics or {}))
            self.progress({**event, "metric": self.metric} if self.metric else event)
        return control


def _event(state: Any, phase: str, *, loss: Any = None, eval: Any = None) -> dict[str, Any]:
    return {
        "step": int(state.global_step),
        "total_steps": int(state.max_steps),
        "epoch": float(state.epoch or 0.0),
        "loss": None if loss is None else float(loss),
        "eval": eval,
        "phase": phase,
    }
