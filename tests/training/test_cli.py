"""`python -m training` as a user runs it: a real subprocess each time."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from adapters_store import AdapterStore
from tests.training.conftest import run_cli

LEARN = [
    "--adapter-config", '{"architecture": "lora", "r": 8, "alpha": 32}',
    "--learning-rate", "1e-2", "--num-epochs", "15", "--max-length", "32",
]  # fmt: skip


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_model_dir, keyword_dir):
    """'kw' trained through the CLI (label names negative/positive): (store, train stdout)."""
    store = tmp_path_factory.mktemp("cli-store")
    png = store.parent / "kw-curves.png"
    result = run_cli(
        "train", "--base-model", tiny_model_dir, "--dataset", keyword_dir,
        "--text-column", "text", "--label-column", "label", "--name", "kw", "--store", store,
        "--label-names", "negative", "positive", "--no-progress", "--curves-png", png, *LEARN,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return store, result.stdout


def assert_png(path: Path) -> None:
    """A real PNG: the signature, and matplotlib decodes it to a 1000x400 RGBA image."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(str(path))
    assert pixels.shape == (400, 1000, 4)
    assert pixels[..., :3].std() > 0.05  # drawn lines and text, not a blank canvas


@pytest.fixture(scope="module")
def cli_store(cli_run) -> Path:
    return cli_run[0]


def table(stdout: str) -> dict[str, str]:
    return dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in stdout.splitlines())


def test_eval_reproduces_the_training_accuracy(cli_store):
    manifest = AdapterStore(cli_store).get("kw").manifest
    result = run_cli("eval", "kw", "--dataset", manifest.training["dataset"], "--store", cli_store)
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert rows["samples"] == "200" and rows["dataset"].endswith("[test]")
    # eval on the held-out split reproduces the accuracy recorded at training time
    assert float(rows["accuracy"]) == pytest.approx(manifest.metrics["accuracy"], abs=1e-4)
    assert manifest.metrics["accuracy"] >= 0.78


def test_train_writes_the_learning_curve_png(cli_run):
    store, stdout = cli_run
    png = Path(table(stdout)["learning curves"])
    assert png == (store.parent / "kw-curves.png").resolve()
    assert_png(png)
    curves = AdapterStore(store).get("kw").manifest.training["curves"]
    assert len(curves["train"]) >= 20 and len(curves["eval"]) >= 3


def test_train_prints_a_summary_table(cli_run):
    store, stdout = cli_run
    rows = table(stdout)
    assert rows["name"] == "kw (version 1)" and rows["method"] == "adapter"
    assert rows["adapter config"] == "lora" and rows["labels"] == "negative, positive"
    assert rows["train / eval samples"] == "600 / 200"
    manifest = AdapterStore(store).get("kw").manifest
    assert rows["accuracy"] == f"{manifest.metrics['accuracy']:.4f}"
    assert set(rows) >= {"f1_macro", "eval_loss", "train time", "samples/s", "saved size"}
    assert rows["saved to"] == str(store / "kw")


def test_predict_prints_pipeline_shaped_json(cli_store):
    texts = ["a wonderful film with superb acting", "the service was dreadful and awful"]
    result = run_cli("predict", "kw", *texts, "--store", cli_store, "--top-k", "2")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2
    for preds in lines:
        assert [set(p) for p in preds] == [{"label", "score"}] * 2
        assert {p["label"] for p in preds} == {"negative", "positive"}
        assert preds[0]["score"] >= preds[1]["score"]
        assert sum(p["score"] for p in preds) == pytest.approx(1.0, abs=1e-5)
    assert [preds[0]["label"] for preds in lines] == ["positive", "negative"]


def test_top_k_shapes():
    import numpy as np

    from training.predict import top_k

    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    labels = ["a", "b", "c"]
    assert top_k(probs, labels, 1) == [
        [{"label": "b", "score": 0.7}],
        [{"label": "a", "score": 0.5}],
    ]
    assert [p["label"] for p in top_k(probs, labels, 5)[1]] == ["a", "c", "b"]


def test_export_writes_a_hub_ready_folder(cli_store, tmp_path):
    out = tmp_path / "export"
    result = run_cli("export", "kw", "--out", out, "--store", cli_store)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "README.md", "adapter.safetensors", "adapter_config.json", "head_config.json",
        "manifest.json", "model_head.safetensors", "learning_curves.png",
    ])  # fmt: skip
    manifest = AdapterStore(cli_store).get("kw").manifest
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: adapter-transformers")
    assert f"| accuracy | {manifest.metrics['accuracy']:.4g} |" in card
    assert manifest.base_model.id in card and manifest.training["dataset"] in card
    assert "- 0: `negative`" in card and "load_adapter(" in card
    assert "![Learning curves](learning_curves.png)" in card  # the card embeds the PNG
    assert_png(out / "learning_curves.png")
    again = run_cli("export", "kw", "--out", out, "--store", cli_store)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_model_card_usage_snippet_runs(cli_store, tmp_path):
    out = tmp_path / "export"
    assert run_cli("export", "kw", "--out", out, "--store", cli_store).returncode == 0
    card = (out / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(snippet.replace("path/to/this/folder", str(out)), namespace)  # our own generated card
    assert tuple(namespace["probs"].shape) == (1, 2)
    assert namespace["labels"] == {0: "negative", 1: "positive"}


def test_push_needs_a_token_and_reports_upload_failure(cli_store):
    no_token = run_cli("push", "kw", "--repo-id", "me/kw", "--store", cli_store)
    assert no_token.returncode == 2
    assert no_token.stderr.strip() == "error: push needs a Hugging Face token: pass --token"
    offline = run_cli("push", "kw", "--repo-id", "me/kw", "--token", "hf_x", "--store", cli_store)
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    assert offline.stderr.startswith("error: upload to 'me/kw' failed")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory) -> Path:
    rows = [{"text": f"t{i}", "label": i % 3} for i in range(30)]
    return write_jsonl(tmp_path_factory.mktemp("three") / "three.jsonl", rows)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "dataset file not found: "),
        ("column", "unknown column 'sentence' in split 'train' of "),
        ("labels", "has label 2, outside 0..1 for the 2 configured labels"),
        ("empty", " is empty"),
        ("taken", "adapter 'kw' already exists (use overwrite to replace it)"),
        ("config", "--adapter-config: unknown adapter config 'lorax'"),
        ("name", "--name: invalid adapter name 'Bad Name'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    case, message, cli_store, tiny_model_dir, keyword_jsonl, three_labels, tmp_path
):
    (tmp_path / "empty.jsonl").write_text("")
    dataset = {"missing": tmp_path / "nope.jsonl", "labels": three_labels,
               "empty": tmp_path / "empty.jsonl"}.get(case, keyword_jsonl)  # fmt: skip
    extra = {
        "column": ["--text-column", "sentence"],
        "labels": ["--label-names", "neg", "pos"],
        "config": ["--adapter-config", "lorax"],
        "name": ["--name", "Bad Name"],
    }.get(case, [])
    store = cli_store if case == "taken" else tmp_path / "store"
    result = run_cli(
        "train", "--base-model", tiny_model_dir, "--dataset", dataset, "--name", "kw",
        "--store", store, "--eval-split", "none", *extra,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    if case == "taken":
        assert AdapterStore(cli_store).get("kw").manifest.version == 1


def test_unknown_adapter_is_a_clear_error(cli_store):
    missing = run_cli("predict", "nope", "text", "--store", cli_store)
    assert missing.returncode == 2 and missing.stderr.strip() == "error: adapter 'nope' not found"
