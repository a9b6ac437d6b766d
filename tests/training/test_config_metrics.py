"""TrainConfig validation and the metrics (pure, no model)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from training.config import TrainConfig
from training.metrics import accuracy, classification_metrics, f1_macro

BASE = {"name": "demo", "dataset": "data.jsonl"}


def test_defaults_and_learning_rate_per_method():
    config = TrainConfig(**BASE)
    assert config.adapter_config == "seq_bn" and config.max_length is None  # the recipe's
    assert config.filled().max_length == 128
    assert config.lr == 1e-3
    assert TrainConfig(**BASE, adapter_config="ia3").lr == 3e-3
    full = TrainConfig(**BASE, method="full", full_output_dir="out")
    assert full.lr == 3e-5
    assert TrainConfig(**BASE, recipe="article").lr == 1e-4
    assert TrainConfig(**BASE, learning_rate=3e-3).lr == 3e-3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Bad Name"}, "invalid adapter name"),
        ({"adapter_config": "nonsense"}, "unknown adapter config 'nonsense'"),
        ({"adapter_config": "{not json"}, "not valid JSON"),
        ({"adapter_config": "[1, 2]"}, "unknown adapter config"),
        ({"adapter_config": '{"architecture": "bogus"}'}, "unknown architecture 'bogus'"),
        ({"method": "full"}, "needs full_output_dir"),
        ({"label_names": ["only"]}, "at least 2 labels"),
        ({"label_names": ["a", "a"]}, "unique"),
        ({"max_length": 0}, "greater than or equal to 8"),
        ({"eval_fraction": 1.5}, "less than 1"),
        ({"epochs": 3}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_say_why(overrides, message):
    with pytest.raises(ValidationError) as info:
        TrainConfig(**{**BASE, **overrides})
    assert message in str(info.value)


def test_json_adapter_config_and_none_eval_split_accepted():
    config = TrainConfig(
        **BASE, adapter_config='{"architecture": "lora", "r": 4}', eval_split="none"
    )
    assert config.eval_split is None
    assert config.adapter_config_name is None  # the store infers the name from the saved files
    assert TrainConfig(**BASE, adapter_config="lora").adapter_config_name == "lora"


@pytest.mark.parametrize(
    "method", ["seq_bn", "double_seq_bn", "par_bn", "lora", "prefix_tuning", "ia3"]
)
def test_every_served_method_is_offered_by_name(method):
    assert TrainConfig(**BASE, adapter_config=method).adapter_config_name == method


def test_metrics_against_hand_computed_values():
    preds = [0, 0, 1, 1, 2, 0]
    gold = [0, 1, 1, 1, 2, 2]
    assert accuracy(preds, gold) == pytest.approx(4 / 6)
    # per class F1 = 2tp/(2tp+fp+fn): c0 tp1 fp2 fn0 -> 1/2; c1 tp2 fn1 -> 4/5; c2 tp1 fn1 -> 2/3
    assert f1_macro(preds, gold, 3) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # a class absent from both predictions and gold is left out of the mean
    assert f1_macro([0, 1], [0, 1], 5) == pytest.approx(1.0)
    assert classification_metrics([1, 1], [0, 1], 2) == {
        "accuracy": 0.5,
        "f1_macro": pytest.approx((0 + 2 / 3) / 2),
        "f1": pytest.approx(2 / 3),  # binary: F1 of class 1 (GLUE's MRPC F1)
    }
    with pytest.raises(ValueError):
        accuracy([], [])
