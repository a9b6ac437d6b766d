"""Serving benchmark: the real server vs the best raw batch size, side by side in one run.

    python -m bench.serve [--model minilm|roberta-base-shape] [--texts short|long]
                          [--seconds 10] [--clients 1,16,64] [--adapters 1,64] [--out r.json]
                          [--api-workers N]

1. Builds a store of N random seq_bn adapters for the base (MiniLM-L6, or a random model of
   roberta-base's shape with a real tokenizer, see bench/common.py).
2. Raw: the plain library in-process (AdapterModel + AdapterSetup, pre-tokenised padded
   batches of 1/4/8/16/32 texts, forward passes only), measured before AND after the served
   cells; the best of all is the reference ("best raw"), so drift of a shared box cannot
   flatter the server.
3. Served: `python -m app` on 127.0.0.1 (it times its own pass cost model at start-up;
   the bench prints it); closed-loop clients, one text per request, the adapter drawn from
   the first A adapters (all preloaded). 1 adapter at every client count; more adapters at
   the largest client count (--full-grid: at every count). Per cell the server's CPU ms per
   request per process role (engine / API processes summed / main: the supervisor, or the one
   process), from /proc of its process and every descendant (bench/proctree.py); at the end
   its RSS per role. --api-workers N sets APP_API_WORKERS (default: the server's own choice).
4. Naive (optional, --naive-clients N): per request `set_active_adapters` + a new pipeline.
5. Mixed methods (optional, --mix): 64 adapters spread over seq_bn, lora, ia3 and
   prefix_tuning at the largest client count, against each method's 16 adapters alone; the
   reference is what the same requests get when each method's share runs in its own
   homogeneous passes: 1 / sum(share / texts_s of that method alone).
Every cell runs a bounded time (warm-up + --seconds). Prints a table and the goal checks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench import proctree as tree
from bench.common import (
    RawModel,
    api_workers_env,
    base_model_dir,
    bootstrap,
    load_texts,
    make_store,
    wait_for_log,
)
from bench.serve_report import MIX, Cell, goals, mix_goal, row
from bench.served import served_cell

RAW_BATCHES = (1, 4, 8, 16, 32)
MAX_BATCH = 32


# ---- raw ----------------------------------------------------------------------------------
def raw_sweep(raw: RawModel, opts, label: str) -> dict[int, dict[str, float]]:
    out, seconds = {}, opts.raw_seconds
    for size in opts.raw_batches:
        out[size] = raw.measure(size, seconds)
        r = out[size]
        print(
            f"raw ({label}) batch {size}: {r['texts_s']:.1f} texts/s, {r['ms']:.1f} ms/pass, "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return out


def best_raw(*sweeps: dict[int, dict[str, float]]) -> tuple[int, float, float]:
    """(best batch size, its texts/s, batch-1 ms per pass) over every raw sweep."""
    size, texts_s = max(
        ((s, r["texts_s"]) for sweep in sweeps for s, r in sweep.items()), key=lambda x: x[1]
    )
    one_ms = min(sweep[1]["ms"] for sweep in sweeps)
    return size, texts_s, one_ms


# ---- served and naive ---------------------------------------------------------------------
def start_served(base: Path, data_dir: Path, names: list[str], opts):
    import httpx

    from tests.support.server import start_server

    env = {
        "APP_MAX_BATCH_SIZE": str(MAX_BATCH),
        "APP_MAX_LENGTH": str(opts.max_length),
        "APP_MAX_RESIDENT_ADAPTERS": str(max(len(names), 1)),
        "APP_ACCESS_LOG": "false",
        "APP_LOG_LEVEL": "info",
        "APP_EMBEDDED_WORKER": "false",
        "APP_TORCH_THREADS": str(opts.threads),
        "APP_REQUEST_TIMEOUT_S": "300",
        "APP_PASS_COST_CALIBRATION": "false" if opts.no_calibration else "true",
        "APP_PASS_COST_BUDGET_S": str(opts.calibration_s),
        **api_workers_env(opts.api_workers),
    }
    server = start_server(data_dir=data_dir, base_model=base, env=env, timeout_s=600)
    if not opts.no_calibration:
        line = wait_for_log(server.log_path, "pass cost model|fixed pass overhead", 180)
        print(f"server: {line.split(': ', 1)[-1] if line else 'no pass cost model logged'}")
    for name in names:  # all resident: the sweep measures serving, not loading
        httpx.post(f"{server.url}/adapters/{name}/load", timeout=120).raise_for_status()
    return server


def run_cell(server, kind: str, names, texts, clients: int, opts) -> Cell:
    load, mean_batch, cpu_ms = served_cell(
        server,
        batches=kind != "naive",
        names=names,
        texts=texts,
        clients=clients,
        seconds=opts.seconds,
        warmup=max(2.0, opts.seconds / 5),
    )
    cell = Cell(kind, len(names), clients, **asdict(load), load=os.getloadavg()[0])
    cell.mean_batch, cell.cpu_ms = mean_batch, cpu_ms
    print(row(cell), flush=True)
    return cell


def sweep(served, naive, names, texts, opts, mixed=()) -> list[Cell]:
    cells = []
    top = max(opts.clients)
    for clients in opts.clients:
        for count in opts.adapters:
            if count == 1 or clients == top or opts.full_grid:
                cells.append(run_cell(served, "served", names[:count], texts, clients, opts))
            if naive is not None and clients == opts.naive_clients:
                cells.append(run_cell(naive, "naive", names[:count], texts, clients, opts))
    if mixed:  # make_store takes the methods in turn: name k has MIX[k % 4]
        cells.append(run_cell(served, "mixed", list(mixed), texts, top, opts))
        for m, method in enumerate(MIX):
            cells.append(run_cell(served, method, list(mixed)[m :: len(MIX)], texts, top, opts))
    return cells


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    naive = sub.add_parser("naive-server")
    naive.add_argument("--port", type=int, required=True)
    naive.add_argument("--base", required=True)
    naive.add_argument("--store", required=True)
    parser.add_argument("--model", choices=["minilm", "roberta-base-shape"], default="minilm")
    parser.add_argument("--texts", choices=["short", "long"], default="short")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=10.0, help="per served cell")
    parser.add_argument("--raw-seconds", type=float, help="per raw batch size (default s/4)")
    parser.add_argument("--raw-batches", default=",".join(map(str, RAW_BATCHES)))
    parser.add_argument("--adapters", default="1,64")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--full-grid", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (raw and served)")
    parser.add_argument("--calibration-s", type=float, default=1.5, help="server's budget")
    parser.add_argument("--no-calibration", action="store_true", help="fixed pass overhead")
    parser.add_argument("--naive-clients", type=int, default=0, help="0: no naive server")
    parser.add_argument("--mix", action="store_true", help="64 adapters over 4 methods too")
    parser.add_argument("--api-workers", type=int, default=0, help="APP_API_WORKERS (0: default)")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args(argv)
    if opts.command != "naive-server":
        opts.adapters = [int(x) for x in opts.adapters.split(",")]
        opts.clients = [int(x) for x in opts.clients.split(",")]
        opts.raw_batches = [int(x) for x in opts.raw_batches.split(",")]
        opts.raw_seconds = opts.raw_seconds or max(opts.seconds / 4, 1.0)
    return opts


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    opts = parse(argv)
    if opts.command == "naive-server":
        from bench.naive import serve_naive

        serve_naive(opts)
        return 0
    return run(opts)


def run(opts: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(opts.threads)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({opts.threads} thread(s)), model {opts.model}, {opts.texts} texts (max_length "
        f"{opts.max_length}), load average {os.getloadavg()}",
        flush=True,
    )
    texts = load_texts(opts.texts)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        data_dir = Path(tmp)
        base = base_model_dir(opts.model, data_dir)
        names = make_store(data_dir, base, max(opts.adapters), model_id=opts.model)
        mixed = []
        if opts.mix:
            mixed = make_store(data_dir, base, 64, methods=MIX, model_id=opts.model, prefix="mix")
        raw = RawModel(base, data_dir / "adapters" / names[0], texts, max_length=opts.max_length)
        before = raw_sweep(raw, opts, "before")
        served = start_served(base, data_dir, names + mixed, opts)
        naive = None
        if opts.naive_clients:
            from bench.naive import start_naive

            naive = start_naive(base, data_dir)
        print(
            "| kind | adapters | clients | texts/s | p50 ms | p99 ms | texts/pass | errors | load "
            "| server CPU ms/req (engine / api / main) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        try:
            cells = sweep(served, naive, names, texts, opts, mixed)
            rss = tree.role_rss_mb(served.pid)
            print(f"server processes {tree.role_counts(served.pid)}; RSS MB {rss}", flush=True)
            log = served.log_path.read_text(errors="replace").splitlines()
            refits = [line for line in log if "re-fitted from live passes" in line]
            print(f"server re-fitted its row caps {len(refits)} time(s)", flush=True)
            if refits:
                print(f"server, last: {refits[-1].split(': ', 1)[-1]}", flush=True)
        finally:
            served.stop()
            if naive is not None:
                naive.stop()
        after = raw_sweep(raw, opts, "after")
    reference = best_raw(before, after)
    print("\n".join(goals(cells, reference, opts) + mix_goal(cells)))
    print(f"load average after: {os.getloadavg()}")
    if opts.out:
        result = {"opts": {k: str(v) for k, v in vars(opts).items()}, "raw": [before, after]}
        result["cells"] = [asdict(c) for c in cells]
        result["server_rss_mb"] = rss
        opts.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
