"""Quality table: each adapter method (and full fine-tuning) x data set, MiniLM, default recipe.

    python -m bench.quality [--datasets amazon_polarity_subsets,rotten_tomatoes,...]
        [--methods seq_bn,lora,...,full] [--max-train N] [--max-test N]
        [--epochs E | --max-steps S] [--threads 1] [--cross] [--out results.json]

Every cell trains with `training.train_adapter` and nothing but the data set, the method and
the seed set (the default recipe decides the rest; --epochs/--max-steps/--max-train override it
for smoke runs and are printed). The recipe's evaluations (best step, early stopping) use a
selection split that is never the one scored: rotten_tomatoes selects on validation and is
scored on test; sst2 holds out 10% of train and is scored on validation (GLUE's test labels
are not public); amazon_polarity_subsets and the Blitzer domains hold out 10% of train and are
scored on their test file. Per cell: test accuracy, macro-F1, train time, samples/s,
trainable parameters, saved size, and the best/total steps. With --cross, each Blitzer adapter
is also scored on the other Blitzer domains' test rows (cross-domain accuracy). Each
evaluation during training prints a progress line (step, selection accuracy) to stderr.

Data sets: rotten_tomatoes, sst2, amazon_polarity_subsets, and ``blitzer:<domain>`` (books,
dvd, electronics, kitchen_housewares), read from ../shared/data (never copied into the repo;
the Blitzer domains are split into a temporary folder); goemotions, stsb, mrpc: bench/quality_tasks.

"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters_store.methods import METHOD_NAMES
from bench.common import DATA, bootstrap, minilm_dir
from bench.quality_tasks import TASK_DATASETS, reporter, run_task_cell, task_table

DATASETS = ("rotten_tomatoes", "sst2", "amazon_polarity_subsets", "blitzer:books",
            "blitzer:kitchen_housewares")  # fmt: skip
METHODS = (*METHOD_NAMES, "full")  # every registered method, and full fine-tuning
LABELS = ["negative", "positive"]


@dataclass(frozen=True)
class DataSpec:
    name: str
    dataset: str  # a folder or a file
    eval_split: str | None  # None: hold out 10% of train for selection
    test: str  # the scored file


def data_spec(name: str, work: Path, data_root: Path) -> DataSpec:
    if name == "rotten_tomatoes":
        folder = data_root / name
        return DataSpec(name, str(folder), "validation", str(folder / "test.jsonl"))
    if name == "sst2":
        folder = data_root / name
        return DataSpec(name, str(folder / "train.jsonl"), None, str(folder / "validation.jsonl"))
    if name == "amazon_polarity_subsets":
        folder = data_root / name
        return DataSpec(name, str(folder / "train.jsonl"), None, str(folder / "test.jsonl"))
    if name.startswith("blitzer:"):
        domain = name.split(":", 1)[1]
        train, test = (_domain_file(data_root, split, domain, work) for split in ("train", "test"))
        return DataSpec(name, str(train), None, str(test))
    raise SystemExit(f"unknown data set {name!r}: use {', '.join(DATASETS)}")


def _domain_file(data_root: Path, split: str, domain: str, work: Path) -> Path:
    out = work / f"blitzer-{domain}-{split}.jsonl"
    rows = [json.loads(line) for line in (data_root / "amazon_blitzer_multidomain" /
            f"{split}.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]  # fmt: skip
    kept = [{"text": r["text"], "label": r["label"]} for r in rows if r.get("domain") == domain]
    if not kept:
        raise SystemExit(f"no Blitzer rows for domain {domain!r}")
    out.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    return out


def cell_config(args: argparse.Namespace, spec: DataSpec, method: str, work: Path) -> Any:
    from training.config import TrainConfig

    full = method == "full"
    fields: dict[str, Any] = {
        "name": "cell",
        "base_model": str(minilm_dir()),
        "dataset": spec.dataset,
        "eval_split": spec.eval_split,
        "label_names": LABELS,
        "method": "full" if full else "adapter",
        "adapter_config": "seq_bn" if full else method,
        "seed": args.seed,
        "full_output_dir": str(work / f"full-{time.monotonic_ns()}") if full else None,
    }
    overrides = {"max_train_samples": args.max_train, "max_eval_samples": args.max_eval,
                 "num_epochs": args.epochs,
                 "max_steps": args.max_steps, "learning_rate": args.lr}  # fmt: skip
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**fields)


def test_rows(test_file: str, max_test: int | None, seed: int) -> tuple[list[str], list[int]]:
    from training.data import Columns, load_labelled

    rows = load_labelled(test_file, split="train", columns=Columns("text", "label"),
                         names=LABELS, max_samples=max_test, seed=seed)  # fmt: skip
    return rows.texts, rows.targets


def load_scorer(config: Any, store: Any) -> Any:
    """A function texts, gold -> metrics for the trained cell (adapter or full model)."""
    from training.predict import evaluate, load_stored

    if config.method != "full":
        loaded = load_stored(store, config.name, device="cpu")
        return lambda texts, gold: evaluate(loaded, texts, gold, batch_size=64)
    return _full_scorer(config)


def _full_scorer(config: Any) -> Any:
    import numpy as np
    import torch

    from training.metrics import classification_metrics
    from training.modeling import load_base, model_key

    base = load_base(config.full_output_dir)
    base.model.active_head = model_key(config.name)
    base.model.eval()

    def run(texts: list[str], gold: list[int]) -> dict[str, float]:
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                enc = base.tokenizer(texts[start : start + 64], truncation=True, padding=True,
                                     max_length=config.filled().max_length,
                                     return_tensors="pt")  # fmt: skip
                chunks.append(base.model(**enc).logits.float().numpy())
        preds = np.concatenate(chunks).argmax(axis=-1)
        return classification_metrics(preds, gold, len(LABELS))

    return run


def run_cell(args: argparse.Namespace, spec: DataSpec, method: str, work: Path) -> dict[str, Any]:
    from adapters_store import AdapterStore
    from training.trainer import train_adapter

    store = AdapterStore(work / "store")
    config = cell_config(args, spec, method, work)
    start = time.perf_counter()
    manifest = train_adapter(config, store=store, device="cpu", progress=reporter(spec, method))
    wall = time.perf_counter() - start
    print(json.dumps({"trained": spec.name, "method": method, "wall_s": wall,
                      "metrics": manifest.metrics, "curves": manifest.training["curves"]}),
          flush=True)  # fmt: skip
    scorer = load_scorer(config, store)
    texts, gold = test_rows(spec.test, args.max_test, args.seed)
    tested = scorer(texts, gold)
    training, metrics = manifest.training, manifest.metrics
    saved = manifest.size_bytes if method != "full" else _folder_weights(config.full_output_dir)
    row = {
        "dataset": spec.name, "method": method, "test_accuracy": tested["accuracy"],
        "test_f1_macro": tested["f1_macro"], "test_samples": len(gold),
        "select_accuracy": metrics["accuracy"], "train_time_s": metrics["train_runtime_s"],
        "train_samples_per_s": metrics["train_samples_per_s"], "wall_s": wall,
        "trainable_params": training["trainable_params"], "saved_bytes": saved,
        "learning_rate": training["learning_rate"], "best_step": training["best_step"],
        "steps_run": training["steps_run"], "total_steps": training["total_steps"],
        "stopped_early": training["stopped_early"], "train_samples": training["train_samples"],
        "loadavg": os.getloadavg(),
    }  # fmt: skip
    row["cross"] = _cross(args, spec, scorer, work) if args.cross else {}
    return row


def _folder_weights(folder: str) -> int:
    return sum((Path(folder) / f).stat().st_size for f in ("model.safetensors", "config.json"))


def _cross(args: argparse.Namespace, spec: DataSpec, scorer: Any, work: Path) -> dict[str, float]:
    if not spec.name.startswith("blitzer:"):
        return {}
    out = {}
    for domain in ("books", "dvd", "electronics", "kitchen_housewares"):
        if spec.name == f"blitzer:{domain}":
            continue
        test = _domain_file(args.data_root, "test", domain, work)
        texts, gold = test_rows(str(test), args.max_test, args.seed)
        out[domain] = scorer(texts, gold)["accuracy"]
    return out


COLUMNS = (
    ("data set", "dataset", "{}"), ("method", "method", "{}"),
    ("test acc", "test_accuracy", "{:.4f}"), ("test F1", "test_f1_macro", "{:.4f}"),
    ("n test", "test_samples", "{}"), ("train s", "train_time_s", "{:.0f}"),
    ("samples/s", "train_samples_per_s", "{:.1f}"), ("trainable", "trainable_params", "{:,}"),
    ("saved MB", "saved_bytes", "{:.2f}"), ("lr", "learning_rate", "{:g}"),
    ("best/run/total steps", "steps", "{}"),
)  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " | cross-domain acc |",
             "|" + "---|" * (len(COLUMNS) + 1)]  # fmt: skip
    for row in rows:
        view = {**row, "saved_bytes": row["saved_bytes"] / 1e6,
                "steps": f"{row['best_step']}/{row['steps_run']}/{row['total_steps']}"}  # fmt: skip
        cells = [fmt.format(view[key]) for _, key, fmt in COLUMNS]
        cross = ", ".join(f"{d} {a:.3f}" for d, a in row.get("cross", {}).items()) or "-"
        lines.append("| " + " | ".join(cells) + f" | {cross} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-train", type=int, default=None, help="subsample the train split")
    parser.add_argument("--max-eval", type=int, default=None, help="subsample the selection split")
    parser.add_argument("--max-test", type=int, default=1000, help="scored rows (seeded sample)")
    parser.add_argument("--epochs", type=float, default=None, help="override the recipe")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe")
    parser.add_argument("--lr", type=float, default=None, help="override the recipe")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--cross", action="store_true", help="score Blitzer cells cross-domain")
    parser.add_argument("--data-root", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None, help="append results as JSON lines")
    parser.add_argument("--keep", type=Path, default=None, help="work folder kept on failure")
    return parser.parse_args(argv)


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    """A temporary folder, or with --keep one under `keep` that is never removed."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix="quality-", dir=keep))
        return
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    args = parse_args(argv)
    import datasets
    import torch

    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    started, rows, task_rows = time.perf_counter(), [], []
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"load {os.getloadavg()}; overrides: max_train={args.max_train} epochs={args.epochs} "
          f"max_steps={args.max_steps} lr={args.lr}", flush=True)  # fmt: skip
    for name in args.datasets.split(","):
        for method in args.methods.split(","):
            with _workdir(args.keep) as tmp:
                if name in TASK_DATASETS:
                    row = run_task_cell(args, name, method, tmp)
                else:
                    row = run_cell(args, data_spec(name, tmp, args.data_root), method, tmp)
            (task_rows if name in TASK_DATASETS else rows).append(row)
            print(json.dumps(row), flush=True)
            if args.out is not None:
                with args.out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows) if rows else "", task_table(task_rows) if task_rows else "", sep="\n")
    print(f"# wall {time.perf_counter() - started:.0f} s, load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
