"""The engine process alone at saturation: its requests/s and CPU per request (issue 28).

    python -m bench.engine_load [--model tiny|minilm] [--concurrency 16,64,256] [--seconds 8]
                                [--texts 1] [--threads 1] [--env APP_KEY=VALUE ...]

bench/overhead.py measures the whole server behind HTTP; there the engine runs only as fast as
the API processes feed it, so its passes are as small as the arrivals, and on a small box it
shares the cores with them. Here the engine is the bottleneck: `python -m app --api-workers 2`
(1 runs no engine process) starts on 127.0.0.1 with the tiny model (or MiniLM) and one
adapter. Its API processes stay idle; this process, an API process without HTTP, connects an
`EngineClient` to the engine's socket (found through /proc) and keeps --concurrency requests
of --texts pre-tokenised short texts in flight (closed loop), --seconds per cell. Per cell:
req/s, the engine's CPU ms per request (utime + stime of its process, all threads, /proc),
texts per forward pass (the server's metrics) and this client's own CPU per request.
Goal (issue 28): the engine spends <= 0.15 ms of CPU per request. The server is stopped at
the end whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import proctree
from bench.common import bootstrap, make_store, minilm_dir
from bench.scale import _terminated, say

TEXT = "the movie was great and the acting superb"
GOAL_MS = 0.15


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "minilm"], default="tiny")
    p.add_argument("--concurrency", default="16,64,256")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--texts", type=int, default=1, help="texts per request")
    p.add_argument("--threads", type=int, default=1, help="APP_TORCH_THREADS (0: torch's)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--base-model", type=Path, help="a tiny model already built (default: build)")
    p.add_argument("--json", type=Path, help="write every number here")
    opts = p.parse_args(argv)
    opts.concurrency = [int(x) for x in opts.concurrency.split(",") if x]
    opts.env = dict(item.split("=", 1) for item in opts.env)
    return opts


def engine_of(root: int) -> tuple[int, Path]:
    """The engine process of the server `root`: (pid, its runtime folder: where the unix
    socket it listens on lies; /proc/net/unix names it by inode)."""
    for pid in proctree.process_tree(root):
        if proctree.role_of(pid, root) == "engine":
            inodes = set()
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
            for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 8 and fields[6] in inodes and fields[7].endswith("/engine.sock"):
                    return pid, Path(fields[7]).parent
    raise RuntimeError("no engine process listening (APP_API_WORKERS must be 2 or more)")


def cpu_seconds(pid: int) -> float:
    fields = proctree.stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def passes(url: str) -> tuple[float, float]:
    """(texts, passes) run so far: the server's inference_batch_size histogram."""
    import urllib.request

    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    found = {}
    for line in text.splitlines():
        for key in ("inference_batch_size_sum", "inference_batch_size_count"):
            if line.startswith(key + " "):
                found[key] = float(line.split()[1])
    return found.get("inference_batch_size_sum", 0.0), found.get("inference_batch_size_count", 0.0)


async def drive(client, ids, adapter: str, concurrency: int, seconds: float) -> tuple[int, int]:
    """Closed loop: `concurrency` requests in flight for `seconds`; (answered, failed)."""
    stop_at = time.monotonic() + seconds
    answered = failed = 0

    async def one() -> None:
        nonlocal answered, failed
        while time.monotonic() < stop_at:
            try:
                await client.classify_ids(ids, [adapter])
                answered += 1
            except Exception:  # counted: a full queue or a timeout is a result too
                failed += 1

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return answered, failed


async def run_cells(server, base: Path, adapter: str, opts) -> list[dict]:
    from transformers import AutoTokenizer

    from app.procs.engine_client import EngineClient

    pid, runtime = engine_of(server.pid)
    client = EngineClient(runtime, base_model=str(base), timeout_s=30.0)
    await client.start()
    try:
        ids = [AutoTokenizer.from_pretrained(str(base))(TEXT)["input_ids"]] * opts.texts
        await drive(client, ids, adapter, 8, 1.0)  # the adapter read, the first passes run
        cells = []
        for concurrency in opts.concurrency:
            await drive(client, ids, adapter, concurrency, 1.0)
            before = (cpu_seconds(pid), own_cpu(), passes(server.url), time.monotonic())
            answered, failed = await drive(client, ids, adapter, concurrency, opts.seconds)
            wall = time.monotonic() - before[3]
            texts, count = (a - b for a, b in zip(passes(server.url), before[2], strict=True))
            per = 1000 / answered if answered else float("nan")
            cells.append({
                "concurrency": concurrency, "req_s": answered / wall, "failed": failed,
                "engine_ms": (cpu_seconds(pid) - before[0]) * per,
                "client_ms": (own_cpu() - before[1]) * per,
                "texts_per_pass": texts / count if count else float("nan"),
            })  # fmt: skip
            c = cells[-1]
            say(f"| {concurrency} | {c['req_s']:,.0f} | {c['engine_ms']:.3f} | "
                f"{c['texts_per_pass']:.1f} | {c['client_ms']:.3f} | {failed} |")  # fmt: skip
        return cells
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    opts = parse(argv)
    from tests.support.server import start_server

    signal.signal(signal.SIGTERM, _terminated)
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        scratch = Path(tmp)
        if opts.base_model is not None:
            base = opts.base_model
        elif opts.model == "tiny":
            from tests.support.tiny import build_tiny_roberta

            base = build_tiny_roberta(scratch / "tiny")
        else:
            base = minilm_dir()
        (adapter,) = make_store(scratch, base, 1, model_id=opts.model)
        env = {"APP_STORE_DIR": str(scratch / "adapters"), "APP_API_WORKERS": "2", **opts.env}
        if opts.threads:
            env["APP_TORCH_THREADS"] = str(opts.threads)
        server = start_server(data_dir=scratch / "data", base_model=base, env=env, timeout_s=300)
        try:
            say(f"engine alone, {opts.model}, {opts.texts} text(s) per request, "
                f"{opts.seconds:g} s per cell, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
            say("| in flight | req/s | engine ms/req | texts/pass | client ms/req | failed |")
            say("|---|---|---|---|---|---|")
            cells = asyncio.run(run_cells(server, base, adapter, opts))
        finally:
            server.stop()
    best = min((c["engine_ms"] for c in cells), default=float("nan"))
    met = best <= GOAL_MS * opts.texts
    say(f"goal: engine CPU per request <= {GOAL_MS} ms: best {best:.3f} ms: "
        f"{'met' if met else 'not met'}")  # fmt: skip
    if opts.json is not None:
        opts.json.write_text(json.dumps({"model": opts.model, "cells": cells, "goal_met": met}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
