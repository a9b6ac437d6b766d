"""Datasets for training and evaluation: load, check columns and labels, split, tokenise.

A dataset is a Hugging Face hub id (loaded with ``datasets.load_dataset``; never a builtin
loader name such as ``text`` or ``csv``, which would read the current directory), a local
``.jsonl/.json/.csv/.parquet`` file (one split, called ``train``), or a local directory whose
files ``<split>.<ext>`` are its splits (e.g. ``train.jsonl`` + ``test.jsonl``); see
training.loading. The label column decides the task (training.tasks); a text-pair column makes
the inputs sentence pairs. Every problem a user can cause is raised as a TrainingError with a
message that says what to change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.config import DEFAULT_EVAL_SPLIT, TrainConfig
from training.errors import TrainingError
from training.labels import check_label_values, label_values, resolve_label_names
from training.loading import (  # noqa: F401  (re-exported: the module's public names)
    BUILDERS,
    builtin_loaders,
    check_data_roots,
    check_hub_id,
    hub_split_names,
    is_empty_file,
    load_split,
    local_splits,
    looks_local,
    missing_split,
)
from training.tasks import Task, flat_values, infer_task, multi_hot

logger = logging.getLogger(__name__)


@dataclass
class Columns:
    text: str
    label: str
    text_pair: str | None = None

    @property
    def all(self) -> list[str]:
        return [self.text, self.label] + ([self.text_pair] if self.text_pair else [])


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset: input_ids, attention_mask, ..., labels
    eval: Any
    label_names: list[str]
    task: Task = "single_label"
    # regression: the train targets' (mean, std); the model learns (y - mean) / std
    target_scale: tuple[float, float] | None = None
    eval_split: str | None = None  # the eval split read; None: carved from train


def columns_of(config: TrainConfig) -> Columns:
    return Columns(config.text_column, config.label_column, config.text_pair_column)


# ---- columns and labels --------------------------------------------------------------------
def check_columns(ds: Any, columns: Columns, where: str) -> None:
    for column in columns.all:
        if column not in ds.column_names:
            available = ", ".join(ds.column_names)
            raise TrainingError(
                f"unknown column {column!r} in {where}; available columns: {available}",
                code="unknown_column",
            )


def check_eval_labels(ds: Any, column: str, names: list[str], task: Task, where: str) -> None:
    """The eval split's labels must have the training data's shape and fit its label set."""
    if infer_task(ds, column, task) != task:
        raise TrainingError(f"label column {column!r} in {where} does not hold {task} labels")
    if task == "regression":
        return
    values = flat_values(ds, column) if task == "multi_label" else label_values(ds, column)
    check_label_values(values, names, column=column, where=where)


# ---- preparing ----------------------------------------------------------------------------
def sample(ds: Any, limit: int | None, seed: int) -> Any:
    """A seeded shuffle, then the first `limit` rows (files may be sorted by label)."""
    ds = ds.shuffle(seed=seed)
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def label_encoder(names: list[str], task: Task, scale: tuple[float, float] | None = None) -> Any:
    """value -> training target: a class id, a multi-hot float vector, or a float
    (standardised with `scale` = (mean, std) when given)."""
    index = {name: i for i, name in enumerate(names)}
    if task == "regression":
        mean, std = scale or (0.0, 1.0)
        return lambda v: (float(v) - mean) / std
    if task == "multi_label":
        return lambda v: multi_hot(v, index, len(names))
    return lambda v: index[v] if isinstance(v, str) else int(v)


def texts_of(batch: dict[str, list], column: str | None) -> list[str] | None:
    return None if column is None else ["" if t is None else str(t) for t in batch[column]]


def encode(
    ds: Any, tokenizer: Any, *, columns: Columns, names: list[str], max_length: int,
    task: Task = "single_label", scale: tuple[float, float] | None = None,
) -> Any:  # fmt: skip
    """Tokenise the text (and pair) columns, truncated to max_length; targets in 'labels'."""
    target = label_encoder(names, task, scale)

    def _batch(batch: dict[str, list]) -> dict[str, list]:
        texts, pairs = texts_of(batch, columns.text), texts_of(batch, columns.text_pair)
        out = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        out["labels"] = [target(v) for v in batch[columns.label]]
        return dict(out)

    return ds.map(_batch, batched=True, remove_columns=ds.column_names, desc="Tokenising")


def load_train(config: TrainConfig) -> Any:
    """The whole training split (columns checked), before any eval part is carved from it."""
    train = load_split(config.dataset, config.train_split, dataset_config=config.dataset_config)
    check_columns(train, columns_of(config), f"split {config.train_split!r} of {config.dataset}")
    return train


def eval_split_of(config: TrainConfig) -> str | None:
    """The eval split this run reads: None (a part carved from train) when eval_split is None,
    or when it is the default `test` and the data (local, or a hub dataset whose split names
    can be read) has no such split."""
    split = config.eval_split
    if split != DEFAULT_EVAL_SPLIT:
        return split
    if looks_local(config.dataset):
        return split if split in local_splits(config.dataset) else None
    names = hub_split_names(config.dataset, config.dataset_config)  # None: not known
    return split if names is None or split in names else None


def raw_splits(config: TrainConfig, train: Any | None = None) -> tuple[Any, Any]:
    """(train, eval) raw splits; eval is carved from train (`eval_fraction`, seeded) when the
    run reads no eval split (see `eval_split_of`)."""
    train = load_train(config) if train is None else train
    if eval_split_of(config) is None:
        parts = train.train_test_split(test_size=config.eval_fraction, seed=config.seed)
        return parts["train"], parts["test"]
    eval_ds = _eval_source(config)
    where = f"eval split {config.eval_split!r} of {config.dataset}"
    check_columns(eval_ds, columns_of(config), where)
    return train, eval_ds


def _eval_source(config: TrainConfig) -> Any:
    assert config.eval_split is not None
    path = Path(config.eval_split).expanduser()
    if looks_local(config.dataset) and path.suffix.lower() in BUILDERS:
        return load_split(config.eval_split, "train")
    return load_split(config.dataset, config.eval_split, dataset_config=config.dataset_config)


@dataclass
class CheckedData:
    train: Any  # raw datasets.Dataset splits, columns and labels checked
    eval: Any
    label_names: list[str]
    task: Task = "single_label"
    eval_split: str | None = None  # what was read; None: carved from train
    notes: list[str] = field(default_factory=list)  # lines for the user (CLI: on stderr)


def check_data(config: TrainConfig) -> CheckedData:
    """Load the raw splits and check columns and labels (no tokenizer, no model needed).

    The task and the label set come from the whole training split before an eval part is
    carved from it, so a rare label that lands only in the carved part is still known."""
    whole = load_train(config)
    task = infer_task(whole, config.label_column, config.task)
    names = resolve_label_names(whole, config.label_column, config.label_names, task)
    train, eval_ds = raw_splits(config, whole)
    check_eval_labels(eval_ds, config.label_column, names, task, "the eval split")
    split = eval_split_of(config)
    notes = [] if split is not None or config.eval_split is None else [_carved_note(config)]
    for note in notes:
        logger.info(note)
    return CheckedData(train, eval_ds, names, task, split, notes)


def _carved_note(config: TrainConfig) -> str:
    return (
        f"{config.dataset} has no split {config.eval_split!r}: evaluating on "
        f"{config.eval_fraction:g} of {config.train_split!r} held out with seed {config.seed} "
        "(--eval-split / --eval-fraction choose another)"
    )


def prepare_data(
    config: TrainConfig, tokenizer: Any, checked: CheckedData | None = None
) -> PreparedData:
    """Tokenised train/eval datasets with 'labels' targets, the label names and the task."""
    checked = checked or check_data(config)
    train = sample(checked.train, config.max_train_samples, config.seed)
    eval_ds = sample(checked.eval, config.max_eval_samples, config.seed)
    scale = target_scale(train[config.label_column]) if checked.task == "regression" else None
    kwargs = {"columns": columns_of(config), "names": checked.label_names,
              "max_length": config.max_length, "task": checked.task, "scale": scale}  # fmt: skip
    return PreparedData(
        train=encode(train, tokenizer, **kwargs),
        eval=encode(eval_ds, tokenizer, **kwargs),
        label_names=checked.label_names,
        task=checked.task,
        target_scale=scale,
        eval_split=checked.eval_split,
    )


def target_scale(values: list[float]) -> tuple[float, float]:
    """(mean, std) of regression targets: the head learns standardised targets (a 0-5 score
    from a zero-initialised output takes many steps just to reach the mean), and the scale is
    folded back into the head's last layer before it is saved (training.heads)."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    std = float(array.std())
    return float(array.mean()), std if std > 0 else 1.0


@dataclass
class Labelled:
    texts: list[str]
    pairs: list[str] | None
    targets: list[Any]  # class ids, multi-hot vectors or floats, per the task

    def __iter__(self) -> Any:
        """Unpacks as (texts, targets), as load_labelled's tuple did before pairs existed."""
        return iter((self.texts, self.targets))


def load_labelled(
    dataset: str,
    *,
    split: str,
    columns: Columns,
    names: list[str],
    task: Task = "single_label",
    dataset_config: str | None = None,
    max_samples: int | None = None,
    seed: int = 42,
) -> Labelled:
    """Texts (and pairs) and targets of one split, checked against a fixed label set."""
    ds = load_split(dataset, split, dataset_config=dataset_config)
    check_columns(ds, columns, f"split {split!r} of {dataset}")
    check_eval_labels(ds, columns.label, names, task, f"split {split!r}")
    ds = sample(ds, max_samples, seed)
    target = label_encoder(names, task)
    return Labelled(
        texts=texts_of(ds.to_dict(), columns.text) or [],
        pairs=texts_of(ds.to_dict(), columns.text_pair),
        targets=[target(v) for v in ds[columns.label]],
    )
