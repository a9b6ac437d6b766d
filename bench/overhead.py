"""Overhead benchmark: what a request costs the server's CPU, against a bare-FastAPI reference.

    python -m bench.overhead [--seconds 8] [--clients 1,16,64] [--json result.json]
                             [--client auto|wrk|python] [--threads 0] [--env APP_KEY=VALUE ...]
                             [--api-workers 1,2,4]

Builds the tests' tiny random RoBERTa (hidden 32, 2 layers: its forward costs almost nothing)
and one random seq_bn adapter in a temporary store, then starts, on 127.0.0.1:
- ours: `python -m app` as a user starts it, its defaults (torch's thread choice, the access
  log, the embedded training worker, pass-cost calibration, no keys on loopback) with the
  temporary store, plus every --env (--threads N: APP_TORCH_THREADS=N);
- the reference: `python -m bench.overhead_ref`, a bare FastAPI app with the same request model
  and a constant answer, under the same uvicorn call (APP_ACCESS_LOG / APP_LOG_LEVEL as ours).
For each client count, each server in turn gets a short warm-up and then
`wrk -t1 -c{clients} -d{seconds}s` posting one short text to /classify (--client python: a
lean asyncio client, used when wrk is not installed). Per cell: req/s, p50 and p99 ms, and the
server's own CPU seconds (utime+stime from /proc of its process and all its descendants) per
request answered. Then the ratio of our req/s to the reference's, each server's CPU while idle,
the HTTP implementation and event loop uvicorn loaded in each (httptools/h11, uvloop/asyncio),
and the goals of issue 19, met or not (--json PATH: every number, the commit, the client).
Right after each of ours is ready, its first /classify is timed against 20 warm ones and one
to a never-requested adapter (bench/first_request.py; issue 28's goal: first <= 2x warm).
--api-workers N[,M...] starts one of ours per count (`ours wN`: APP_API_WORKERS=N) and reports
each cell's CPU per request per process role (engine, API processes summed, main: the
supervisor, or the whole server with one process; bench/proctree.py) and issue 28's goals.
Both servers are stopped at the end whatever happens (also on SIGTERM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import overhead_load as load
from bench import overhead_procs as procs
from bench import proctree as tree
from bench.common import REPO, api_workers_env, bootstrap, make_store
from bench.first_request import first_request
from bench.first_request import line as first_line
from bench.scale import _terminated, say  # SIGTERM unwinds: the servers are stopped on the way out

TEXT = "the movie was great and the acting superb"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=8, help="per measured cell (whole seconds)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before each cell")
    p.add_argument("--clients", default="1,16,64")
    p.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--threads", type=int, default=0, help="APP_TORCH_THREADS (0: torch's choice)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="for ours")
    p.add_argument("--base-model", type=Path, help="a tiny model already built (default: build)")
    p.add_argument("--startup-timeout-s", type=float, default=300.0)
    p.add_argument("--json", type=Path, help="write every number here")
    p.add_argument("--api-workers", default="", help="a sweep, e.g. 1,2 (one of ours per count)")
    opts = p.parse_args(argv)
    opts.clients = [int(x) for x in opts.clients.split(",") if x]
    opts.api_workers = [int(x) for x in opts.api_workers.split(",") if x] or [None]
    if opts.seconds < 1 or not opts.clients or min(opts.clients) < 1:
        p.error("--seconds and every --clients must be >= 1")
    opts.env = dict(item.split("=", 1) for item in opts.env)
    if opts.client == "auto":
        opts.client = "wrk" if load.wrk_path() else "python"
    elif opts.client == "wrk" and not load.wrk_path():
        p.error("wrk is not installed (Debian: apt-get install wrk); or use --client python")
    return opts


def prepare(scratch: Path, opts) -> tuple[Path, list[str]]:
    """(tiny base model, [the measured adapter, a spare one]) in `scratch`."""
    base = opts.base_model
    if base is None:
        from tests.support.tiny import build_tiny_roberta

        base = build_tiny_roberta(scratch / "tiny")
    return base, make_store(scratch, base, 2, model_id="tiny")


def start_both(servers: dict, scratch: Path, base: Path, names: list[str], opts) -> dict:
    """Ours, then the reference, into `servers` as each comes up (the caller stops them); each
    of ours answers its first /classify at once (bench/first_request.py; `names`: the measured
    adapter, then one never requested); -> our server's APP_* settings and those answers."""
    from tests.support.server import start_server

    ours_env = {
        "APP_STORE_DIR": str(scratch / "adapters"),
        **({"APP_TORCH_THREADS": str(opts.threads)} if opts.threads else {}),
        **opts.env,
    }
    same = ("APP_ACCESS_LOG", "APP_LOG_LEVEL")  # the uvicorn.run arguments besides the address
    common = {key: ours_env[key] for key in same if key in ours_env}
    timeout = opts.startup_timeout_s
    firsts = {}
    for workers in opts.api_workers:  # None: the default count (APP_API_WORKERS, or cores)
        key = "ours" if workers is None else f"ours w{workers}"
        extra = api_workers_env(workers or 0) if "APP_API_WORKERS" not in ours_env else {}
        servers[key] = start_server(
            data_dir=scratch / key.replace(" ", "-"),
            base_model=base,
            env={**ours_env, **extra},
            timeout_s=timeout,
        )
        url, (name, spare) = servers[key].url, names
        firsts[key] = first_request(url, adapter=name, text=TEXT, cold_adapter=spare)
        say(f"{key}: {first_line(firsts[key])}")
    servers["reference"] = start_server(
        data_dir=scratch / "ref", env=common, module="bench.overhead_ref", timeout_s=timeout
    )
    return {"ours_env": ours_env, "first_request": firsts}


