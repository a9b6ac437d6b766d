"""Fair shares under a flood: a light key's latency alone and while another key floods.

    python -m bench.fairness [--model minilm|tiny] [--flood-clients 64] [--seconds 8]
                             [--api-workers N] [--env APP_KEY=VALUE ...]

Starts `python -m app` on 127.0.0.1 with two API keys: FLOOD (keys-file options
`--flood-options`, default `inflight=64`) and LIGHT (no limits). The light key sends one text
per request, one request at a time: first alone (`--alone` requests), then while
`--flood-clients` clients of the flood key (a second process: `python -m bench.fairness flood`)
send `--flood-texts` texts per request back to back, retrying at once after a 429 (they ignore
Retry-After, the worst case). Prints the light key's p50/p99 alone and under the flood, the p99
ratio (the issue's goal: <= 2), and every status each key got (goal: the flood gets 429s, the
light key no 429 or 503), and the server's CPU while the flood ran per process role (engine /
API processes summed / main: the supervisor or the one process; bench/proctree.py): cores
used and ms per request. `--api-workers N` sets APP_API_WORKERS (default: the server's own
choice; each API process keeps its own in-flight counts). Traffic to 127.0.0.1 only, bounded
by `--seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import proctree as tree
from bench.common import REPO, api_workers_env, bootstrap

TEXTS = ["a good film", "the battery is awful", "quite a lovely phone", "poor service"]
FLOOD_KEY_ENV = "FAIRNESS_FLOOD_KEY"
ADAPTER = "sent-00"  # the one adapter make_store writes with prefix "sent"


class Client:
    """A lean HTTP/1.1 client with a bearer key; reconnects after `Connection: close`."""

    def __init__(self, port: int, key: str) -> None:
        self.port, self.key = port, key
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.queue_ms = 0.0  # the last answer's x-queue-time: waiting for a forward pass

    async def post(self, path: str, payload: dict) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection("127.0.0.1", self.port)
        reader, writer = self.streams
        body = json.dumps(payload).encode()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await reader.readexactly(length)
        queued = re.search(rb"(?i)\r\nx-queue-time: *([\d.]+)", head)
        self.queue_ms = float(queued.group(1)) if queued else 0.0
        if re.search(rb"(?i)\r\nconnection: *close", head):
            self.close()
        return int(head[9:12])

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def flood(port: int, key: str, clients: int, seconds: float, texts: int) -> Counter:
    """`clients` clients posting `texts` texts per request back to back for `seconds` (or
    until SIGTERM: each finishes its request, then the statuses are returned)."""
    end = time.monotonic() + seconds
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    statuses: Counter = Counter()
    payload = {"adapter": ADAPTER, "inputs": (TEXTS * texts)[:texts]}

    async def one() -> None:
        client = Client(port, key)
        try:
            while time.monotonic() < end and not stop.is_set():
                try:
                    statuses[await client.post("/classify", payload)] += 1
                except (ConnectionError, asyncio.IncompleteReadError):
                    statuses["reset"] += 1
                    client.close()
        finally:
            client.close()

    await asyncio.gather(*(one() for _ in range(clients)))
    return statuses


async def light(
    port: int, key: str, *, count: int = 0, until: float = 0.0, queue_ms: list | None = None
) -> tuple:
    """One request at a time: `count` of them, or until `until` (monotonic); (latencies,
    statuses); each answer's x-queue-time goes to `queue_ms`."""
    client = Client(port, key)
    latencies, statuses = [], Counter()
    try:
        while (count and len(latencies) + sum(statuses.values()) < count) or (
            until and time.monotonic() < until
        ):
            started = time.perf_counter()
            status = await client.post("/classify", {"adapter": ADAPTER, "inputs": [TEXTS[0]]})
            if status == 200:
                latencies.append(time.perf_counter() - started)
                if queue_ms is not None:
                    queue_ms.append(client.queue_ms / 1000)
            else:
                statuses[status] += 1
    finally:
        client.close()
    return sorted(latencies), statuses


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(len(values) * q))] * 1000 if values else float("nan")


def start_flood(port: int, key: str, opts) -> subprocess.Popen:
    args = [sys.executable, "-m", "bench.fairness", "flood", "--port", str(port)]
    args += ["--flood-clients", str(opts.flood_clients), "--seconds", str(opts.seconds)]
    args += ["--flood-texts", str(opts.flood_texts)]
    env = {**os.environ, FLOOD_KEY_ENV: key}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def base_model(kind: str, scratch: Path) -> tuple[Path, str]:
    if kind == "tiny":
        from tests.support.tiny import build_tiny_roberta

        path = build_tiny_roberta(scratch / "tiny")
        return path, str(path)
    from bench.common import minilm_dir

    return minilm_dir(), "minilm"


def run(opts) -> dict:
    from bench.common import make_store
    from tests.support.server import running_server

    keys = {name: secrets.token_urlsafe(32) for name in ("flood", "light")}
    with tempfile.TemporaryDirectory(prefix="bench-fairness-") as tmp:
        data_dir = Path(tmp)
        base, model_id = base_model(opts.model, data_dir)
        make_store(data_dir, base, 1, model_id=model_id, prefix="sent")
        keys_file = data_dir / "keys"
        keys_file.write_text(
            f"{keys['flood']} classify {opts.flood_options}\n{keys['light']} classify+admin\n"
        )
        env = {
            "APP_API_KEYS_FILE": str(keys_file),
            "APP_ACCESS_LOG": "false",
            "APP_EMBEDDED_WORKER": "false",
            "APP_MAX_LENGTH": "64",
            **api_workers_env(opts.api_workers),
            **dict(pair.split("=", 1) for pair in opts.env),
        }
        with running_server(data_dir=data_dir, base_model=base, env=env) as server:
            return summary(measure(server, keys, opts))


