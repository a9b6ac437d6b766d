"""The measured phases of bench/scale.py: each bounded in time, traffic to 127.0.0.1 only.

Every request carries one text. The server's own cost is read from /proc of its process and
every descendant, per role (bench/proctree.py: engine, API processes, main); its adapter
metrics from /metrics, whatever of them exist.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from dataclasses import asdict

from bench import proctree as tree
from bench.common import Conn, closed_loop

# Histograms whose buckets are kept too (their quantiles over a phase).
TIMED = ("adapter_load_seconds", "adapter_activation_seconds", "adapter_cold_seconds")
# Today's adapter metrics and the ones the reworked cache adds; absent ones are skipped.
ADAPTER_METRICS = (
    "adapter_activation_seconds",
    "adapter_cold_seconds",
    "adapter_cache_hits_total",
    "adapter_cache_misses_total",
    "adapter_evictions_total",
    "adapters_resident",
    "adapters_resident_bytes",
    "adapter_load_seconds",
    "adapter_loads_total",
)


def percentiles(prefix: str, seconds: list[float]) -> dict[str, float]:
    xs = sorted(seconds)
    if not xs:
        return {f"{prefix}_p50_ms": float("nan"), f"{prefix}_p99_ms": float("nan")}
    return {
        f"{prefix}_p50_ms": xs[len(xs) // 2] * 1000,
        f"{prefix}_p99_ms": xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000,
    }


def warmup_for(seconds: float) -> float:
    return min(2.0, seconds / 2)


async def _timed(conn: Conn, name: str, text: str) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = await conn.post("/classify", {"adapter": name, "inputs": text})
    return status, time.perf_counter() - started


def prime(url: str, *, names: list[str], texts: list[str], rounds: int = 5) -> dict:
    """Untimed requests to `names` so the first measured phase does not pay the first passes."""
    import httpx

    statuses: dict[int, int] = {}
    with httpx.Client(timeout=120) as client:
        for i in range(rounds):
            for name in names:
                payload = {"adapter": name, "inputs": texts[i % len(texts)]}
                code = client.post(url + "/classify", json=payload).status_code
                statuses[code] = statuses.get(code, 0) + 1
    return {"statuses": statuses}


async def throughput(port, pid, *, names, texts, clients, seconds, cum_weights=None) -> dict:
    """Closed-loop req/s over `names` (uniform or by `cum_weights`) + server CPU ms/request
    (the whole process tree, and per role)."""
    warmup = warmup_for(seconds)
    run = {"names": names, "texts": texts, "clients": clients, "seconds": seconds}
    load, cpu = await asyncio.gather(
        closed_loop(port, **run, warmup=warmup, cum_weights=cum_weights),
        tree.cpu_window(pid, warmup, seconds),
    )
    done = load.requests + load.errors
    cpu_ms = sum(cpu.values()) * 1000 / done if done else float("nan")
    out = {**asdict(load), "req_s": load.texts_s, "cpu_ms_per_request": cpu_ms}
    return {**out, "role_ms_per_request": tree.per_request(cpu, done)}


async def cold_then_warm(port, *, names, texts, limit_s) -> dict:
    """Each adapter requested twice in a row: first cold (never requested), then warm."""
    conn = Conn(port)
    cold: list[float] = []
    warm: list[float] = []
    added: list[float] = []  # cold minus warm of one adapter: what its activation added
    errors = 0
    deadline = time.perf_counter() + limit_s
    try:
        for i, name in enumerate(names):
            if time.perf_counter() > deadline:
                break
            pair = []
            for bucket in (cold, warm):
                status, took = await _timed(conn, name, texts[i % len(texts)])
                if status == 200:
                    bucket.append(took)
                    pair.append(took)
                else:
                    errors += 1
            if len(pair) == 2:
                added.append(pair[0] - pair[1])
    finally:
        conn.close()
    return {
        "adapters": len(cold),
        "errors": errors,
        **percentiles("cold", cold),
        **percentiles("warm", warm),
        **percentiles("added", added),
    }


async def hot_under_storm(port, *, hot, pool, texts, clients, storm_clients, seconds) -> dict:
    """Hot adapters' latency alone, then while other clients request never-seen adapters."""
    warmup = warmup_for(seconds)
    alone = await closed_loop(
        port, names=hot, texts=texts, clients=clients, seconds=seconds, warmup=warmup
    )
    fresh = iter(pool)
    storm: list[float] = []
    state = {"errors": 0, "exhausted": False}
    end = time.perf_counter() + warmup + seconds

    async def stormer(k: int) -> None:
        conn = Conn(port)
        try:
            while time.perf_counter() < end:
                name = next(fresh, None)
                if name is None:
                    state["exhausted"] = True
                    return
                status, took = await _timed(conn, name, texts[k % len(texts)])
                if status == 200:
                    storm.append(took)
                else:
                    state["errors"] += 1
        finally:
            conn.close()

    busy, *_ = await asyncio.gather(
        closed_loop(port, names=hot, texts=texts, clients=clients, seconds=seconds, warmup=warmup),
        *(stormer(k) for k in range(storm_clients)),
    )
    return {
        "alone": asdict(alone),
        "storm": asdict(busy),
        "ratio_p99": busy.p99_ms / alone.p99_ms if alone.p99_ms else float("nan"),
        "storm_requests": len(storm),
        "storm_errors": state["errors"],
        "storm_pool_exhausted": state["exhausted"],
        **percentiles("storm", storm),
    }