def drive(url: str, body: bytes, clients: int, seconds: float, opts) -> load.Load:
    if opts.client == "wrk":
        return load.run_wrk(url, body, clients=clients, seconds=max(1, round(seconds)))
    return load.run_python(url, body, clients=clients, seconds=seconds)


def cell(server, body: bytes, clients: int, opts) -> dict:
    if opts.warmup > 0:
        drive(server.url, body, clients, opts.warmup, opts)
    before = tree.role_cpu_seconds(server.pid)
    result = drive(server.url, body, clients, opts.seconds, opts)
    spent = tree.delta(before, tree.role_cpu_seconds(server.pid))
    per_role = tree.per_request(spent, result.requests)
    cpu = sum(spent.values())
    per_request = cpu * 1000 / result.requests if result.requests else float("nan")
    return {
        "clients": clients,
        "requests": result.requests,
        "errors": result.errors,
        "req_s": result.req_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "cpu_s": cpu,
        "cpu_ms_per_request": per_request,
        "role_ms_per_request": per_role,  # engine, api (summed), main, other
        "cores_used": cpu / result.seconds if result.seconds else float("nan"),
        "load_average": os.getloadavg()[0],
    }


def row(name: str, c: dict) -> str:
    return (
        f"| {name} | {c['clients']} | {c['req_s']:,.0f} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} "
        f"| {c['cpu_ms_per_request']:.2f} | {roles(c)} | {c['cores_used']:.2f} | {c['errors']} "
        f"| {c['load_average']:.1f} |"
    )


def roles(c: dict) -> str:
    r = c["role_ms_per_request"]
    return f"{r['engine']:.3f} / {r['api']:.3f} / {r['main']:.3f}"


def measure(servers: dict, name: str, opts) -> dict:
    """Every cell, the two servers in turn at each client count."""
    body = json.dumps({"adapter": name, "inputs": TEXT}).encode()
    for server in servers.values():  # the adapter loaded, the first passes done
        load.run_python(server.url, body, clients=1, seconds=0.5)
    idle = {}
    for key, server in servers.items():  # CPU while nothing is asked: spinning threads show
        before = tree.tree_cpu_seconds(server.pid)
        time.sleep(2.0)
        idle[key] = (tree.tree_cpu_seconds(server.pid) - before) / 2.0
    say(
        "| server | clients | req/s | p50 ms | p99 ms | CPU ms/req | engine / api / main ms/req "
        "| cores | errors | load |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|")
    cells: dict[str, list[dict]] = {key: [] for key in servers}
    for clients in opts.clients:
        for key, server in servers.items():
            cells[key].append(cell(server, body, clients, opts))
            say(row(key, cells[key][-1]))
    stacks = {key: load.uvicorn_stack(server.pid) for key, server in servers.items()}
    return {"cells": cells, "idle_cores": idle, "uvicorn": stacks}


