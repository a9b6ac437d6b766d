"""Training benchmark: a seq_bn adapter vs full fine-tuning of MiniLM-L6 on rotten_tomatoes.

    python -m bench.train_compare [--epochs 1] [--max-train-samples N] [--max-length 64]
        [--batch-size 16] [--adapter-lr 1e-3] [--full-lr 5e-5] [--threads 1] [--out r.json]

Both methods train on the shared rotten_tomatoes train split (shuffled with the seed) and are
scored on its 1,066-sentence test split, with the same epochs, batch size, max_length and seed;
each gets its usual learning rate. Each method runs in its own subprocess so that its peak RSS
(polled with psutil) is its own. Prints a table, the ratios, and the goal checks:
adapter accuracy within 1.5 points of full fine-tuning, >= 1.4x its training samples/s, and
<= 1/20 of its saved size. Saved size: the adapter's stored files (adapter + head weights and
configs) vs the fully fine-tuned model's weights + config (tokenizer files left out: both need
the base's tokenizer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import DATA, REPO, bootstrap, minilm_dir

FULL_WEIGHT_FILES = ("model.safetensors", "config.json")
TRAINING_KEYS = (
    "trainable_params", "total_params", "train_samples", "eval_samples", "learning_rate"
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=str(DATA / "rotten_tomatoes"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--adapter-lr", type=float, default=1e-3)
    parser.add_argument("--full-lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--methods", default="adapter,full")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--child", choices=["adapter", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- child: one training run -------------------------------------------------------------
def child_config(args: argparse.Namespace, full_dir: Path):
    from training.config import TrainConfig

    return TrainConfig(
        name=f"rt-{args.child}",
        base_model=str(minilm_dir()),
        dataset=args.dataset,
        eval_split="test",
        label_names=["negative", "positive"],
        adapter_config="seq_bn",
        method=args.child,
        max_length=args.max_length,
        num_epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.adapter_lr if args.child == "adapter" else args.full_lr,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        seed=args.seed,
        full_output_dir=str(full_dir) if args.child == "full" else None,
    )


def run_child(args: argparse.Namespace) -> None:
    import torch

    from adapters_store import AdapterStore
    from training.trainer import train_adapter

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="train-compare-") as tmp:
        full_dir = Path(tmp) / "full"
        config = child_config(args, full_dir)
        start = time.perf_counter()
        manifest = train_adapter(config, store=AdapterStore(Path(tmp) / "store"), device="cpu")
        wall = time.perf_counter() - start
        if args.child == "full":
            saved = sum((full_dir / f).stat().st_size for f in FULL_WEIGHT_FILES)
        else:
            saved = manifest.size_bytes
    metrics, training = manifest.metrics, manifest.training
    result = {
        "method": args.child,
        **{k: metrics[k] for k in ("accuracy", "f1_macro", "eval_loss")},
        "train_time_s": metrics["train_runtime_s"],
        "train_samples_per_s": metrics["train_samples_per_s"],
        "wall_s": wall,
        **{k: training[k] for k in TRAINING_KEYS},
        "saved_bytes": saved,
    }
    args.result.write_text(json.dumps(result))


# ---- parent: run each method in its own process, watch its RSS ---------------------------
def run_method(method: str, args: argparse.Namespace) -> dict:
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.train_compare", *child_flags(args)]
        cmd += ["--child", method, "--result", str(result_path)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env)
        watched = psutil.Process(proc.pid)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        if proc.wait() != 0:
            raise SystemExit(f"{method} run failed with exit code {proc.returncode}")
        result = json.loads(result_path.read_text())
    result["peak_rss_mb"] = peak / 2**20
    return result


def child_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--dataset", args.dataset, "--epochs", str(args.epochs),
             "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
             "--adapter-lr", str(args.adapter_lr), "--full-lr", str(args.full_lr),
             "--seed", str(args.seed), "--threads", str(args.threads)]  # fmt: skip
    if args.max_train_samples:
        flags += ["--max-train-samples", str(args.max_train_samples)]
    if args.max_eval_samples:
        flags += ["--max-eval-samples", str(args.max_eval_samples)]
    return flags


ROWS = (
    ("test accuracy", "accuracy", "{:.4f}"),
    ("test macro-F1", "f1_macro", "{:.4f}"),
    ("eval loss", "eval_loss", "{:.4f}"),
    ("train time (s)", "train_time_s", "{:.1f}"),
    ("train samples/s", "train_samples_per_s", "{:.1f}"),
    ("wall incl. load+eval (s)", "wall_s", "{:.1f}"),
    ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ("trainable params", "trainable_params", "{:,}"),
    ("saved size (MB)", "saved_mb", "{:.2f}"),
    ("learning rate", "learning_rate", "{:g}"),
)


def print_report(results: dict[str, dict], args: argparse.Namespace) -> None:
    for r in results.values():
        r["saved_mb"] = r["saved_bytes"] / 1e6
    methods = list(results)
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {args.threads}; train {next(iter(results.values()))['train_samples']}"
          f" samples x {args.epochs} epoch(s), max_length {args.max_length}, batch "
          f"{args.batch_size}, seed {args.seed}\n")  # fmt: skip
    print("| metric | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for label, key, pattern in ROWS:
        print(f"| {label} | " + " | ".join(pattern.format(results[m][key]) for m in methods) + " |")
    if {"adapter", "full"} <= set(results):
        print_goals(results["adapter"], results["full"])


def print_goals(adapter: dict, full: dict) -> None:
    gap = (full["accuracy"] - adapter["accuracy"]) * 100
    speed = adapter["train_samples_per_s"] / full["train_samples_per_s"]
    size = full["saved_bytes"] / adapter["saved_bytes"]
    rss = adapter["peak_rss_mb"] / full["peak_rss_mb"]
    print(f"\naccuracy: adapter {gap:+.2f} points behind full FT "
          f"(goal <= 1.5): {'met' if gap <= 1.5 else 'MISSED'}")  # fmt: skip
    print(f"training speed: adapter {speed:.2f}x full FT samples/s "
          f"(goal >= 1.4x): {'met' if speed >= 1.4 else 'MISSED'}")  # fmt: skip
    print(f"saved size: adapter 1/{size:.0f} of full FT (goal <= 1/20): "
          f"{'met' if size >= 20 else 'MISSED'}")  # fmt: skip
    print(f"peak RSS: adapter {rss:.2f}x full FT")


def main(argv: list[str] | None = None) -> None:
    bootstrap()
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return
    results = {}
    for method in args.methods.split(","):
        print(f"== {method} ...", flush=True)
        results[method] = run_method(method, args)
        print(json.dumps(results[method]), flush=True)
    print_report(results, args)
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                        "results": results}, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
