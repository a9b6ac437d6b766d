"""One measured cell against a started server (bench/serve.py, bench/gpu_served.py): closed-loop
clients (`bench.common.closed_loop`), the mean texts per forward pass over the window (from
/metrics), and the server's CPU ms per request per process role over the same window (/proc of
the server's process and every descendant: bench/proctree.py).
"""

from __future__ import annotations

import asyncio
import re

from bench import proctree as tree
from bench.common import Load, closed_loop


def batch_stats(url: str) -> tuple[float, float]:
    """(forward passes, texts in them) so far, from /metrics."""
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    values = {}
    for key in ("inference_batch_size_count", "inference_batch_size_sum"):
        values[key] = float(re.search(rf"^{key} (\S+)$", text, re.M).group(1))
    return values["inference_batch_size_count"], values["inference_batch_size_sum"]


async def _loop_and_cpu(server, loop: dict) -> tuple[Load, dict[str, float]]:
    window = tree.cpu_window(server.pid, loop.get("warmup", 2.0), loop["seconds"])
    load, cpu = await asyncio.gather(closed_loop(server.port, **loop), window)
    return load, cpu


def served_cell(
    server, *, batches: bool = True, **loop
) -> tuple[Load, float | None, dict[str, float]]:
    """One closed loop (`closed_loop`'s keywords) against a started server: the load, the mean
    texts per forward pass over it (None when not `batches`) and the server's CPU ms per
    request answered (or failed) in the window, per role (engine, api, main, other)."""
    before = batch_stats(server.url) if batches else None
    load, cpu = asyncio.run(_loop_and_cpu(server, loop))
    cpu_ms = tree.per_request(cpu, load.requests + load.errors)
    if before is None:
        return load, None, cpu_ms
    after = batch_stats(server.url)
    return load, (after[1] - before[1]) / max(after[0] - before[0], 1), cpu_ms