def ours_key(result: dict) -> str:
    """The server issue 19's goals read: `ours`, else the first of the sweep."""
    return next(key for key in result["cells"] if key.startswith("ours"))


def ratios(result: dict) -> dict[int, float]:
    ref = {c["clients"]: c["req_s"] for c in result["cells"]["reference"]}
    return {
        c["clients"]: c["req_s"] / ref[c["clients"]] if ref[c["clients"]] else float("nan")
        for c in result["cells"][ours_key(result)]
    }


def goals(result: dict) -> list[tuple[str, bool | None, str]]:
    """(goal, met (None: not measured), what was measured) for issue 19's goals."""
    ours = {c["clients"]: c for c in result["cells"][ours_key(result)]}
    ratio = ratios(result)

    def check(clients: int, key: str, limit: float, label: str):
        if clients not in ours:
            return (label, None, f"{clients} clients not measured")
        value = ours[clients][key]
        if not ours[clients]["requests"]:
            return (label, False, "no request answered")
        return (label, value <= limit, f"{value:.2f}")

    label = "req/s at 64 clients >= 0.3x the bare reference"
    versus = (label, ratio[64] >= 0.3, f"{ratio[64]:.2f}x") if 64 in ratio else None
    return [
        check(16, "cpu_ms_per_request", 0.5, "server CPU per request at 16 clients <= 0.5 ms"),
        check(64, "cpu_ms_per_request", 0.5, "server CPU per request at 64 clients <= 0.5 ms"),
        check(1, "cpu_ms_per_request", 1.0, "server CPU per request at 1 client <= 1.0 ms"),
        check(1, "p99_ms", 10.0, "1-client p99 <= 10 ms"),
        versus or (label, None, "64 clients not measured"),
        *(procs.sweep_goals(result["cells"]) if "ours w2" in result["cells"] else []),
        *procs.first_goals(result.get("first_request", {})),
    ]


def report(result: dict) -> list[str]:
    lines = [f"{n} clients: ours / reference req/s = {r:.2f}x" for n, r in ratios(result).items()]
    if sum(key.startswith("ours w") for key in result["cells"]) > 1:
        lines += procs.sweep_lines(result["cells"])
    for key, stack in result["uvicorn"].items():
        lines.append(
            f"{key}: uvicorn with {stack['http']} and {stack['loop']} "
            f"({stack['processes']} process(es)); idle CPU {result['idle_cores'][key]:.2f} cores"
        )
    for label, met, value in result["goals"]:
        verdict = "not measured" if met is None else ("met" if met else "NOT met")
        lines.append(f"goal: {label}: {value} ({verdict})")
    lines.append("(issue 19's real-model goals are measured by bench.serve)")
    return lines


def header(opts) -> dict:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() or "unknown"

    commit = git("describe", "--always", "--dirty")
    served = git("log", "-1", "--format=%h", "--", "app", "adapters_store")  # the served code
    client = load.wrk_version() if opts.client == "wrk" else "python asyncio fallback client"
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    say(
        f"bench.overhead: {machine}, commit {commit} (app/ and adapters_store/ last changed in "
        f"{served}), client {client}, load average {os.getloadavg()}"
    )
    return {
        "machine": machine,
        "commit": commit,
        "served_code_commit": served,
        "client": client,
        "load_average_start": os.getloadavg(),
        "opts": {k: str(v) for k, v in vars(opts).items()},
    }


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    signal.signal(signal.SIGTERM, _terminated)
    opts = parse(argv)
    result = header(opts)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        scratch = Path(tmp)
        base, names = prepare(scratch, opts)
        servers: dict = {}
        try:
            result.update(start_both(servers, scratch, base, names, opts))
            result.update(measure(servers, names[0], opts))
        finally:
            for server in servers.values():
                server.stop()
    result["goals"] = goals(result)
    result["ratios"] = ratios(result)
    result["load_average_end"] = os.getloadavg()
    say("\n".join(report(result)))
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
