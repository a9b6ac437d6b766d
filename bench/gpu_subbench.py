"""The GPU check's parts that run another bench as a bounded subprocess (bench/gpu_check.py).

- `scale_args` / `overhead_args`: bench.scale's and bench.overhead's small settings for the
  device (and for the dry run: tiny model, seconds, on the CPU);
- `run_bench`: `python -m <bench> <args>` under a time limit; its printout, then its --json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import REPO


def say(line: str) -> None:
    print(line, flush=True)


def scale_args(opts) -> list[str]:
    """bench.scale's small, bounded settings (the dry run: tiny model, 48 adapters, seconds)."""
    if opts.dry_run:
        size = ["--model", "tiny", "--adapters", "48", "--seconds", "1", "--cold", "5"]
        size += ["--cycles", "20", "--rss-after", "10", "--cycle-limit-s", "10"]
    else:
        size = ["--model", "minilm", "--adapters", str(opts.scale_adapters), "--seconds", "4"]
        size += ["--cold", "60", "--cycles", "600", "--rss-after", "200", "--cycle-limit-s", "25"]
    return [
        *size, "--threads", "0", "--cold-limit-s", "30", "--list-calls", "10",
        "--env", f"APP_DEVICE={opts.device}", "--json", str(opts.out / "scale.json"),
    ]  # fmt: skip


def overhead_args(opts) -> list[str]:
    """bench.overhead's cells on the device (the dry run: 1-second cells on the CPU), one of
    ours per --api-workers count (`ours wN`), each beside the same bare reference."""
    if opts.dry_run:
        size = ["--seconds", "1", "--warmup", "0.5", "--clients", "1,4"]
    else:
        size = ["--seconds", str(opts.overhead_seconds), "--warmup", "1", "--clients", "1,16,64"]
    workers = ["--api-workers", ",".join(map(str, opts.api_workers))] if opts.api_workers else []
    out = ["--json", str(opts.out / "overhead.json")]
    return [*size, *workers, "--env", f"APP_DEVICE={opts.device}", *out]


def mixed_args(opts, dtype: str) -> list[str]:
    """bench.mixed_methods on the device (issue 29): launch counts and ms of k = 1 and 64
    distinct adapters per method and mixed, one-pass vs the library (dry run: tiny, CPU)."""
    if opts.dry_run:
        size = ["--model", "tiny", "--ks", "1,4", "--reps", "1", "--methods", "seq_bn,mix"]
    else:
        size = ["--model", opts.model, "--ks", "1,16,64", "--reps", "5"]
    return [
        *size, "--batch", "64", "--threads", "0", "--device", opts.device, "--dtype", dtype,
        "--json", str(opts.out / f"mixed_methods_{dtype}.json"),
    ]  # fmt: skip


def run_bench(module: str, args: list[str], timeout_s: float, json_path: Path) -> dict:
    """`python -m <module> <args>` bounded by `timeout_s`; its printout, then its --json file."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the benches stop their servers on SIGTERM
        out, _ = proc.communicate(timeout=60)
        say(out)
        raise RuntimeError(f"{module} ran past {timeout_s} s") from None
    say(out)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} exit {proc.returncode}")
    return json.loads(json_path.read_text())
