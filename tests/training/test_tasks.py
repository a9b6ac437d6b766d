"""Training per task on the tiny RoBERTa: multi-label, regression and sentence pairs.

Each run checks what the store records (task, labels, thresholds, text_pair), that the head is
the adapters library's own (head_config.json), that the task's metrics are there, and that
evaluating the stored adapter again (training.predict) reproduces them on the same rows: the
stored thresholds are the ones the metrics were computed with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters_store import AdapterStore
from tests.support.task_data import MULTI_LABELS, multi_label_rows, pair_rows, regression_rows
from tests.support.tiny import write_jsonl
from training.config import TrainConfig
from training.data import Columns, check_data, load_labelled
from training.errors import TrainingError
from training.predict import evaluate, load_stored, predict
from training.trainer import train_adapter

LORA = '{"architecture": "lora", "r": 8, "alpha": 32}'


def _folder(root: Path, rows_fn) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "train.jsonl", rows_fn(240, seed=1))
    write_jsonl(root / "test.jsonl", rows_fn(80, seed=2))
    return root


def _train(tmp: Path, base: Path, data: Path, name: str, **fields):
    store = AdapterStore(tmp / "store")
    config = TrainConfig(
        name=name, base_model=str(base), dataset=str(data), max_length=32,
        adapter_config=LORA, learning_rate=1e-2, num_epochs=4, **fields,
    )  # fmt: skip
    return store, config, train_adapter(config, store=store)


def _rescore(store: AdapterStore, config: TrainConfig, manifest, pair: str | None = None):
    labels = [manifest.labels[i] for i in sorted(manifest.labels)]
    rows = load_labelled(config.dataset, split="test", task=manifest.task, names=labels,
                         columns=Columns("text", config.label_column, pair))  # fmt: skip
    loaded = load_stored(store, config.name)
    return loaded, rows, evaluate(loaded, rows.texts, rows.targets, pairs=rows.pairs)


@pytest.fixture(scope="module")
def multi(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("multi")
    data = _folder(tmp / "data", multi_label_rows)
    return _train(tmp, tiny_model_dir, data, "emo", label_column="labels")


def test_multi_label_is_inferred_with_tuned_thresholds_stored(multi):
    store, config, manifest = multi
    assert manifest.task == "multi_label" and not manifest.text_pair
    assert manifest.labels == dict(enumerate(MULTI_LABELS))  # sorted label strings
    assert sorted(manifest.thresholds) == [0, 1, 2]
    assert all(0.0 < t < 1.0 for t in manifest.thresholds.values())
    assert {"f1_micro", "f1_macro", "accuracy"} <= set(manifest.metrics)
    assert {f"f1/{name}" for name in MULTI_LABELS} <= set(manifest.metrics)
    head = json.loads((store.get("emo").path / "head_config.json").read_text())
    assert head["config"]["head_type"] == "multilabel_classification"
    assert manifest.training["curves"]["metric"] == "f1_macro"
    loaded, rows, again = _rescore(store, config, manifest)
    assert again["f1_macro"] == pytest.approx(manifest.metrics["f1_macro"], abs=1e-6)
    assert again["f1_micro"] == pytest.approx(manifest.metrics["f1_micro"], abs=1e-6)
    out = predict(loaded, rows.texts[:3])
    assert [sorted(o) for o in out] == [["labels", "scores"]] * 3
    assert all(set(o["labels"]) <= set(MULTI_LABELS) for o in out)


def test_regression_is_inferred_from_fractional_targets(tmp_path, tiny_model_dir):
    data = _folder(tmp_path / "data", regression_rows)
    store, config, manifest = _train(tmp_path, tiny_model_dir, data, "rate", label_column="score")
    assert manifest.task == "regression" and manifest.labels == {0: "score"}
    assert manifest.thresholds is None
    assert {"pearson", "spearman", "mse"} <= set(manifest.metrics)
    head = json.loads((store.get("rate").path / "head_config.json").read_text())
    assert head["config"]["head_type"] == "classification" and head["config"]["num_labels"] == 1
    loaded, rows, again = _rescore(store, config, manifest)
    assert again["pearson"] == pytest.approx(manifest.metrics["pearson"], abs=1e-5)
    assert again["spearman"] == pytest.approx(manifest.metrics["spearman"], abs=1e-5)
    # trained on standardised targets, stored with the scale folded into the head: the stored
    # head answers in the targets' units (the MSE is that of the training-time evaluation)
    mean, std = manifest.training["target_scale"]
    assert mean == pytest.approx(0.25 + 0.5 * 1.5, abs=0.2) and std > 0.3
    assert again["mse"] == pytest.approx(manifest.metrics["mse"], rel=1e-4)
    assert [sorted(o) for o in predict(loaded, rows.texts[:2])] == [["score"]] * 2


def test_sentence_pairs_are_tokenised_as_pairs(tmp_path, tiny_model_dir):
    data = _folder(tmp_path / "data", pair_rows)
    store, config, manifest = _train(tmp_path, tiny_model_dir, data, "para",
                                     text_pair_column="text_pair")  # fmt: skip
    assert manifest.task == "single_label" and manifest.text_pair
    assert {"accuracy", "f1", "f1_macro"} <= set(manifest.metrics)
    assert manifest.training["text_pair_column"] == "text_pair"
    loaded, rows, again = _rescore(store, config, manifest, "text_pair")
    assert again["accuracy"] == pytest.approx(manifest.metrics["accuracy"], abs=1e-6)
    assert again["f1"] == pytest.approx(manifest.metrics["f1"], abs=1e-6)
    # without the pair the inputs differ: the scores are not those of the pairs
    alone = evaluate(loaded, rows.texts, rows.targets)
    pairs = predict(loaded, rows.texts[:8], pairs=rows.pairs[:8], top_k_labels=2)
    singles = predict(loaded, rows.texts[:8], top_k_labels=2)
    assert pairs != singles and "accuracy" in alone


def _config(data: Path, **fields) -> TrainConfig:
    return TrainConfig(name="x", dataset=str(data), eval_split="none", **fields)


@pytest.mark.parametrize(
    ("rows", "column", "task", "expected"),
    [
        ([{"text": "a", "y": ["p", "q"]}, {"text": "b", "y": []}], "y", None, "multi_label"),
        ([{"text": "a", "y": [0, 2]}, {"text": "b", "y": [1]}], "y", None, "multi_label"),
        ([{"text": "a", "y": 0.5}, {"text": "b", "y": 2.0}], "y", None, "regression"),
        ([{"text": "a", "y": 1.0}, {"text": "b", "y": 0.0}], "y", None, "single_label"),
        ([{"text": "a", "y": 1}, {"text": "b", "y": 3}], "y", "regression", "regression"),
        ([{"text": "a", "y": "p"}, {"text": "b", "y": "q"}], "y", "multi_label", "multi_label"),
    ],
)
def test_task_inferred_or_forced(tmp_path, rows, column, task, expected):
    data = write_jsonl(tmp_path / "d.jsonl", rows * 10)
    checked = check_data(_config(data, label_column=column, task=task))
    assert checked.task == expected


@pytest.mark.parametrize(
    ("rows", "task", "message"),
    [
        ([{"text": "a", "y": [[1]]}, {"text": "b", "y": [[0]]}], None, "holds lists of lists"),
        ([{"text": "a", "y": {"k": 1}}, {"text": "b", "y": {"k": 0}}], None, "values of type"),
        ([{"text": "a", "y": 0.5}, {"text": "b", "y": 1.5}], "single_label", "fractional"),
        ([{"text": "a", "y": ["p"]}, {"text": "b", "y": ["q"]}], "regression", "holds lists"),
    ],
)
def test_unusable_label_shapes_name_the_column_and_the_shapes(tmp_path, rows, task, message):
    data = write_jsonl(tmp_path / "d.jsonl", rows * 10)
    with pytest.raises(TrainingError) as caught:
        check_data(_config(data, label_column="y", task=task))
    text = caught.value.message
    assert "label column 'y'" in text and message in text and "\n" not in text
    assert "lists of integers or strings (multi_label)" in text


def test_label_names_come_from_the_dataset_features():
    """A hub dataset declares its label names (ClassLabel): no label_names needed."""
    from datasets import ClassLabel, Dataset, Features, List, Value

    from training.labels import resolve_label_names
    from training.tasks import infer_task

    single = Dataset.from_dict(
        {"text": ["a", "b"], "label": [0, 1]},
        features=Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])}),
    )
    assert infer_task(single, "label") == "single_label"
    assert resolve_label_names(single, "label", None) == ["neg", "pos"]
    names = ["anger", "joy", "fear"]
    multi = Dataset.from_dict(
        {"text": ["a", "b"], "labels": [[0, 2], [1]]},
        features=Features({"text": Value("string"), "labels": List(ClassLabel(names=names))}),
    )
    assert infer_task(multi, "labels") == "multi_label"
    assert resolve_label_names(multi, "labels", None, "multi_label") == names


def test_model_card_of_a_multi_label_adapter(multi, tmp_path):
    from training.export import export_adapter

    store, _, manifest = multi
    out = export_adapter(store, "emo", tmp_path / "card")
    card = (out / "README.md").read_text()
    assert "multi-label classification head" in card
    threshold = manifest.thresholds[0]
    assert f"- 0: `negative` (threshold {threshold:g}, tuned on the eval split)" in card
    assert "logits.sigmoid()" in card and "| f1_micro |" in card
    assert (out / "learning_curves.png").is_file()
