"""The GPU check's served-throughput part: the real server at several client counts against the
best raw batch of the library in-process (bench/gpu_check.py runs it).
"""

from __future__ import annotations

from pathlib import Path

from bench.common import RawModel, api_workers_env, wait_for_log
from bench.gpu_parts import RESULTS, part, say
from bench.proctree import roles_text
from bench.served import served_cell


def start_server(base: Path, data_dir: Path, names: list[str], opts):
    import httpx

    from tests.support.server import start_server as start

    env = {
        "APP_DEVICE": opts.device,
        "APP_MAX_BATCH_SIZE": str(max(opts.raw_batches)),
        "APP_MAX_BATCH_TOKENS": str(max(opts.raw_batches) * 128),
        "APP_MAX_LENGTH": "128",
        "APP_MAX_RESIDENT_ADAPTERS": str(len(names)),
        "APP_MAX_QUEUE": "8192",
        "APP_ACCESS_LOG": "false",
        "APP_LOG_LEVEL": "info",
        "APP_EMBEDDED_WORKER": "false",
        "APP_REQUEST_TIMEOUT_S": "120",
        **api_workers_env(),  # the server's default for this host's cores
    }
    server = start(data_dir=data_dir, base_model=base, env=env, timeout_s=300)
    line = wait_for_log(server.log_path, "pass cost model|fixed pass overhead|failed", 60)
    say(f"server: {line.split(': ', 1)[-1] if line else 'no pass cost model logged'}")
    for name in names:
        httpx.post(f"{server.url}/adapters/{name}/load", timeout=120).raise_for_status()
    return server


def cell(server, names, texts, clients: int, opts) -> dict:
    load, mean_batch, cpu_ms = served_cell(
        server,
        names=names,
        texts=texts,
        clients=clients,
        seconds=opts.seconds,
        warmup=opts.warmup,
    )
    out = {"adapters": len(names), "clients": clients, **vars(load), "texts_per_pass": mean_batch}
    out["cpu_ms_per_request"] = cpu_ms  # per process role
    say(
        f"| served | {len(names)} | {clients} | {load.texts_s:.1f} | {load.p50_ms:.1f} | "
        f"{load.p99_ms:.1f} | {mean_batch:.1f} | {load.errors} | {roles_text(cpu_ms)} |"
    )
    return out


@part("throughput")
def throughput(base: Path, data_dir: Path, names: list[str], texts: list[str], opts) -> None:
    import torch

    dtype = torch.float32
    if opts.device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raw = RawModel(base, data_dir / "adapters" / names[0], texts, max_length=128)
    raw.model.to(device=opts.device, dtype=dtype)
    raw.device = opts.device
    sweep = {size: raw.measure(size, opts.raw_seconds) for size in opts.raw_batches}
    for size, r in sweep.items():
        say(f"raw batch {size} ({dtype}): {r['texts_s']:.1f} texts/s, {r['ms']:.2f} ms/pass")
    best = max(sweep, key=lambda s: sweep[s]["texts_s"])
    del raw
    if opts.device.startswith("cuda"):
        torch.cuda.empty_cache()
    server = start_server(base, data_dir, names, opts)
    say(
        "| kind | adapters | clients | texts/s | p50 ms | p99 ms | texts/pass | errors "
        "| server CPU ms/req (engine / api / main) |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    cells = []
    try:
        for clients in opts.clients:
            cells.append(cell(server, names[:1], texts, clients, opts))
        for clients in opts.clients[-2:]:
            cells.append(cell(server, names, texts, clients, opts))
    finally:
        server.stop()
    RESULTS["throughput"] = {"raw": sweep, "best_raw_batch": best, "cells": cells}
    for c in cells:
        ratio = c["texts_s"] / sweep[best]["texts_s"]
        say(f"{c['adapters']} adapter(s), {c['clients']} clients: {ratio:.2f}x best raw (b{best})")
    for c in cells:
        one = next(x for x in cells if x["adapters"] == 1 and x["clients"] == c["clients"])
        if c["adapters"] > 1:
            say(
                f"{c['adapters']} mixed-method adapters vs 1 at {c['clients']} clients: "
                f"{c['texts_s'] / one['texts_s']:.2f}x ({c['errors']} failed requests: a forward "
                "that cannot mix methods fails them)"
            )
