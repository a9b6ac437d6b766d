"""Training recipes: the settings a run uses for every field the caller left unset.

The recipes:

- ``default``: the recipe of the task the data implies (`recipe_for`): ``single_label`` for one
  label per row, ``multi_label`` for label lists, ``regression`` for fractional targets and
  ``pairs`` for sentence pairs (of one label per row; regression pairs take ``regression``).
  The filled config records the one chosen. Naming one of them forces it.
- ``single_label``: per adapter method, chosen from measurements on this project's data
  (MiniLM, Amazon polarity; see docs/training-recipe.md) and the method papers. A higher
  learning rate than full fine-tuning, linear decay after a short warm-up, a few epochs but at
  least ``min_steps`` optimiser steps (small data sets get enough updates), evaluation about
  ten times per run, early stopping after ``patience`` evaluations without a better score,
  and the best evaluated weights kept, not the last. ``multi_label`` is the same settings
  with length-grouped batches.
- ``pairs`` and ``regression``: the same with 10 epochs and a 10% warm-up. At 3 epochs the
  best step of MRPC and STS-B was always the last one (the curve still climbing); measured at
  real size in docs/training-recipe.md.
- ``multi_label``, ``pairs`` and ``regression`` batch texts of similar length together
  (``group_by_length``: the Trainer's length-grouped sampler), which cuts the padding a random
  batch carries (MiniLM tokens, batches of 16: STS-B 2.2x its mean length, GoEmotions 1.8x,
  MRPC 1.4x) and so the CPU time of a run; ``single_label`` keeps issue 10's measured recipe
  (random batches).
- ``article``: AdapterHub's ``notebooks/01_Adapter_Training.ipynb`` (roberta-base, Rotten
  Tomatoes) exactly: lr 1e-4, 6 epochs, batch 32 (train and eval), logging every 200 steps,
  max_length 80, a ``seq_bn`` adapter, the Trainer's other defaults (linear decay, no warm-up,
  no weight decay), no evaluation during training and no early stopping.

The metric that picks the best step follows the task, not the recipe
(`training.metrics.select_metric`). Every field set on the TrainConfig wins over the recipe;
`fill` returns the config with the blanks filled in, and `Schedule` the step-dependent numbers
(total steps, eval interval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from adapters_store.methods import (
    CUSTOM_LEARNING_RATE,
    DEFAULT_METHOD,
    FULL_LEARNING_RATE,
    METHODS,
)

RECIPE_NAMES = ("default", "article", "single_label", "multi_label", "pairs", "regression")
# Per task recipe: what it changes on top of the common settings (see the module doc).
_GROUPED: dict[str, Any] = {"group_by_length": True}
_LONGER: dict[str, Any] = {**_GROUPED, "num_epochs": 10.0, "warmup_ratio": 0.1}
TASK_RECIPES: dict[str, dict[str, Any]] = {
    "single_label": {},
    "multi_label": _GROUPED,
    "pairs": _LONGER,
    "regression": _LONGER,
}
# Fields a recipe fills when the config leaves them None.
RECIPE_FIELDS = (
    "max_length", "num_epochs", "batch_size", "eval_batch_size",
    "learning_rate", "warmup_ratio", "lr_scheduler", "weight_decay", "min_steps",
    "eval_steps", "early_stopping_patience", "logging_steps", "group_by_length",
)  # fmt: skip

_COMMON: dict[str, Any] = {
    "max_length": 128,
    "num_epochs": 3.0,
    "batch_size": 16,
    "eval_batch_size": 64,
    "warmup_ratio": 0.06,
    "lr_scheduler": "linear",
    "weight_decay": 0.0,
    "min_steps": 400,
    "eval_steps": None,  # None: about EVALS_PER_RUN evaluations per run
    "early_stopping_patience": 3,
    "logging_steps": None,  # None: about 100 loss points per run
    "group_by_length": False,
}
# Learning rates of the default recipe, per method (see docs/training-recipe.md for sources).
# Each adapter method's rate is declared with the method (adapters_store.methods).
DEFAULT_LR = {
    **{name: method.learning_rate for name, method in METHODS.items()},
    "custom": CUSTOM_LEARNING_RATE,  # a JSON adapter config
    "full": FULL_LEARNING_RATE,
}
ARTICLE: dict[str, Any] = {  # and adapter_config "seq_bn", TrainConfig's default
    "max_length": 80,
    "num_epochs": 6.0,
    "batch_size": 32,
    "eval_batch_size": 32,
    "learning_rate": 1e-4,
    "warmup_ratio": 0.0,
    "lr_scheduler": "linear",
    "weight_decay": 0.0,
    "min_steps": 0,
    "eval_steps": 0,  # 0: evaluate once, after training (as the notebook does)
    "early_stopping_patience": 0,  # 0: never stop early
    "logging_steps": 200,
    "group_by_length": False,
}
EVALS_PER_RUN = 10
LOSS_POINTS_PER_RUN = 100


def recipe_for(task: str | None, *, text_pair: bool = False) -> str:
    """The recipe `default` stands for, for data of `task` (None: not known yet)."""
    if task == "regression":
        return "regression"
    if text_pair:
        return "pairs"
    return task or "single_label"


def recipe_values(recipe: str, *, method: str, adapter_config: str | None) -> dict[str, Any]:
    """The recipe's value for every RECIPE_FIELDS field (method: 'adapter' or 'full');
    `default` gives the single-label recipe's (the task decides in `fill`)."""
    if recipe == "article":
        return dict(ARTICLE)
    if recipe == "default":
        recipe = "single_label"
    if recipe not in TASK_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: use one of {', '.join(RECIPE_NAMES)}")
    values = {**_COMMON, **TASK_RECIPES[recipe]}
    kind = "full" if method == "full" else _lr_key(adapter_config or DEFAULT_METHOD)
    values["learning_rate"] = DEFAULT_LR[kind]
    if method == "full":
        values["weight_decay"] = 0.01  # BERT/RoBERTa fine-tuning practice
    return values


