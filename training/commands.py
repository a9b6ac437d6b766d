"""The CLI's sub-commands: each takes the parsed arguments and returns an exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from adapters_store import AdapterStore, Manifest
from adapters_store.format import CURVES_PNG
from training.config import TrainConfig
from training.printing import print_json_lines, print_table

SUMMARY_SCORES = ("accuracy", "f1_macro", "f1", "f1_micro", "pearson", "spearman", "mse",
                  "eval_loss")  # fmt: skip
_CLI_ONLY = {"command", "store", "device", "no_progress", "plot"}


def _quiet_datasets() -> None:
    """datasets' own bars (generating splits, tokenising) only clutter the CLI's output."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def train(args: argparse.Namespace) -> int:
    from training.data import check_data
    from training.validation import validate_config

    fields = {k: v for k, v in vars(args).items() if k not in _CLI_ONLY}
    config = TrainConfig(**fields)
    _quiet_datasets()
    store = AdapterStore(args.store)
    validate_config(config, store=store)
    for note in check_data(config).notes:  # data errors before the (slow) ML imports
        print(f"note: {note}", file=sys.stderr)

    from training.trainer import train_adapter

    manifest = train_adapter(
        config, store=store, device=args.device, progress_bar=not args.no_progress
    )
    full = config.method == "full"
    where = Path(str(config.full_output_dir if full else store.folder(config.name)))
    rows = summary_rows(manifest, where)
    png = args.plot.resolve() if args.plot else where / CURVES_PNG
    if args.plot:
        write_curves(manifest, args.plot)
    if png.is_file():
        rows.append(("learning curves", str(png)))
    print_table(rows)
    return 0


def write_curves(manifest: Manifest, path: Path) -> Path:
    from training.plots import write_curves_png

    curves = (manifest.training or {}).get("curves") or {}
    title = f"{manifest.name} v{manifest.version} ({manifest.adapter_config})"
    return write_curves_png(curves, path, title=title).resolve()


def summary_rows(manifest: Manifest, where: Path) -> list[tuple[str, Any]]:
    training = manifest.training or {}
    metrics = manifest.metrics
    labels = [manifest.labels[i] for i in sorted(manifest.labels)]
    samples, total = training.get("eval_samples"), training.get("total_params", 0)
    return [
        ("name", f"{manifest.name} (version {manifest.version})"),
        ("method", training.get("method", "adapter")),
        ("adapter config", manifest.adapter_config),
        ("base model", manifest.base_model.id),
        ("labels", _labels_line(labels)),
        ("train / eval samples", f"{training.get('train_samples')} / {samples}"),
        ("recipe", _recipe_line(training)),
        ("steps", _steps_line(training)),
        ("trainable params", f"{training.get('trainable_params', 0):,} of {total:,}"),
        ("task", manifest.task + (" (sentence pairs)" if manifest.text_pair else "")),
        *[(k, f"{v:.4f}") for k, v in metrics.items() if k in SUMMARY_SCORES],
        ("train time", f"{metrics.get('train_runtime_s', float('nan')):.1f} s"),
        ("samples/s", f"{metrics.get('train_samples_per_s', float('nan')):.1f}"),
        ("saved size", f"{manifest.size_bytes / 1e6:.2f} MB"),
        ("saved to", str(where)),
    ]


def _labels_line(labels: list[str]) -> str:
    return ", ".join(labels) if len(labels) <= 12 else ", ".join(labels[:12]) + ", ..."


def _recipe_line(training: dict[str, Any]) -> str:
    get = training.get
    return (
        f"{get('recipe', '?')}: lr {get('learning_rate')}, {get('lr_scheduler')} "
        f"(warm-up {get('warmup_ratio')}), batch {get('batch_size')}, "
        f"max_length {get('max_length')}"
    )


def _steps_line(training: dict[str, Any]) -> str:
    best, run, total = (training.get(k) for k in ("best_step", "steps_run", "total_steps"))
    early = ", stopped early" if training.get("stopped_early") else ""
    return f"best {best} of {run} run ({total} planned{early})"


def evaluate(args: argparse.Namespace) -> int:
    from training import data
    from training.predict import evaluate as run_eval
    from training.predict import load_stored

    _quiet_datasets()
    store = AdapterStore(args.store)
    manifest = store.get(args.name).manifest
    training = manifest.training or {}
    columns = data.Columns(
        args.text_column or training.get("text_column", "text"),
        args.label_column or training.get("label_column", "label"),
        args.text_pair_column or training.get("text_pair_column"),
    )
    split = args.split or ("train" if Path(args.dataset).is_file() else "test")
    labels = [manifest.labels[i] for i in sorted(manifest.labels)]
    rows = data.load_labelled(
        args.dataset, split=split, columns=columns, names=labels, task=manifest.task,
        dataset_config=args.dataset_config, max_samples=args.max_samples,
    )  # fmt: skip
    loaded = load_stored(store, args.name, base_model=args.base_model, device=args.device)
    metrics = run_eval(loaded, rows.texts, rows.targets, pairs=rows.pairs,
                       batch_size=args.batch_size)  # fmt: skip
    shown = [(k, f"{v:.4f}") for k, v in metrics.items() if k not in ("samples", "per_label")]
    print_table([("adapter", f"{args.name} (version {manifest.version})"),
                 ("task", manifest.task + (" (sentence pairs)" if manifest.text_pair else "")),
                 ("dataset", f"{args.dataset} [{split}]"),
                 ("samples", int(metrics["samples"])), *shown])  # fmt: skip
    return 0


def predict(args: argparse.Namespace) -> int:
    from training.errors import TrainingError
    from training.predict import load_stored
    from training.predict import predict as run_predict

    if args.top_k < 1:
        raise TrainingError("--top-k must be at least 1")
    store = AdapterStore(args.store)
    loaded = load_stored(store, args.name, base_model=args.base_model, device=args.device)
    pairs = list(args.pair) if args.pair else None
    if pairs is not None and len(pairs) != len(args.texts):
        raise TrainingError("--pair needs one text pair per text")
    print_json_lines(run_predict(loaded, list(args.texts), top_k_labels=args.top_k, pairs=pairs))
    return 0


def export(args: argparse.Namespace) -> int:
    from training.export import export_adapter

    out = export_adapter(AdapterStore(args.store), args.name, args.out, overwrite=args.overwrite)
    print(f"exported {args.name} to {out}")
    return 0


def push(args: argparse.Namespace) -> int:
    from training.export import push_adapter

    url = push_adapter(
        AdapterStore(args.store), args.name, repo_id=args.repo_id, token=args.token,
        private=args.private,
    )  # fmt: skip
    print(f"pushed {args.name} to {url}")
    return 0
