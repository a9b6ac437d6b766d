"""Quality rows beyond binary sentiment: multi-label, regression and sentence pairs (MiniLM).

    python -m bench.quality --datasets goemotions,stsb,mrpc --methods seq_bn,full \\
        [--max-train N] [--max-eval N] [--max-test N] [--epochs E] [--threads T]

- ``goemotions``: multi-label (28 labels, the ``labels`` lists), selected on validation (the
  per-label thresholds are tuned there), scored on test: macro-F1 over the 28 labels at the
  stored thresholds (also micro-F1).
- ``stsb``: regression (similarity 0-5, ``score``), sentence pairs; 10% of train held out for
  selection, scored on validation: Pearson (also Spearman).
- ``mrpc``: sentence pairs, paraphrase yes/no; 10% of train held out for selection, scored on
  validation: F1 of the paraphrase class (also accuracy).

The task is inferred from the data (lists: multi-label; fractional numbers: regression).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_DATASETS = ("goemotions", "stsb", "mrpc")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    dataset: str
    eval_split: str | None
    test: str
    label_column: str
    pair_column: str | None
    metric: str  # the scored metric
    label_names: list[str] | None = None


def task_spec(name: str, data_root: Path) -> TaskSpec:
    folder = data_root / name
    if name == "goemotions":
        names = (folder / "labels.txt").read_text(encoding="utf-8").split()
        return TaskSpec(name, str(folder), "validation", str(folder / "test.jsonl"), "labels",
                        None, "f1_macro", names)  # fmt: skip
    if name == "stsb":
        return TaskSpec(name, str(folder / "train.jsonl"), None, str(folder / "validation.jsonl"),
                        "score", "text_pair", "pearson")  # fmt: skip
    if name == "mrpc":
        return TaskSpec(name, str(folder / "train.jsonl"), None, str(folder / "validation.jsonl"),
                        "label", "text_pair", "f1", ["not_paraphrase", "paraphrase"])  # fmt: skip
    raise SystemExit(f"unknown task data set {name!r}: use {', '.join(TASK_DATASETS)}")


def cell_config(args: argparse.Namespace, spec: TaskSpec, method: str, work: Path) -> Any:
    from bench.common import minilm_dir
    from training.config import TrainConfig

    full = method == "full"
    fields: dict[str, Any] = {
        "name": "cell", "base_model": str(minilm_dir()), "dataset": spec.dataset,
        "eval_split": spec.eval_split, "label_column": spec.label_column,
        "text_pair_column": spec.pair_column, "label_names": spec.label_names,
        "method": "full" if full else "adapter", "adapter_config": "seq_bn" if full else method,
        "seed": args.seed,
        "full_output_dir": str(work / f"full-{time.monotonic_ns()}") if full else None,
    }  # fmt: skip
    overrides = {"max_train_samples": args.max_train, "max_eval_samples": args.max_eval,
                 "num_epochs": args.epochs, "max_steps": args.max_steps,
                 "learning_rate": args.lr}  # fmt: skip
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**fields)


def _loaded(config: Any, store: Any, manifest: Any) -> Any:
    """The trained cell as a LoadedAdapter (a full model: its head, no adapter)."""
    from training.modeling import load_base, model_key
    from training.predict import LoadedAdapter, load_stored

    if config.method != "full":
        return load_stored(store, config.name, device="cpu")
    base = load_base(config.full_output_dir)
    base.model.active_head = model_key(config.name)
    base.model.eval()
    key = model_key(config.name)
    return LoadedAdapter(base.model, base.tokenizer, manifest, key, "cpu", adapter=False)


def score(loaded: Any, rows: Any) -> dict[str, Any]:
    from training import predict

    return predict.evaluate(loaded, rows.texts, rows.targets, pairs=rows.pairs, batch_size=64)


SHOWN = ("eval_accuracy", "eval_f1", "eval_f1_macro", "eval_pearson")


def reporter(spec: Any, method: str) -> Any:
    """One stderr line per evaluation, so a cell of an hour shows where it is."""
    started = time.perf_counter()

    def report(event: dict[str, Any]) -> None:
        if event.get("phase") != "eval":
            return
        metrics = event.get("eval") or {}
        shown = ", ".join(f"{k[5:]} {metrics[k]:.4f}" for k in SHOWN if k in metrics) or "-"
        print(
            f"# {spec.name} {method}: step {event['step']}/{event['total_steps']}, "
            f"eval {shown}, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    return report


def run_task_cell(args: argparse.Namespace, name: str, method: str, work: Path) -> dict[str, Any]:
    from adapters_store import AdapterStore
    from training.data import Columns, load_labelled
    from training.trainer import train_adapter

    spec = task_spec(name, args.data_root)
    store = AdapterStore(work / "store")
    config = cell_config(args, spec, method, work)
    start = time.perf_counter()
    manifest = train_adapter(config, store=store, device="cpu", progress=reporter(spec, method))
    wall = time.perf_counter() - start
    print(json.dumps({"trained": name, "method": method, "wall_s": wall,
                      "metrics": manifest.metrics}), flush=True)  # fmt: skip
    labels = [manifest.labels[i] for i in sorted(manifest.labels)]
    rows = load_labelled(spec.test, split="train", task=manifest.task, names=labels,
                         columns=Columns("text", spec.label_column, spec.pair_column),
                         max_samples=args.max_test, seed=args.seed)  # fmt: skip
    tested = score(_loaded(config, store, manifest), rows)
    training = manifest.training or {}
    return {
        "dataset": name, "method": method, "task": manifest.task, "metric": spec.metric,
        "test_score": tested[spec.metric], "test_metrics": tested, "test_samples": len(rows.texts),
        "select_metrics": {k: v for k, v in manifest.metrics.items() if "/" not in k},
        "train_samples": training.get("train_samples"), "wall_s": wall,
        "train_time_s": manifest.metrics["train_runtime_s"],
        "trainable_params": training.get("trainable_params"),
        "learning_rate": training.get("learning_rate"), "best_step": training.get("best_step"),
        "steps_run": training.get("steps_run"), "total_steps": training.get("total_steps"),
        "epochs": training.get("num_epochs"),
    }  # fmt: skip


def task_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data set | task | method | scored metric | value | other | n train | n scored "
             "| train s | trainable | best/run steps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        skip = (r["metric"], "samples", "per_label", "eval_loss")
        other = ", ".join(f"{k} {v:.4f}" for k, v in r["test_metrics"].items() if k not in skip)
        lines.append(
            f"| {r['dataset']} | {r['task']} | {r['method']} | {r['metric']} | "
            f"{r['test_score']:.4f} | {other} | {r['train_samples']} | {r['test_samples']} | "
            f"{r['train_time_s']:.0f} | {r['trainable_params']:,} | "
            f"{r['best_step']}/{r['steps_run']} |"
        )
    return "\n".join(lines)
