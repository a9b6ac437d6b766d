"""Scale benchmark: the real server with thousands of adapters in its store, in one run.

    python -m bench.scale [--model tiny|minilm] [--adapters 10000] [--methods seq_bn,lora,...]
                          (default: every method the trainer offers, round robin)
                          [--clients 32] [--seconds 15] [--zipf 1.1] [--cold 300]
                          [--cycles 10000] [--api-workers N] [--env APP_KEY=VALUE ...]
                          [--json result.json]

Builds (or takes from the cache under --scratch) a store of N adapters of several methods
(bench/scale_store.py), starts `python -m app` on 127.0.0.1 with it and measures:
1. start-up: process spawn until /readyz answers 200; at once the first /classify (a hot
   adapter, cold), then 20 warm ones: first / warm median (goal <= 2x), and one never-requested
   adapter on the warm server (bench/first_request.py);
2. req/s with --clients closed-loop clients on one adapter, then with each request's adapter
   drawn from Zipf(s) over all N names, and their ratio; the server's CPU ms per request;
   (the 2 hot adapters get a few untimed requests first);
3. cold activation: --cold adapters never requested before, one after another, each requested
   twice in a row (cold, then warm): p50/p99 of both and of their difference; the server's
   adapter metrics, and from its histograms the p50/p99 of its own read and activation work
   in that phase (bucket bounds: the forward's variance is not in them);
4. hot p99: --hot-clients on 2 hot adapters alone, then while --storm-clients request
   never-seen adapters back to back (a cold storm); the ratio;
5. GET /adapters?limit=50: median time of 20 calls and the answer's size;
6. server RSS (per role) after start-up and after the Zipf phase; then a second server with a small
   residency budget (--cycle-env) runs --cycles activations over all names: RSS after the
   first --rss-after (1,000) vs at the end.
The server's CPU and RSS are read from /proc of its process and every descendant, per role
(bench/proctree.py: engine, API processes summed, main = the supervisor or the one process);
--api-workers N sets APP_API_WORKERS (default: the server's own choice from the cores, written
out so the run records it). The server runs torch on --threads threads (default 1: on a shared
or small CPU box, torch's default spins its idle threads and the numbers measure that);
--threads 0 keeps its default.
Every phase is bounded in time; a phase that fails is reported and the others still run; the
servers are stopped at the end whatever happens. Prints each phase, then a summary table.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import proctree as tree
from bench import scale_phases as phases
from bench.common import api_workers_env, bootstrap, load_texts
from bench.first_request import first_request
from bench.scale_report import summary
from bench.scale_store import METHODS, MODELS, build_store

HOT = 2


def say(line: str) -> None:
    print(line, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=MODELS, default="tiny")
    p.add_argument("--adapters", type=int, default=10_000)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=15.0, help="per measured phase")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s")
    p.add_argument("--cold", type=int, default=300, help="distinct cold adapters in a row")
    p.add_argument("--cold-limit-s", type=float, default=120.0)
    p.add_argument("--hot-clients", type=int, default=4)
    p.add_argument("--storm-clients", type=int, default=4)
    p.add_argument("--list-calls", type=int, default=20)
    p.add_argument("--cycles", type=int, default=10_000, help="0: no leak check")
    p.add_argument("--cycle-limit-s", type=float, default=300.0)
    p.add_argument("--rss-after", type=int, default=1000, help="cycles before the RSS reference")
    p.add_argument("--cycle-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--threads", type=int, default=1, help="the server's APP_TORCH_THREADS (0: its default)"
    )
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--api-workers", type=int, default=0, help="APP_API_WORKERS (0: its default)")
    p.add_argument("--startup-timeout-s", type=float, default=600.0)
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()) / "bench-scale")
    p.add_argument("--json", type=Path)
    opts = p.parse_args(argv)
    opts.methods = [m for m in opts.methods.split(",") if m]
    opts.env = _pairs(opts.env)
    if opts.api_workers < 0:
        p.error("--api-workers must be >= 1 (0: the server's default)")
    if opts.api_workers:
        opts.env["APP_API_WORKERS"] = str(opts.api_workers)
    opts.cycle_env = _pairs(opts.cycle_env) or {"APP_MAX_RESIDENT_ADAPTERS": "8"}
    return opts


def _pairs(items: list[str]) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in items)
    if any(not key for key in pairs):
        raise SystemExit(f"--env wants KEY=VALUE, got {items}")
    return pairs


def start(opts, base: Path, store: Path, data_dir: Path, extra: dict[str, str]):
    """`python -m app` on 127.0.0.1 (keys off); -> (server, seconds until /readyz is 200)."""
    from tests.support.server import start_server

    env = {
        **api_workers_env(),  # the server's default, unless --api-workers or --env set it
        "APP_STORE_DIR": str(store),
        "APP_MAX_LENGTH": "128",
        "APP_ACCESS_LOG": "false",
        "APP_LOG_LEVEL": "info",
        "APP_EMBEDDED_WORKER": "false",
        "APP_REQUEST_TIMEOUT_S": "120",
        **({"APP_TORCH_THREADS": str(opts.threads)} if opts.threads else {}),
        **opts.env,
        **extra,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server = start_server(
        data_dir=data_dir, base_model=base, env=env, timeout_s=opts.startup_timeout_s
    )
    return server, time.perf_counter() - started


class Run:
    """The results so far, and phases that record a failure instead of stopping the run."""

    def __init__(self, opts) -> None:
        self.opts = opts
        self.results: dict = {"opts": {k: str(v) for k, v in vars(opts).items()}}

    def phase(self, name: str, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            out = fn(*args, **kwargs)
            out = asyncio.run(out) if asyncio.iscoroutine(out) else out
        except Exception as exc:  # report it; the other phases still run
            out = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc(limit=4)
        self.results[name] = out
        say(f"[{name}] {time.perf_counter() - started:.1f} s: {json.dumps(out, default=str)}")
        return out


def traffic(names: list[str], s: float) -> tuple[list[str], list[float], list[str]]:
    """(names by Zipf rank, their cumulative weights, the never-requested pool in order)."""
    ranked = list(names)
    random.Random(1).shuffle(ranked)
    cum = list(itertools.accumulate(1 / (rank + 1) ** s for rank in range(len(ranked))))
    pool = ranked[HOT:]
    random.Random(2).shuffle(pool)
    return ranked, cum, pool


def serve_phases(run: Run, server, names: list[str], texts: list[str]) -> None:
    opts, pid, port = run.opts, server.pid, server.port
    ranked, cum, pool = traffic(names, opts.zipf)
    hot, cold, storm = ranked[:HOT], pool[: opts.cold], pool[opts.cold :]
    run.phase("first_request", first_request, server.url, adapter=hot[0], text=texts[0],
              cold_adapter=pool[-1] if pool else None)  # fmt: skip
    run.phase("listing", phases.listing, server.url, calls=opts.list_calls)
    run.phase("prime", phases.prime, server.url, names=hot, texts=texts)
    load = {"texts": texts, "clients": opts.clients, "seconds": opts.seconds}
    run.phase("one_adapter", phases.throughput, port, pid, names=hot[:1], **load)
    run.phase("metrics_before_cold", phases.adapter_metrics, server.url)
    run.phase("cold", phases.cold_then_warm, port, names=cold, texts=texts,
              limit_s=opts.cold_limit_s)  # fmt: skip
    run.phase("metrics_after_cold", phases.adapter_metrics, server.url)
    run.phase(
        "hot_storm", phases.hot_under_storm, port, hot=hot, pool=storm, texts=texts,
        clients=opts.hot_clients, storm_clients=opts.storm_clients, seconds=opts.seconds,
    )  # fmt: skip
    run.phase("metrics_before_zipf", phases.adapter_metrics, server.url)
    run.phase("zipf", phases.throughput, port, pid, names=ranked, cum_weights=cum, **load)
    run.results["rss_roles_mb"]["after_zipf"] = tree.role_rss_mb(pid)
    run.results["rss_mb"]["after_zipf"] = run.results["rss_roles_mb"]["after_zipf"]["total"]
    run.phase("metrics_end", phases.adapter_metrics, server.url)


def measure(run: Run, base: Path, store: Path, names: list[str], texts: list[str]) -> None:
    opts = run.opts
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        server = None
        try:
            server, run.results["startup_s"] = start(opts, base, store, Path(tmp) / "a", {})
            say(f"start-up with {len(names)} adapters: {run.results['startup_s']:.2f} s")
            run.results["processes"] = tree.role_counts(server.pid)
            say(f"processes: {run.results['processes']}")
            run.results["rss_roles_mb"] = {"startup": tree.role_rss_mb(server.pid)}
            run.results["rss_mb"] = {"startup": run.results["rss_roles_mb"]["startup"]["total"]}
            serve_phases(run, server, names, texts)
        finally:
            if server is not None:
                server.stop()
        if opts.cycles > 0:
            run.phase("cycles", cycles, opts, base, store, names, texts, Path(tmp) / "b")


def cycles(opts, base: Path, store: Path, names: list[str], texts: list[str], data_dir: Path):
    order = list(names)
    random.Random(3).shuffle(order)
    server, _ = start(opts, base, store, data_dir, opts.cycle_env)
    try:
        return asyncio.run(
            phases.cycle(server.port, server.pid, names=order, texts=texts, count=opts.cycles,
                         limit_s=opts.cycle_limit_s, every=opts.rss_after)
        )  # fmt: skip
    finally:
        server.stop()


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds: the servers are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    signal.signal(signal.SIGTERM, _terminated)
    opts = parse(argv)
    run = Run(opts)
    onepass = opts.env.get("APP_ONEPASS", "true").lower() not in ("0", "false", "no", "off")
    say(
        f"bench.scale: {platform.machine()}, {os.cpu_count()} CPUs, model {opts.model}, "
        f"{opts.adapters} adapters of {','.join(opts.methods)}, "
        f"{'one-pass' if onepass else 'library'} path (APP_ONEPASS), "
        f"load average {os.getloadavg()}"
    )
    base, store, names = build_store(opts.scratch, opts.model, opts.adapters, opts.methods, say=say)
    texts = load_texts("short", limit=256)
    measure(run, base, store, names, texts)
    run.results["load_average_end"] = os.getloadavg()
    say("\n".join(summary(run.results, opts)))
    if opts.json:
        opts.json.write_text(json.dumps(run.results, indent=2, default=str))
    failed = [k for k, v in run.results.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
