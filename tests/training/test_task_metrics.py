"""Multi-label and regression metrics against hand-computed values and scipy."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    f1_binary,
    multilabel_metrics,
    regression_metrics,
    task_metrics,
    tune_thresholds,
)


def test_multilabel_micro_macro_and_per_label_f1():
    gold = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    probs = np.array([[0.9, 0.2, 0.1], [0.6, 0.4, 0.1], [0.55, 0.8, 0.2], [0.1, 0.1, 0.1]])
    out = multilabel_metrics(probs, gold, 0.5)
    # label 0: tp 2 fp 1 -> 4/5; label 1: tp 1 fn 1 -> 2/3; label 2: never seen nor predicted
    assert out["per_label"] == pytest.approx([4 / 5, 2 / 3, 0.0])
    assert out["f1_macro"] == pytest.approx((4 / 5 + 2 / 3) / 2)  # unseen labels left out
    assert out["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert out["accuracy"] == pytest.approx(2 / 4)  # rows 0 and 3 exactly right
    # per-label thresholds: 0.58 for label 0 drops row 2's false positive, 0.3 catches row 1
    tuned = multilabel_metrics(probs, gold, np.array([0.58, 0.3, 0.5]))
    assert tuned["per_label"][:2] == pytest.approx([1.0, 1.0])


def test_thresholds_tuned_per_label_on_the_given_rows():
    rng = np.random.default_rng(0)
    gold = rng.random((400, 2)) < 0.3
    # label 0 is separable at 0.8, label 1 at 0.2
    probs = np.where(gold, [0.85, 0.25], [0.75, 0.15]) + rng.normal(0, 0.01, (400, 2))
    thresholds = tune_thresholds(probs, gold)
    assert 0.76 <= thresholds[0] <= 0.84 and 0.16 <= thresholds[1] <= 0.24
    assert multilabel_metrics(probs, gold, thresholds)["f1_macro"] == pytest.approx(1.0)
    # a label with no positive row keeps 0.5
    assert tune_thresholds(probs, np.zeros_like(gold))[0] == 0.5
    out = task_metrics("multi_label", np.log(probs / (1 - probs)), gold, num_labels=2)
    assert out["thresholds"] == pytest.approx(list(thresholds))


def test_regression_pearson_and_spearman_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(1)
    gold = rng.integers(0, 6, 200).astype(float)  # many ties, as STS-B has
    pred = gold + rng.normal(0, 1.5, 200)
    out = regression_metrics(pred, gold)
    assert out["pearson"] == pytest.approx(stats.pearsonr(pred, gold)[0], abs=1e-9)
    assert out["spearman"] == pytest.approx(stats.spearmanr(pred, gold)[0], abs=1e-9)
    assert out["mse"] == pytest.approx(float(np.mean((pred - gold) ** 2)))
    logits = pred.reshape(-1, 1)
    assert task_metrics("regression", logits, gold, num_labels=1)["pearson"] == out["pearson"]


def test_binary_f1_is_the_positive_class():
    assert f1_binary([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert f1_binary([0, 0], [0, 0]) == 0.0