def measure(server, keys: dict[str, str], opts) -> dict:
    """The light key alone, then under the flood; the server's CPU per role while it ran."""
    import httpx

    port, m = server.port, {"queued_alone": [], "queued_under": []}
    asyncio.run(light(port, keys["light"], count=20))  # warm-up
    m["alone"], m["alone_errors"] = asyncio.run(
        light(port, keys["light"], count=opts.alone, queue_ms=m["queued_alone"])
    )
    cpu_before, started = tree.role_cpu_seconds(server.pid), time.monotonic()
    proc = start_flood(port, keys["flood"], opts)
    time.sleep(1.0)  # the flood is under way
    until = time.monotonic() + opts.seconds - 2.0
    m["under"], m["under_errors"] = asyncio.run(
        light(port, keys["light"], until=until, queue_ms=m["queued_under"])
    )
    flood_out, _ = proc.communicate(timeout=opts.seconds + 60)
    m["cpu"] = tree.delta(cpu_before, tree.role_cpu_seconds(server.pid))
    m["elapsed"], m["processes"] = time.monotonic() - started, tree.role_counts(server.pid)
    m["flood_statuses"] = json.loads(flood_out.strip().splitlines()[-1])
    headers = {"Authorization": f"Bearer {keys['light']}"}
    m["metrics"] = httpx.get(server.url + "/metrics", headers=headers, timeout=10).text
    return m


def summary(m: dict) -> dict:
    alone, under = m["alone"], m["under"]
    queued_alone, queued_under = sorted(m["queued_alone"]), sorted(m["queued_under"])
    rejected = dict(re.findall(r'inference_rejected_total\{reason="(\w+)"\} (\S+)', m["metrics"]))
    flood = m["flood_statuses"]
    answered = sum(v for k, v in flood.items() if k != "reset") + len(under)
    answered += sum(m["under_errors"].values())
    result = {
        "light_alone": {"requests": len(alone), "p50_ms": percentile(alone, 0.5)},
        "light_flood": {"requests": len(under), "p50_ms": percentile(under, 0.5)},
        "light_queue_ms": {
            "alone_p50": percentile(queued_alone, 0.5),
            "alone_p99": percentile(queued_alone, 0.99),
            "flood_p50": percentile(queued_under, 0.5),
            "flood_p99": percentile(queued_under, 0.99),
        },
        "light_errors": {str(k): v for k, v in (m["alone_errors"] + m["under_errors"]).items()},
        "flood_statuses": flood,
        "server_rejected": rejected,
        "nested_passes": sum(  # light passes run between two layers of the flood's
            float(v) for v in re.findall(r"(?m)^inference_nested_passes_total (\S+)", m["metrics"])
        ),
        "processes": m["processes"],
        "flood_cpu_cores": {role: sec / m["elapsed"] for role, sec in m["cpu"].items()},
        "flood_cpu_ms_per_request": tree.per_request(m["cpu"], answered),
    }
    result["light_alone"]["p99_ms"] = percentile(alone, 0.99)
    result["light_flood"]["p99_ms"] = percentile(under, 0.99)
    result["p99_ratio"] = result["light_flood"]["p99_ms"] / result["light_alone"]["p99_ms"]
    return result


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "flood"])
    parser.add_argument("--model", default="minilm", choices=["minilm", "tiny"])
    parser.add_argument("--flood-clients", type=int, default=64)
    parser.add_argument("--flood-texts", type=int, default=4)
    parser.add_argument("--flood-options", default="inflight=64")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--alone", type=int, default=200)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--env", action="append", default=[], help="APP_X=VALUE for the server")
    parser.add_argument("--api-workers", type=int, default=0, help="APP_API_WORKERS (0: default)")
    opts = parser.parse_args(argv)
    opts.seconds = min(opts.seconds, 120.0)  # bounded
    opts.flood_clients = min(opts.flood_clients, 256)
    return opts


def main(argv: list[str] | None = None) -> int:
    bootstrap()
    opts = parse(argv)
    if opts.mode == "flood":
        key = os.environ[FLOOD_KEY_ENV]
        args = (opts.port, key, opts.flood_clients, opts.seconds, opts.flood_texts)
        statuses = asyncio.run(flood(*args))
        print(json.dumps({str(k): v for k, v in statuses.items()}))
        return 0
    print(f"load average before: {os.getloadavg()}", flush=True)
    result = run(opts)
    print(json.dumps(result, indent=2))
    alone, under = result["light_alone"]["p99_ms"], result["light_flood"]["p99_ms"]
    print(
        f"light key p99: alone {alone:.1f} ms, under a {opts.flood_clients}-client flood "
        f"{under:.1f} ms, ratio {result['p99_ratio']:.2f} (goal <= 2); light key errors "
        f"{result['light_errors'] or 'none'}; flood statuses {result['flood_statuses']}"
    )
    print(
        f"server {result['processes']}, while the flood ran: cores (engine / api / main) "
        f"{tree.roles_text(result['flood_cpu_cores'])}, CPU ms per request "
        f"{tree.roles_text(result['flood_cpu_ms_per_request'], '.3f')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