def _lr_key(adapter_config: str) -> str:
    return adapter_config if adapter_config in DEFAULT_LR else "custom"


def fill(config: Any, task: str | None = None) -> Any:
    """`config` (a TrainConfig) with every recipe field it left None set from its recipe;
    `default` resolves to the recipe of `task` (and of sentence pairs), recorded as `recipe`."""
    recipe = config.recipe
    if recipe == "default" and task is not None:
        recipe = recipe_for(task, text_pair=config.text_pair_column is not None)
    values = recipe_values(recipe, method=config.method, adapter_config=config.adapter_config)
    update = {k: v for k, v in values.items() if getattr(config, k) is None}
    if config.num_epochs is not None and config.min_steps is None:
        update["min_steps"] = 0  # epochs given explicitly: exactly that many
    return config.model_copy(update={**update, "recipe": recipe})


@dataclass(frozen=True)
class Schedule:
    """Step counts of a filled config for `train_size` training examples."""

    steps_per_epoch: int
    total_steps: int
    max_steps: int  # TrainingArguments.max_steps: -1 when the epochs decide
    eval_steps: int  # 0: no evaluation during training
    logging_steps: int
    patience: int  # 0: no early stopping
    min_stop_step: int  # no early stop before this step (half of the run)

    @property
    def evaluates(self) -> bool:
        return self.eval_steps > 0


def schedule(config: Any, train_size: int) -> Schedule:
    """Total optimiser steps (max_steps, or epochs but at least min_steps) and the intervals."""
    per_epoch = max(1, math.ceil(train_size / config.batch_size))
    by_epochs = math.ceil(config.num_epochs * per_epoch)
    if config.max_steps:
        total = max_steps = config.max_steps
    else:
        total = max(by_epochs, config.min_steps or 0)
        max_steps = total if total > by_epochs else -1
    eval_steps = config.eval_steps
    if eval_steps is None:
        eval_steps = max(1, math.ceil(total / EVALS_PER_RUN))
    # about LOSS_POINTS_PER_RUN loss points, and at least every 50 steps: each log is also a
    # progress report (a job's step count)
    logging = config.logging_steps or max(1, min(50, total // LOSS_POINTS_PER_RUN))
    patience = config.early_stopping_patience if eval_steps else 0
    return Schedule(per_epoch, total, max_steps, eval_steps, logging, patience, total // 2)
