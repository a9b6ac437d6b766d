"""Recipes: the article preset resolves to the notebook's TrainingArguments exactly; the
default recipe per method, its minimum step count, and every flag as an override."""

from __future__ import annotations

import pytest

from training.config import TrainConfig
from training.recipes import DEFAULT_LR, schedule
from training.trainer import training_arguments

BASE = {"name": "demo", "dataset": "data.jsonl"}
RT_TRAIN = 8530  # rotten_tomatoes train rows: the notebook's 1602 steps = 6 x ceil(8530 / 32)


def resolved(tmp_path, train_size: int, **fields):
    config = TrainConfig(**BASE, **fields).filled()
    plan = schedule(config, train_size)
    return config, plan, training_arguments(config, plan, str(tmp_path))


def test_article_preset_is_the_notebooks_training_arguments(tmp_path):
    # AdapterHub notebooks/01_Adapter_Training.ipynb: TrainingArguments(learning_rate=1e-4,
    # num_train_epochs=6, per_device_train_batch_size=32, per_device_eval_batch_size=32,
    # logging_steps=200, output_dir=..., overwrite_output_dir=True,
    # remove_unused_columns=False); seq_bn adapter; tokenizer max_length=80.
    config, plan, args = resolved(tmp_path, RT_TRAIN, recipe="article")
    assert config.adapter_config == "seq_bn" and config.max_length == 80
    assert args.learning_rate == 1e-4
    assert args.num_train_epochs == 6 and args.max_steps == -1
    assert args.per_device_train_batch_size == 32 and args.per_device_eval_batch_size == 32
    assert args.logging_steps == 200
    assert args.overwrite_output_dir is True and args.remove_unused_columns is False
    assert args.output_dir == str(tmp_path)
    # everything else is the Trainer's default, as in the notebook
    assert str(args.lr_scheduler_type.value) == "linear"
    assert args.warmup_ratio == 0.0 and args.warmup_steps == 0 and args.weight_decay == 0.0
    assert str(args.eval_strategy.value) == "no"  # the notebook evaluates after training only
    assert plan.total_steps == 1602 and plan.patience == 0


def test_article_preset_keeps_explicit_overrides(tmp_path):
    _, _, args = resolved(tmp_path, RT_TRAIN, recipe="article", learning_rate=3e-4)
    assert args.learning_rate == 3e-4 and args.num_train_epochs == 6


@pytest.mark.parametrize(
    "method", ["seq_bn", "double_seq_bn", "par_bn", "lora", "ia3", "prefix_tuning"]
)
def test_default_recipe_per_method(tmp_path, method):
    config, plan, args = resolved(tmp_path, 4500, adapter_config=method)
    assert args.learning_rate == DEFAULT_LR[method] == config.lr
    assert str(args.lr_scheduler_type.value) == "linear" and args.warmup_ratio == 0.06
    assert args.per_device_train_batch_size == 16 and config.max_length == 128
    assert plan.total_steps == 3 * 282 and args.max_steps == -1  # 3 epochs of 4,500 rows
    assert str(args.eval_strategy.value) == "steps" and args.eval_steps == 85  # ~10 evals
    assert plan.patience == 3 and args.logging_steps == 8  # ~100 loss points


def test_long_runs_still_report_every_50_steps(tmp_path):
    _, plan, args = resolved(tmp_path, 4500, max_steps=100_000)
    assert args.logging_steps == 50 and plan.eval_steps == 10_000


def test_small_data_gets_the_minimum_number_of_steps(tmp_path):
    config, plan, args = resolved(tmp_path, 300)  # 19 steps per epoch: 57 in 3 epochs
    assert config.min_steps == 400 and plan.total_steps == 400 and args.max_steps == 400
    # epochs given explicitly: exactly that many, no minimum
    _, plan, args = resolved(tmp_path, 300, num_epochs=1)
    assert plan.total_steps == 19 and args.max_steps == -1


def test_every_recipe_field_is_an_override(tmp_path):
    overrides = {
        "learning_rate": 2e-4, "warmup_ratio": 0.1, "lr_scheduler": "cosine",
        "weight_decay": 0.05, "batch_size": 8, "eval_batch_size": 16, "max_steps": 50,
        "eval_steps": 5, "early_stopping_patience": 7, "logging_steps": 3, "max_length": 64,
    }  # fmt: skip
    config, plan, args = resolved(tmp_path, 4500, **overrides)
    assert args.learning_rate == 2e-4 and args.warmup_ratio == 0.1 and args.weight_decay == 0.05
    assert str(args.lr_scheduler_type.value) == "cosine"
    assert args.per_device_train_batch_size == 8 and args.per_device_eval_batch_size == 16
    assert args.max_steps == 50 and args.eval_steps == 5 and args.logging_steps == 3
    assert plan.patience == 7 and config.max_length == 64


def test_full_fine_tuning_recipe(tmp_path):
    config, _, args = resolved(tmp_path, 4500, method="full", full_output_dir="out")
    assert config.method == "full"
    assert args.learning_rate == 3e-5 and args.weight_decay == 0.01


def test_evaluation_off_means_no_early_stopping(tmp_path):
    _, plan, args = resolved(tmp_path, 4500, eval_steps=0)
    assert str(args.eval_strategy.value) == "no" and plan.patience == 0


def test_group_by_length_reaches_the_trainer_and_the_cli(tmp_path):
    from training.cli import build_parser

    _, _, args = resolved(tmp_path, 4500, recipe="pairs")
    assert args.group_by_length is True
    _, _, args = resolved(tmp_path, 4500)  # single_label: random batches, as measured
    assert args.group_by_length is False
    parse = build_parser().parse_args
    base = ["train", "--name", "n", "--dataset", "d.jsonl", "--store", "s"]
    assert parse([*base, "--no-group-by-length"]).group_by_length is False
    assert parse([*base, "--group-by-length"]).group_by_length is True
    assert not hasattr(parse(base), "group_by_length")  # unset: the recipe decides
