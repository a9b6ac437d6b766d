"""What k distinct adapters cost in one forward, per method and for a 4-method mix (issue 29).

    python -m bench.mixed_methods [--model tiny|minilm|roberta-base-shape] [--batch 64]
        [--ks 1,4,16,64] [--paths onepass,library] [--reps 3] [--threads 1]
        [--device cpu|cuda] [--dtype auto|float16|bfloat16|float32] [--json FILE]

In-process with the engine (`Engine.forward`): `--batch` texts (rotten_tomatoes validation,
truncated to 64 tokens; BENCH_DATA_DIR or ../shared/data beside the repository, else
synthetic texts) split evenly over k random adapters of one method (seq_bn, double_seq_bn,
par_bn, lora, ia3, prefix_tuning, flat as the trainer stores it), and over k adapters cycling
through seq_bn, lora, ia3, prefix_tuning ("mix"). Paths: `onepass` (stacked weights, one body
pass: the default) and `library` (the adapters library's BatchSplit per compatible group, as
before issue 29). Per cell: aten operators per forward (torch.profiler, deterministic),
kernel launches on a GPU, and the median ms of --reps forwards after a warm-up (meaningful
only on a quiet machine). "x1" is relative to ONE adapter of the same method (the mix: one
seq_bn adapter) on the same path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from adapters_store.methods import METHOD_NAMES
from bench.common import DATA, base_model_dir, bootstrap, load_texts
from bench.op_count import count_ops

METHODS = METHOD_NAMES  # every registered method (adapters_store.methods)
MIX = ("seq_bn", "lora", "ia3", "prefix_tuning")


def config_of(method: str):
    from adapters import AdapterConfig, PrefixTuningConfig

    if method == "prefix_tuning":
        return PrefixTuningConfig(flat=True)  # as the trainer stores it
    return AdapterConfig.load(method)


def add_random(engine, name: str, method: str, seed: int) -> None:
    """A random adapter + 2-label head straight into the engine's model (no store needed)."""
    import torch

    from app.serving.engine import module_name

    slot = module_name(name)
    torch.manual_seed(seed)
    engine.model.add_adapter(slot, config=config_of(method))
    engine.model.add_classification_head(slot, num_labels=2)
    with torch.no_grad():
        for pname, param in engine.model.named_parameters():
            if f".{slot}." in pname:
                param.normal_(0, 0.02)


def timed(engine, segments, reps: int, sync) -> float:
    engine.forward(segments)  # warm-up (and the one-pass path registers the adapters)
    runs = []
    for _ in range(reps):
        start = time.perf_counter()
        engine.forward(segments)
        sync()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def split(ids: list[list[int]], names: list[str]):
    from app.serving.engine import Segment

    per, extra = divmod(len(ids), len(names))
    out, start = [], 0
    for i, name in enumerate(names):
        size = per + (i < extra)
        out.append(Segment(name, ids[start : start + size]))
        start += size
    return out


def names_for(method: str, k: int) -> list[str]:
    if method == "mix":
        return [f"{MIX[i % len(MIX)]}-{i // len(MIX)}" for i in range(k)]
    return [f"{method}-{i}" for i in range(k)]


def load_engine(opts, base: Path, onepass: bool):
    from app.serving.engine import Engine

    engine = Engine.load(
        base_model=str(base), max_length=64, threads=opts.threads or None,
        device=opts.device, dtype=opts.dtype, onepass=onepass,
    )  # fmt: skip
    needed = {m for c in opts.methods for m in (MIX if c == "mix" else (c,))} | {"seq_bn"}
    for m, method in enumerate(METHODS):
        if method in needed:
            for k in range(max(opts.ks)):
                add_random(engine, f"{method}-{k}", method, seed=1000 * m + k)
    engine.model.to(device=engine.device, dtype=engine.dtype)
    engine.model.eval()
    return engine


def measure(opts, engine, ids, path: str) -> list[dict]:
    import torch

    cuda = engine.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    cells, ones = [], {}
    for method in opts.methods:
        for k in opts.ks:
            segments = split(ids, names_for(method, k))
            ms = timed(engine, segments, opts.reps, sync)
            counts = count_ops(lambda s=segments: engine.forward(s), cuda=cuda)
            cell = {"path": path, "method": method, "k": k, "ms": ms, "aten": counts.aten,
                    "kernels": counts.kernels}  # fmt: skip
            if k == 1:
                ones[method] = cell
            base = ones.get("seq_bn" if method == "mix" else method)
            if base is None:  # the mix's baseline: one seq_bn adapter
                base = ones["seq_bn"] = dict(cell, **_one(opts, engine, ids, sync, cuda))
            cell["x_ms"] = ms / base["ms"]
            cell["x_aten"] = counts.aten / base["aten"]
            cells.append(cell)
            say(cell)
    return cells


def _one(opts, engine, ids, sync, cuda) -> dict:
    segments = split(ids, names_for("seq_bn", 1))
    counts = count_ops(lambda: engine.forward(segments), cuda=cuda)
    return {"ms": timed(engine, segments, opts.reps, sync), "aten": counts.aten}


def say(cell: dict) -> None:
    kernels = f"{cell['kernels']:>8}" if cell["kernels"] else ""
    print(
        f"{cell['path']:<8} {cell['method']:<14} k={cell['k']:<3} {cell['ms']:>9.1f} ms "
        f"x{cell['x_ms']:<5.2f} {cell['aten']:>7} ops x{cell['x_aten']:<5.2f}{kernels}",
        flush=True,
    )


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny", choices=["tiny", "minilm", "roberta-base-shape"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--ks", default="1,4,16,64")
    p.add_argument("--methods", default=",".join([*METHODS, "mix"]))
    p.add_argument("--paths", default="onepass,library")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--json", type=Path, default=None)
    opts = p.parse_args(argv)
    opts.ks = [int(x) for x in opts.ks.split(",")]
    opts.methods = opts.methods.split(",")
    opts.paths = opts.paths.split(",")
    return opts


def main(argv=None) -> None:
    bootstrap()
    opts = parse(argv)
    with tempfile.TemporaryDirectory(prefix="mixed-methods-") as tmp:
        if opts.model == "tiny":
            from tests.support.tiny import build_tiny_roberta

            base = build_tiny_roberta(Path(tmp) / "tiny")
        else:
            base = base_model_dir(opts.model, Path(tmp))
        source = DATA / "rotten_tomatoes" / "validation.jsonl"
        texts = str(source) if source.is_file() else "synthetic (set BENCH_DATA_DIR)"
        print(f"model {opts.model}, batch {opts.batch}, device {opts.device}, threads "
              f"{opts.threads}, texts {texts}, load average {os.getloadavg()}")  # fmt: skip
        cells = []
        for path in opts.paths:
            engine = load_engine(opts, base, onepass=path == "onepass")
            ids = engine.tokenize(load_texts("short", limit=opts.batch))
            cells += measure(opts, engine, ids, path)
            del engine
    print(f"load average after {os.getloadavg()}")
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps({"model": opts.model, "cells": cells}, indent=2))


if __name__ == "__main__":
    main()
