"""The GPU check, one bounded run (bench/gpu_check.sh installs what is missing, then runs this).

    python -m bench.gpu_check [--device cuda] [--model roberta-base-shape] [--out DIR]
    python -m bench.gpu_check --dry-run          # CPU, tiny model, seconds: checks the script

1. Precision: the engine on the device in bf16 and in fp16 vs fp32 on the CPU, same adapter,
   same texts: max |difference| of the softmax probabilities and of the logits.
2. Memory per resident adapter: device memory allocated before/after loading N adapters.
3. Cold adapter load: p50/p99 of `load_adapter` from the store onto the device.
4. Served vs raw: the real server (`python -m app`, device dtype auto) at 1/16/64/256
   clients with one adapter vs the best raw batch size (library in-process, same dtype);
   then 64 adapters of mixed methods vs one adapter at the larger client counts.
5. Scale (bench/scale.py, a subprocess bounded by --scale-timeout-s): MiniLM with 2,000
   adapters of six methods on the device, short phases: start-up, one adapter vs Zipf req/s,
   cold/warm activation, hot p99 under a cold storm, the listing, the activate/evict RSS check.
6. Overhead (bench/overhead.py, a subprocess bounded by --overhead-timeout-s): the tiny model
   on the device, our server with each --api-workers count (1, 2, 4: a supervisor, one engine
   process and N API processes; 1 is one process) vs a bare FastAPI app at 1/16/64 clients:
   req/s, p50/p99, server CPU ms per request per process role (wrk when installed, else the
   bench's Python client), each count's req/s against one API process (how far the API
   processes scale), and each server's first /classify after /readyz against warm ones.
   Runs before the scale part.
7. Mixed methods (bench/mixed_methods.py, subprocesses bounded by --mixed-timeout-s): one
   forward of 64 texts over k = 1, 16, 64 distinct adapters per method and over 4 methods,
   the one-pass path vs the library's BatchSplit, in fp16 and in bf16: aten operators, kernel
   launches and ms (issue 29).
Prints lines and writes DIR/gpu_check.json. Every part is bounded; a part that fails is
reported and the rest still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    base_model_dir,
    bootstrap,
    load_texts,
    make_store,
)
from bench.gpu_parts import RESULTS, part, say
from bench.gpu_served import throughput
from bench.gpu_subbench import mixed_args, overhead_args, run_bench, scale_args
from bench.overhead_procs import sweep_lines


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _logits(engine, name: str, texts: list[str]):
    """Logits of `name` for `texts` in one padded pass (float32 on the CPU)."""
    import torch
    from adapters import AdapterSetup

    from app.serving.engine import module_name

    input_ids, mask = engine._pad(engine.tokenize(texts))
    slot = module_name(name)
    with torch.inference_mode(), AdapterSetup(slot, head_setup=slot):
        out = engine.model(input_ids=input_ids, attention_mask=mask)
    return out.logits.float().cpu()


@part("precision")
def precision(base: Path, store: Path, name: str, texts: list[str], opts) -> None:
    from adapters_store.rendering import softmax
    from app.serving.engine import Engine, Segment

    reference = Engine.load(base_model=str(base), device="cpu", dtype="float32", max_length=128)
    reference.load_adapter(name, store / name)
    ref_probs = [
        softmax(r) for r in reference.forward([Segment(name, reference.tokenize(texts))])[0]
    ]
    ref_logits = _logits(reference, name, texts)
    del reference
    for dtype in ("bfloat16", "float16"):
        engine = Engine.load(base_model=str(base), device=opts.device, dtype=dtype, max_length=128)
        engine.load_adapter(name, store / name)
        probs = [softmax(r) for r in engine.forward([Segment(name, engine.tokenize(texts))])[0]]
        logits = _logits(engine, name, texts)
        pairs = list(zip(probs, ref_probs, strict=True))
        prob_diff = max(abs(a - b) for r, s in pairs for a, b in zip(r, s, strict=True))
        logit_diff = float((logits - ref_logits).abs().max())
        agree = sum(
            max(range(len(r)), key=r.__getitem__) == max(range(len(s)), key=s.__getitem__)
            for r, s in pairs
        )
        RESULTS[f"precision_{dtype}"] = {
            "engine_dtype": str(engine.dtype),
            "max_prob_diff": prob_diff,
            "max_logit_diff": logit_diff,
            "argmax_agree": f"{agree}/{len(texts)}",
        }
        say(
            f"{dtype} on {opts.device} ({engine.dtype}) vs float32 CPU, {len(texts)} texts: "
            f"max |prob diff| {prob_diff:.2e}, max |logit diff| {logit_diff:.2e}, "
            f"argmax agrees {agree}/{len(texts)}"
        )
        del engine


@part("memory_and_cold_load")
def memory_and_loads(base: Path, store: Path, names: list[str], opts) -> None:
    import torch

    from app.serving.engine import Engine

    engine = Engine.load(base_model=str(base), device=opts.device, max_length=128)
    cuda = opts.device.startswith("cuda")
    _sync(opts.device)
    before = torch.cuda.memory_allocated() if cuda else 0
    loads, added = [], []
    for name in names:
        t0 = time.perf_counter()
        added.append(engine.load_adapter(name, store / name))
        _sync(opts.device)
        loads.append((time.perf_counter() - t0) * 1000)
    after = torch.cuda.memory_allocated() if cuda else 0
    loads.sort()
    p50, p99 = loads[len(loads) // 2], loads[min(len(loads) - 1, int(len(loads) * 0.99))]
    per_adapter = (after - before) / len(names) if cuda else None
    RESULTS["memory_and_cold_load"] = {
        "adapters": len(names),
        "device_bytes_per_adapter": per_adapter,
        "engine_bytes_per_adapter": statistics.mean(added),
        "cold_load_ms_p50": p50,
        "cold_load_ms_p99": p99,
        "dtype": str(engine.dtype),
    }
    mem = f"{per_adapter / 2**20:.2f} MiB allocated" if cuda else "n/a (not CUDA)"
    say(
        f"{len(names)} adapters ({engine.dtype}): device memory per resident adapter {mem}, "
        f"tensors {statistics.mean(added) / 2**20:.2f} MiB; cold load_adapter p50 {p50:.1f} ms,"
        f" p99 {p99:.1f} ms"
    )


@part("scale")
def scale(opts) -> None:
    path = opts.out / "scale.json"
    RESULTS["scale"] = run_bench("bench.scale", scale_args(opts), opts.scale_timeout_s, path)


@part("overhead")
def overhead(opts) -> None:
    """The serving path's own CPU cost (tiny model) against a bare FastAPI app, on this machine:
    wrk when installed, else bench.overhead's Python client (it shares the CPUs)."""
    path = opts.out / "overhead.json"
    result = run_bench("bench.overhead", overhead_args(opts), opts.overhead_timeout_s, path)
    result["api_workers_scaling"] = sweep_lines(result["cells"])
    RESULTS["overhead"] = result  # bench.overhead printed the scaling lines too


