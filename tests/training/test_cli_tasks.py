"""The CLI with task data: the curves PNG's place, label shapes it cannot use, a multi-label
run evaluated again, and sentence pairs predicted."""

from __future__ import annotations

import json
import re

import pytest

from adapters_store import AdapterStore
from tests.support.task_data import multi_label_rows, pair_rows
from tests.support.tiny import write_jsonl
from tests.training.conftest import run_cli

QUICK = ["--max-steps", "4", "--max-length", "32", "--no-progress", "--eval-split", "none"]


def table(stdout: str) -> dict[str, str]:
    return dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in stdout.splitlines())


def test_curves_png_goes_beside_the_adapter_never_into_the_cwd(
    tmp_path, tiny_model_dir, keyword_jsonl
):
    cwd, store = tmp_path / "cwd", tmp_path / "store"
    cwd.mkdir()
    args = ["train", "--base-model", tiny_model_dir, "--dataset", keyword_jsonl, *QUICK]
    result = run_cli(*args, "--name", "kw", "--store", store, cwd=cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(cwd.iterdir()) == []  # nothing written where the user stood
    stored = AdapterStore(store).get("kw")
    png = stored.path / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "learning_curves.png" in stored.manifest.files  # hashed with the adapter
    assert table(result.stdout)["learning curves"] == str(png)
    AdapterStore(store).verify("kw")

    chosen = tmp_path / "plots" / "kw.png"
    again = run_cli(*args, "--name", "kw2", "--store", store, "--plot", chosen, cwd=cwd)
    assert again.returncode == 0, again.stderr[-2000:]
    assert chosen.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(cwd.iterdir()) == []
    assert table(again.stdout)["learning curves"] == str(chosen.resolve())


@pytest.mark.parametrize(
    ("label", "found"),
    [([["joy"], ["anger"]], "lists of lists"), ({"joy": 1}, "values of type")],
)
def test_unusable_label_shape_is_one_line_naming_column_and_shapes(
    tmp_path, tiny_model_dir, label, found
):
    data = write_jsonl(
        tmp_path / "bad.jsonl", [{"text": f"t {i}", "emotion": label} for i in range(20)]
    )
    result = run_cli(
        "train", "--base-model", tiny_model_dir, "--dataset", data, "--name", "x",
        "--store", tmp_path / "store", "--label-column", "emotion", *QUICK,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: label column 'emotion' holds ")
    assert found in lines[0]
    assert "lists of integers or strings (multi_label)" in lines[0]


def test_multi_label_and_pairs_through_the_cli(tmp_path, tiny_model_dir):
    store = tmp_path / "store"
    emo = write_jsonl(tmp_path / "emo.jsonl", multi_label_rows(120, seed=4))
    base = ["train", "--base-model", tiny_model_dir, "--store", store, *QUICK]
    result = run_cli(*base, "--dataset", emo, "--name", "emo", "--label-column", "labels")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = table(result.stdout)
    assert rows["task"] == "multi_label" and {"f1_macro", "f1_micro"} <= set(rows)
    evaluated = run_cli("eval", "emo", "--dataset", emo, "--store", store)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert {"f1_macro", "f1_micro", "accuracy"} <= set(table(evaluated.stdout))

    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(120, seed=5))
    result = run_cli(*base, "--dataset", pairs, "--name", "para", "--text-pair-column", "text_pair")
    assert result.returncode == 0, result.stderr[-2000:]
    assert table(result.stdout)["task"] == "single_label (sentence pairs)"
    assert AdapterStore(store).get("para").manifest.text_pair
    out = run_cli("predict", "para", "a good day", "--pair", "a great film", "--store", store)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [p["label"] for p in json.loads(out.stdout)] in (["LABEL_0"], ["LABEL_1"])


def test_help_lists_the_task_flags():
    result = run_cli("train", "--help")
    assert "--task {single_label,multi_label,regression}" in result.stdout
    assert "--text-pair-column" in result.stdout and "--plot PATH" in result.stdout