def listing(url: str, *, calls: int, limit_s: float = 60.0) -> dict:
    """Median time of GET /adapters?limit=50 and the size of its answer."""
    import httpx

    times: list[float] = []
    deadline = time.perf_counter() + limit_s
    with httpx.Client(timeout=120) as client:
        while len(times) < calls and (not times or time.perf_counter() < deadline):
            started = time.perf_counter()
            response = client.get(url + "/adapters", params={"limit": 50})
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    body = response.json()
    items = body.get("adapters", []) if isinstance(body, dict) else body
    return {
        "calls": len(times),
        "median_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
        "bytes": len(response.content),
        "items": len(items),
    }


def adapter_metrics(url: str) -> dict[str, float]:
    """Samples of ADAPTER_METRICS from /metrics (histograms: _count and _sum; the buckets of
    TIMED too, for their quantiles)."""
    import httpx

    response = httpx.get(url + "/metrics", timeout=30)
    if response.status_code != 200:
        return {}
    out = {}
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        name = key.split("{")[0]
        if name.removesuffix("_bucket") in TIMED:
            out[key] = float(value)
        stem = name.removesuffix("_count").removesuffix("_sum")
        if stem in ADAPTER_METRICS and not name.endswith("_created"):
            out[key] = float(value)
    return out


async def cycle(port, pid, *, names, texts, count, limit_s, every=1000, clients=2) -> dict:
    """`count` activations over `names` in turn (a small residency budget evicts): growth of
    the server's RSS (every process summed) from the first `every` activations (sampled every
    `every`) to the end."""
    order = itertools.cycle(names)
    counts = {"started": 0, "done": 0, "errors": 0}
    samples: list[tuple[int, float]] = []
    deadline = time.perf_counter() + limit_s

    async def client() -> None:
        conn = Conn(port)
        try:
            while counts["started"] < count and time.perf_counter() < deadline:
                counts["started"] += 1
                status, _ = await _timed(conn, next(order), texts[counts["started"] % len(texts)])
                counts["done"] += 1
                counts["errors"] += status != 200
                if counts["done"] % every == 0:
                    samples.append((counts["done"], tree.role_rss_mb(pid)["total"]))
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    samples.append((counts["done"], tree.role_rss_mb(pid)["total"]))
    first = next((mb for n, mb in samples if n >= every), float("nan"))
    return {
        "activations": counts["done"],
        "errors": counts["errors"],
        "rss_mb": samples,
        "rss_after_first_mb": first,
        "rss_end_mb": samples[-1][1],
        "growth": samples[-1][1] / first - 1,
    }