@part("mixed")
def mixed(opts) -> None:
    """Launches per forward for k distinct adapters: one-pass vs BatchSplit (issue 29)."""
    for dtype in ("float16", "bfloat16") if not opts.dry_run else ("float32",):
        path = opts.out / f"mixed_methods_{dtype}.json"
        args = mixed_args(opts, dtype)
        limit = opts.mixed_timeout_s
        RESULTS[f"mixed_{dtype}"] = run_bench("bench.mixed_methods", args, limit, path)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--model", default="roberta-base-shape", choices=["roberta-base-shape", "minilm", "tiny"]
    )
    p.add_argument("--adapters", type=int, default=64)
    p.add_argument("--methods", default="seq_bn,lora,ia3,double_seq_bn")
    p.add_argument("--clients", default="1,16,64,256")
    p.add_argument("--raw-batches", default="1,8,32,64,128,256")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--raw-seconds", type=float, default=3.0)
    p.add_argument("--parts", default="precision,memory,throughput,mixed,overhead,scale")
    p.add_argument("--mixed-timeout-s", type=float, default=150.0, help="per dtype")
    p.add_argument("--overhead-seconds", type=int, default=5, help="per bench.overhead cell")
    p.add_argument("--overhead-timeout-s", type=float, default=300.0)
    p.add_argument("--api-workers", default="1,2,4", help="bench.overhead's sweep ('': none)")
    p.add_argument("--scale-adapters", type=int, default=2000)
    p.add_argument("--scale-timeout-s", type=float, default=200.0)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few seconds")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    opts = p.parse_args(argv)
    if opts.dry_run:
        opts.device, opts.model, opts.adapters = "cpu", "tiny", 8
        opts.clients, opts.raw_batches = "1,4,8", "1,4,8"
        opts.seconds, opts.warmup, opts.raw_seconds = 2.0, 1.0, 0.5
        opts.api_workers = "1,2"
    opts.clients = [int(x) for x in opts.clients.split(",")]
    opts.raw_batches = [int(x) for x in opts.raw_batches.split(",")]
    opts.methods = opts.methods.split(",")
    opts.api_workers = [int(x) for x in opts.api_workers.split(",") if x]
    if any(n < 1 for n in opts.api_workers):
        p.error("every --api-workers count must be >= 1")
    opts.parts = set(opts.parts.split(","))
    return opts


def model_dir(opts, scratch: Path) -> Path:
    if opts.model == "tiny":
        from tests.support.tiny import build_tiny_roberta

        return build_tiny_roberta(scratch / "tiny")
    return base_model_dir(opts.model, scratch)


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    import torch

    opts = parse(argv)
    started = time.perf_counter()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    say(
        f"gpu check: {platform.node()}, python {platform.python_version()}, torch "
        f"{torch.__version__}, GPU {gpu}, device {opts.device}, model {opts.model}, "
        f"load {os.getloadavg()}"
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        data_dir = Path(tmp)
        base = model_dir(opts, data_dir)
        names = make_store(data_dir, base, opts.adapters, methods=opts.methods, model_id=opts.model)
        store = data_dir / "adapters"
        took = time.perf_counter() - started
        say(f"store: {len(names)} adapters, methods {opts.methods} ({took:.0f} s)")
        texts = load_texts("long", limit=256)
        if "precision" in opts.parts:
            precision(base, store, names[0], texts[:32], opts)
        if "memory" in opts.parts:
            memory_and_loads(base, store, names, opts)
        if "throughput" in opts.parts:
            throughput(base, data_dir, names, texts, opts)
    if "mixed" in opts.parts:
        mixed(opts)
    if "overhead" in opts.parts:
        overhead(opts)
    if "scale" in opts.parts:
        scale(opts)
    RESULTS["seconds"] = time.perf_counter() - started
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=2, default=str))
    say(f"done in {RESULTS['seconds']:.0f} s; results in {opts.out / 'gpu_check.json'}")
    return 1 if any("error" in v for v in RESULTS.values() if isinstance(v, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
