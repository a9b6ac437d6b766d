"""Serving through Ray Serve (ingress + N replicas) vs the plain server, same clients.

    python -m bench.serve_ray [--seconds 8] [--clients 16,64] [--replicas 1,2] [--adapters 8]

Builds a store of N random seq_bn adapters for MiniLM-L6 (`--tiny` for the tiny random model),
runs the plain server (`python -m app`, bench.serve's set-up) and then, for each replica
count, a two-node Ray cluster on 127.0.0.1 with the Serve app (tests.support.ray_cluster).
Closed-loop clients (bench.serve's), one text per request, adapter drawn uniformly. Prints a
table: texts/s, p50/p99 and the ratio to the plain server at the same client count, with the
box's load average (the box is shared: compare cells, not absolute numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.common import bootstrap, closed_loop, load_texts, make_store, minilm_dir
from bench.serve import MAX_BATCH
from bench.serve_report import Cell


def _row(cell: Cell, plain: Cell | None) -> str:
    ratio = f"{cell.texts_s / plain.texts_s:.2f}x" if plain and plain.texts_s else "-"
    return (
        f"| {cell.kind} | {cell.clients} | {cell.texts_s:.1f} | {cell.p50_ms:.1f} | "
        f"{cell.p99_ms:.1f} | {ratio} | {cell.errors} | {cell.load:.1f} |"
    )


def _measure(port: int, kind: str, names, texts, opts) -> list[Cell]:
    cells = []
    for clients in opts.clients:
        cell = asyncio.run(
            closed_loop(
                port,
                names=names,
                texts=texts,
                clients=clients,
                seconds=opts.seconds,
                warmup=opts.warmup,
                kind=kind,
            )
        )
        cells.append(cell)
        print(f"{kind} @ {clients} clients: {cell.texts_s:.1f} texts/s", flush=True)
    return cells


def plain_cells(base: Path, data_dir: Path, names, texts, opts) -> list[Cell]:
    from bench.serve import start_served

    server = start_served(base, data_dir, names, opts)
    try:
        return _measure(server.port, "plain", names, texts, opts)
    finally:
        server.stop()


def ray_cells(base: Path, store_dir: Path, replicas: int, names, texts, opts) -> list[Cell]:
    from tests.support.ray_cluster import serve_cluster

    settings = {
        "torch_threads": opts.threads,
        "max_batch_size": MAX_BATCH,
        "max_wait_ms": 5,
        "log_level": "warning",
    }
    with serve_cluster(
        store_dir=store_dir,
        base_model=base,
        replicas=replicas,
        max_adapters=len(names),
        settings=settings,
        access_log=False,
    ) as cluster:
        port = int(cluster.url.rsplit(":", 1)[1])
        cells = _measure(port, f"ray x{replicas}", names, texts, opts)
        loads = {r: s["adapter_loads"] for r, s in cluster.replica_stats().items()}
        print(f"ray x{replicas}: adapter loads per replica {loads}", flush=True)
        return cells


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", default="16,64")
    parser.add_argument("--replicas", default="1,2")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--tiny", action="store_true", help="the tiny random RoBERTa")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args(argv)
    opts.clients = [int(c) for c in opts.clients.split(",")]
    opts.replicas = [int(r) for r in opts.replicas.split(",")]
    texts = load_texts()
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        data_dir = Path(tmp)
        if opts.tiny:
            from tests.support.tiny import build_tiny_roberta

            base = build_tiny_roberta(data_dir / "tiny")
        else:
            base = minilm_dir()
        names = make_store(data_dir, base, opts.adapters)
        cells = plain_cells(base, data_dir, names, texts, opts)
        for replicas in opts.replicas:
            cells += ray_cells(base, data_dir / "adapters", replicas, names, texts, opts)
    plain = {c.clients: c for c in cells if c.kind == "plain"}
    print(f"\nload average at the end: {os.getloadavg()}")
    print("| server | clients | texts/s | p50 ms | p99 ms | vs plain | errors | load |")
    print("|---|---|---|---|---|---|---|---|")
    for cell in cells:
        print(_row(cell, plain.get(cell.clients)))
    if opts.out:
        opts.out.write_text(json.dumps([asdict(c) for c in cells], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
