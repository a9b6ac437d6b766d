"""Dataset loading and checks: formats, splits, columns, labels, sampling, tokenising."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import TrainConfig
from training.data import Columns, check_data, encode, prepare_data, sample
from training.errors import TrainingError
from training.validation import validate_config


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        import csv

        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows(labels: list, n: int = 4) -> list[dict]:
    return [{"text": f"text {i} {label}", "label": label} for i in range(n) for label in labels]


def config(dataset: Path | str, **overrides) -> TrainConfig:
    return TrainConfig(name="demo", dataset=str(dataset), **{"eval_split": None, **overrides})


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_string_labels_become_sorted_names_and_ids(tmp_path, tokenizer):
    data = write_rows(tmp_path / "d.jsonl", rows(["pos", "neg", "neutral"]))
    prepared = prepare_data(config(data, eval_fraction=0.25), tokenizer)
    assert prepared.label_names == ["neg", "neutral", "pos"]
    assert len(prepared.train) + len(prepared.eval) == 12
    assert set(prepared.train["labels"]) | set(prepared.eval["labels"]) == {0, 1, 2}
    assert {"input_ids", "attention_mask", "labels"} <= set(prepared.train.column_names)


def test_given_label_names_fix_the_order(tmp_path, tokenizer):
    data = write_rows(tmp_path / "d.csv", rows(["pos", "neg"]))
    checked = check_data(config(data, label_names=["pos", "neg"]))
    assert checked.label_names == ["pos", "neg"]
    columns = Columns("text", "label")
    encoded = encode(checked.train, tokenizer, columns=columns, names=["pos", "neg"], max_length=32)
    expected = [0 if label == "pos" else 1 for label in checked.train["label"]]
    assert encoded["labels"] == expected


def test_integer_labels_get_generic_names_and_parquet_loads(tmp_path):
    data = write_rows(tmp_path / "d.parquet", rows([0, 1, 2]))
    assert check_data(config(data)).label_names == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_tokenising_truncates_to_max_length(tmp_path, tokenizer):
    long_rows = [{"text": "good " * 200, "label": i % 2} for i in range(10)]
    data = write_rows(tmp_path / "d.jsonl", long_rows)
    prepared = prepare_data(config(data, max_length=16), tokenizer)
    assert max(len(ids) for ids in prepared.train["input_ids"]) == 16


@pytest.mark.parametrize(
    ("labels", "names", "message"),
    [
        ([0, 1, 2], ["neg", "pos"], "has label 2, outside 0..1 for the 2 configured labels"),
        (["a", "b", "c"], ["a", "b"], "has 3 distinct labels but only 2 label names"),
        (["a", "z"], ["a", "b"], "labels not in the label set"),
    ],
)
def test_labels_outside_the_label_set_are_refused(tmp_path, labels, names, message):
    data = write_rows(tmp_path / "d.jsonl", rows(labels))
    with pytest.raises(TrainingError) as info:
        check_data(config(data, label_names=names))
    assert message in info.value.message
    assert info.value.code == "too_many_labels"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([True, False], "holds values of type bool"),  # fractions: regression (test_tasks)
        ([1, None], "has missing values"),
        ([0, 0], "only one label"),
        ([-1, 1], "negative label -1"),
    ],
)
def test_bad_label_values(tmp_path, values, message):
    data = write_rows(tmp_path / "d.jsonl", rows(values))
    with pytest.raises(TrainingError, match=message):
        check_data(config(data))


def test_eval_split_labels_must_fit_training_labels(tmp_path):
    write_rows(tmp_path / "ds" / "train.jsonl", rows(["neg", "pos"]))
    write_rows(tmp_path / "ds" / "test.jsonl", rows(["neg", "meh"]))
    with pytest.raises(TrainingError, match="in the eval split has labels not in the label set"):
        check_data(config(tmp_path / "ds", eval_split="test"))


def test_unknown_column_lists_the_available_ones(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", [{"sentence": "x", "y": 1}, {"sentence": "z", "y": 0}])
    with pytest.raises(TrainingError) as info:
        check_data(config(data, label_column="y"))
    assert "unknown column 'text'" in info.value.message
    assert "available columns: sentence, y" in info.value.message
    assert info.value.code == "unknown_column"


@pytest.mark.parametrize(
    ("name", "content"), [("e.jsonl", ""), ("e.jsonl", "\n\n"), ("e.csv", "text,label\n")]
)
def test_empty_dataset(tmp_path, name, content):
    data = tmp_path / name
    data.write_text(content)
    for check in (lambda: validate_config(config(data)), lambda: check_data(config(data))):
        with pytest.raises(TrainingError, match="is empty") as info:
            check()
        assert info.value.code == "empty_dataset"


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(TrainingError, match="dataset file not found") as info:
        validate_config(config(tmp_path / "nope.jsonl"))
    assert info.value.code == "dataset_not_found"
    (tmp_path / "d.txt").write_text("x\n")
    with pytest.raises(TrainingError, match=r"unsupported dataset file type '\.txt'"):
        validate_config(config(tmp_path / "d.txt"))


def test_missing_eval_split_says_what_exists(tmp_path, keyword_dir):
    data = write_rows(tmp_path / "d.jsonl", rows([0, 1]))
    with pytest.raises(
        TrainingError, match=r"split 'validation' not found .* available: train .*none"
    ):
        validate_config(config(data, eval_split="validation"))
    validate_config(config(data, eval_split="test"))  # the default: a carved part instead
    with pytest.raises(
        TrainingError, match=r"split 'validation' not found .* available: test, train"
    ):
        validate_config(config(keyword_dir, eval_split="validation"))
    validate_config(config(keyword_dir, eval_split="test"))  # the folder's own split: fine
    validate_config(config(data, eval_split=str(keyword_dir / "test.jsonl")))  # a file: fine


def test_held_out_split_follows_the_seed(keyword_jsonl):
    def eval_texts(seed):
        return sorted(check_data(config(keyword_jsonl, seed=seed, eval_fraction=0.2)).eval["text"])

    assert len(eval_texts(1)) == 120
    assert eval_texts(1) == eval_texts(1)
    assert eval_texts(1) != eval_texts(2)


def test_sample_shuffles_label_sorted_files(tmp_path):
    sorted_rows = [{"text": f"p{i}", "label": 1} for i in range(50)]
    sorted_rows += [{"text": f"n{i}", "label": 0} for i in range(50)]
    checked = check_data(config(write_rows(tmp_path / "d.jsonl", sorted_rows)))
    subset = sample(checked.train, 20, seed=0)
    assert len(subset) == 20 and set(subset["label"]) == {0, 1}


def test_hub_dataset_offline_is_a_clear_error():
    with pytest.raises(
        TrainingError, match=r"cannot load dataset 'amazon_polarity' .* hub"
    ) as info:
        check_data(config("amazon_polarity"))
    assert info.value.code == "dataset_not_found"


def test_data_roots_and_hub_policy(tmp_path):
    data = write_rows(tmp_path / "inside" / "d.jsonl", rows([0, 1]))
    validate_config(config(data), data_roots=[tmp_path / "inside"])
    with pytest.raises(TrainingError, match="outside the allowed data roots") as info:
        validate_config(config(data), data_roots=[tmp_path / "elsewhere"])
    assert info.value.code == "dataset_forbidden"
    outside = write_rows(tmp_path / "elsewhere" / "test.jsonl", rows([0, 1]))
    with pytest.raises(TrainingError, match="outside the allowed data roots"):
        validate_config(config(data, eval_split=str(outside)), data_roots=[tmp_path / "inside"])
    with pytest.raises(TrainingError, match="hub datasets are not allowed"):
        validate_config(config("amazon_polarity"), allow_hub=False)


@pytest.mark.parametrize("name", ["text", "csv", "json", "parquet"])
def test_builtin_loader_names_are_not_datasets(tmp_path, monkeypatch, name):
    """`load_dataset("text")` would read the files of the current directory."""
    (tmp_path / "keys.txt").write_text("KEY admin\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrainingError, match="builtin loader") as info:
        check_data(config(name, eval_split=None, text_column="text", label_column="text"))
    assert info.value.code == "dataset_forbidden" and "KEY" not in info.value.message
    with pytest.raises(TrainingError, match="builtin loader"):
        validate_config(config(name))
