"""Defaults that train well per task (issue 30): the label set from the whole labelled data
before the eval part is carved, a single file trains with the CLI's defaults, the recipe and
the selection metric of each inferred task."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters_store import AdapterStore
from tests.support.task_data import multi_label_rows, pair_rows, regression_rows
from tests.support.tiny import keyword_dataset, write_jsonl
from tests.training.conftest import run_cli
from training.config import TrainConfig
from training.data import check_data
from training.metrics import select_metric
from training.recipes import TASK_RECIPES
from training.trainer import train_adapter

SPLIT = {"eval_split": "none", "eval_fraction": 0.2, "seed": 3}


def _with_rare_label(path: Path, rows: list[dict], column: str, rare) -> Path:
    """`rows` written to `path` with `rare` as the label of one row of the carved eval part
    (the carve depends on the row count and the seed only, not on the labels)."""
    write_jsonl(path, rows)
    config = TrainConfig(name="probe", dataset=str(path), label_column=column, **SPLIT)
    held_out = check_data(config).eval[0]["text"]
    rows = [{**r, column: rare} if r["text"] == held_out else r for r in rows]
    return write_jsonl(path, rows)


@pytest.mark.parametrize(
    ("rows", "column", "rare"),
    [
        (multi_label_rows(100, seed=7), "labels", ["relief"]),
        (
            [{**r, "label": ["neg", "pos"][r["label"]]} for r in keyword_dataset(100, seed=7)],
            "label",
            "rare",
        ),
    ],
    ids=["multi_label", "single_label"],
)
def test_a_rare_label_only_in_the_carved_eval_part_trains(
    tmp_path, tiny_model_dir, rows, column, rare
):
    data = _with_rare_label(tmp_path / "d.jsonl", rows, column, rare)
    name = rare[0] if isinstance(rare, list) else rare
    config = TrainConfig(
        name="rare", base_model=str(tiny_model_dir), dataset=str(data), label_column=column,
        max_steps=2, max_length=32, **SPLIT,
    )  # fmt: skip
    checked = check_data(config)
    assert name in checked.label_names
    assert name not in str(checked.train[column])  # only in the eval part
    manifest = train_adapter(config, store=AdapterStore(tmp_path / "store"))
    assert name in manifest.labels.values()


def test_declared_label_names_win_even_for_a_class_without_rows(tmp_path):
    """A dataset that declares its labels (ClassLabel, as hub datasets do; here a parquet file
    written by `datasets`, which keeps the features) has them all, rows or not."""
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "neu", "pos"])})
    rows = {"text": [f"t {i}" for i in range(20)], "label": [0, 2] * 10}
    Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "d.parquet")
    config = TrainConfig(name="cl", dataset=str(tmp_path / "d.parquet"), **SPLIT)
    assert check_data(config).label_names == ["neg", "neu", "pos"]


def test_a_single_file_trains_with_the_clis_defaults(tmp_path, tiny_model_dir):
    data = write_jsonl(tmp_path / "one.jsonl", keyword_dataset(100, seed=4))
    store = tmp_path / "store"
    result = run_cli(
        "train", "--base-model", tiny_model_dir, "--dataset", data, "--name", "one",
        "--store", store, "--max-steps", "2", "--max-length", "32", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and "has no split 'test'" in notes[0] and "0.1 of 'train'" in notes[0]
    training = AdapterStore(store).get("one").manifest.training
    assert training["eval_split"] is None
    assert (training["train_samples"], training["eval_samples"]) == (90, 10)


def _recipe(tmp_path: Path, rows: list[dict], **fields) -> TrainConfig:
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    config = TrainConfig(name="r", dataset=str(data), **{"eval_split": "none", **fields})
    return config.filled(check_data(config).task)


@pytest.mark.parametrize(
    ("rows", "fields", "recipe", "epochs"),
    [
        (keyword_dataset(40), {}, "single_label", 3.0),
        (multi_label_rows(40), {"label_column": "labels"}, "multi_label", 3.0),
        (regression_rows(40), {"label_column": "score"}, "regression", 10.0),
        (pair_rows(40), {"text_pair_column": "text_pair"}, "pairs", 10.0),
        (
            regression_rows(40),
            {"label_column": "score", "recipe": "single_label"},
            "single_label",
            3.0,
        ),
        (pair_rows(40), {"text_pair_column": "text_pair", "recipe": "article"}, "article", 6.0),
    ],
)
def test_the_default_recipe_is_the_inferred_tasks(tmp_path, rows, fields, recipe, epochs):
    config = _recipe(tmp_path, rows, **fields)
    assert config.recipe == recipe and config.num_epochs == epochs
    if recipe in ("pairs", "regression"):
        assert config.warmup_ratio == TASK_RECIPES[recipe]["warmup_ratio"] == 0.1
    # the new task recipes batch texts of similar length; single_label stays issue 10's
    assert config.group_by_length is (recipe in ("multi_label", "pairs", "regression"))
    assert _recipe(tmp_path, rows, **fields, num_epochs=2).num_epochs == 2  # a flag wins
    assert _recipe(tmp_path, rows, **fields, group_by_length=False).group_by_length is False


@pytest.mark.parametrize(
    ("task", "pair", "labels", "metric"),
    [
        ("single_label", False, 2, "accuracy"),
        ("single_label", False, 3, "accuracy"),
        ("single_label", True, 2, "f1"),
        ("single_label", True, 3, "accuracy"),
        ("multi_label", False, 5, "f1_macro"),
        ("multi_label", True, 2, "f1_macro"),
        ("regression", True, 1, "pearson"),
        ("regression", False, 1, "pearson"),
    ],
)
def test_selection_metric_per_task(task, pair, labels, metric):
    assert select_metric(task, text_pair=pair, num_labels=labels) == metric


def test_binary_pairs_select_on_f1_with_the_pairs_recipe(tmp_path, tiny_model_dir):
    """The stored step is the best F1's; a job's live curves name the same metric."""
    from app.jobs.records_sqlite import SqliteJobStore
    from app.jobs.runner import ProgressWriter

    jobs = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job_id = jobs.create(adapter_name="para", config={"name": "para"}).id
    jobs.claim(job_id, worker="w", lease_s=60)
    writer = ProgressWriter(jobs, job_id, worker="w")
    data = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(80, seed=6))
    config = TrainConfig(
        name="para", base_model=str(tiny_model_dir), dataset=str(data), max_steps=4,
        eval_steps=2, max_length=32, text_pair_column="text_pair",
    )  # fmt: skip
    manifest = train_adapter(config, store=AdapterStore(tmp_path / "store"), progress=writer)
    training = manifest.training
    assert training["recipe"] == "pairs" and training["num_epochs"] == 10.0
    assert training["group_by_length"] is True  # the Trainer ran with length-grouped batches
    curves = training["curves"]
    assert curves["metric"] == "f1"
    best = max(curves["eval"], key=lambda p: p["f1"])  # ties keep the earlier step
    assert curves["best_step"] == best["step"]
    assert manifest.metrics["f1"] == best["f1"]
    live = jobs.get(job_id).progress["curves"]
    assert live["metric"] == "f1" and [p["step"] for p in live["eval"]] == [2, 4]
    jobs.close()


@pytest.mark.parametrize(
    ("names", "expected"),
    [(["train", "validation"], None), (["train", "test"], "test"), (None, "test")],
)
def test_a_hub_dataset_without_a_test_split_carves_the_eval_part(monkeypatch, names, expected):
    """The default eval split of a hub dataset that declares no `test` split is carved from
    train, as for a local file; unknown names (offline) keep `test` and its load says why."""
    import training.data as data

    monkeypatch.setattr(data, "hub_split_names", lambda dataset, config: names)
    config = TrainConfig(name="h", dataset="someone/reviews")
    assert data.eval_split_of(config) == expected
    assert data.eval_split_of(config.model_copy(update={"eval_split": "validation"})) == (
        "validation"
    )


def test_split_names_of_an_unknown_hub_dataset_offline_are_unknown():
    from training.loading import hub_split_names

    assert hub_split_names("nobody-here/no-such-dataset", None) is None  # HF_HUB_OFFLINE=1
