"""TrainConfig: everything one training run needs, validated up front with clear messages."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters_store import InvalidName, validate_name
from adapters_store.methods import DEFAULT_METHOD, METHOD_NAMES
from adapters_store.tasks import Task

# Adapter configs accepted by name (adapters_store.methods, the registry of methods).
NAMED_ADAPTER_CONFIGS = METHOD_NAMES
# The default eval split; a local dataset without it evaluates on a part carved from train.
DEFAULT_EVAL_SPLIT = "test"
RecipeName = Literal["default", "article", "single_label", "multi_label", "pairs", "regression"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    base_model: str = "roberta-base"
    dataset: str
    dataset_config: str | None = None
    train_split: str = "train"
    eval_split: str | None = DEFAULT_EVAL_SPLIT
    eval_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    text_column: str = "text"
    label_column: str = "label"
    label_names: list[str] | None = None
    # None: inferred from the label column (training.tasks); set: forced.
    task: Task | None = None
    text_pair_column: str | None = None  # sentence pairs: tokenised as (text, text_pair)
    adapter_config: str = DEFAULT_METHOD
    method: Literal["adapter", "full"] = "adapter"
    # None below: the recipe decides (training.recipes; `recipes.fill` resolves them).
    # default: the recipe of the task the data implies (training.recipes.recipe_for)
    recipe: RecipeName = "default"
    max_length: int | None = Field(None, ge=8, le=8192)
    num_epochs: float | None = Field(None, gt=0.0)
    max_steps: int | None = Field(None, ge=1)
    min_steps: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1, le=4096)
    eval_batch_size: int | None = Field(None, ge=1, le=4096)
    learning_rate: float | None = Field(None, gt=0.0, lt=1.0)
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0)
    lr_scheduler: Scheduler | None = None
    weight_decay: float | None = Field(None, ge=0.0, lt=1.0)
    eval_steps: int | None = Field(None, ge=0)
    early_stopping_patience: int | None = Field(None, ge=0)
    logging_steps: int | None = Field(None, ge=1)
    group_by_length: bool | None = None  # batches of texts of similar length (less padding)
    max_train_samples: int | None = Field(None, ge=1)
    max_eval_samples: int | None = Field(None, ge=1)
    seed: int = 42
    overwrite: bool = False
    full_output_dir: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return validate_name(value)
        except InvalidName as exc:
            raise ValueError(exc.message) from None

    @field_validator("base_model", "dataset", "text_column", "label_column")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("label_names")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if len(set(value)) != len(value):
            raise ValueError("label_names must be unique")
        if any(not str(v).strip() for v in value):
            raise ValueError("label_names must not contain empty names")
        return value

    @field_validator("adapter_config")
    @classmethod
    def _adapter_config(cls, value: str) -> str:
        parse_adapter_config(value)
        return value

    @field_validator("eval_split")
    @classmethod
    def _eval_split(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("text_pair_column")
    @classmethod
    def _pair_column(cls, value: str | None) -> str | None:
        return value if value is None or value.strip() else None

    @model_validator(mode="after")
    def _label_count(self) -> TrainConfig:
        if self.label_names is not None and len(self.label_names) < 2 and self.task != "regression":
            raise ValueError("label_names needs at least 2 labels (1: the target of regression)")
        return self

    @model_validator(mode="after")
    def _method(self) -> TrainConfig:
        if self.method == "full" and not self.full_output_dir:
            raise ValueError(
                "method 'full' needs full_output_dir: full fine-tuning weights are not an adapter "
                "and are saved outside the adapter store"
            )
        return self

    @property
    def lr(self) -> float:
        """The learning rate this run uses (the recipe's when unset)."""
        from training.recipes import recipe_values

        if self.learning_rate is not None:
            return self.learning_rate
        values = recipe_values(self.recipe, method=self.method, adapter_config=self.adapter_config)
        return float(values["learning_rate"])

    def filled(self, task: str | None = None) -> TrainConfig:
        """This config with every field left to the recipe set (see training.recipes); with
        the data's `task`, the `default` recipe becomes that task's."""
        from training.recipes import fill

        return fill(self, task)

    @property
    def adapter_config_name(self) -> str | None:
        """The config's name for named configs; None for a JSON config (the store infers it)."""
        return self.adapter_config if self.adapter_config in NAMED_ADAPTER_CONFIGS else None


def parse_adapter_config(value: str) -> str | dict[str, Any]:
    """A named config, or the dict of a JSON object string; ValueError otherwise.

    The JSON object is resolved with the adapters library (``AdapterConfig.load``), so unknown
    architectures and fields are refused here, before any training starts.
    """
    text = value.strip()
    if text in NAMED_ADAPTER_CONFIGS:
        return text
    if not text.startswith("{"):
        known = ", ".join(NAMED_ADAPTER_CONFIGS)
        raise ValueError(f"unknown adapter config {value!r}: use one of {known} or a JSON object")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"adapter config is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("adapter config JSON must be an object")
    _check_with_library(data)
    return data


def _check_with_library(data: dict[str, Any]) -> None:
    from adapters import AdapterConfig

    try:
        AdapterConfig.load(dict(data))
    except KeyError as exc:
        arch = exc.args[0] if exc.args else "?"
        raise ValueError(f"adapter config JSON names an unknown architecture {arch!r}") from None
    except Exception as exc:  # the library raises TypeError/ValueError for bad fields
        detail = exc.args[0] if exc.args else type(exc).__name__
        raise ValueError(f"adapter config JSON is not a valid adapters config: {detail}") from None
