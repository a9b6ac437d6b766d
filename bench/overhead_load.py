"""Load and accounting for bench/overhead.py: wrk (or a lean fallback), server CPU, uvicorn's pick.

- `run_wrk`: `wrk -t1 -c{clients} -d{seconds}s` posting one JSON body (a Lua script sets the
  method, body and content-type; its `done()` hook prints requests, duration, p50/p99 and
  errors as one JSON line).
- `run_python`: the fallback when wrk is missing: one asyncio client process, `clients`
  keep-alive connections, the request's bytes built once, no HTTP library. It shares the CPU
  with the server, so its req/s is a floor, not wrk's number.
- `uvicorn_stack(pid)`: which HTTP parser and event loop the server's processes have loaded.
(The server's CPU per process role: bench/proctree.py.)
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.proctree import process_tree

LUA = """wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {{"requests": %d, "duration_us": %d, "p50_us": %.1f, "p99_us": %.1f, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Load:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    return (done.stdout + done.stderr).splitlines()[0].strip()


def run_wrk(url: str, body: bytes, *, clients: int, seconds: int) -> Load:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA.format(body=body.decode()))
        args = ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s"]
        args += ["-s", str(script), f"{url}/classify"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-800:]}{done.stderr}")
    r = json.loads(line.split(" ", 1)[1])
    errors = sum(r[k] for k in ("connect", "read", "write", "status", "timeout"))
    p50, p99 = (r["p50_us"] / 1e3, r["p99_us"] / 1e3) if r["requests"] else (math.nan, math.nan)
    return Load(r["requests"], errors, r["duration_us"] / 1e6, p50, p99)


def _request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, request: bytes, end: float, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")
    try:
        while (sent := time.perf_counter()) < end:
            writer.write(request)
            header = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(length.search(header).group(1)))
            (latencies if header[9:12] == b"200" else errors).append(time.perf_counter() - sent)
    finally:
        writer.close()


async def _drive(port: int, body: bytes, clients: int, seconds: float) -> Load:
    request = _request_bytes(port, body)
    latencies: list[float] = []
    errors: list[float] = []
    started = time.perf_counter()
    end = started + seconds
    conns = (_connection(port, request, end, latencies, errors) for _ in range(clients))
    outcomes = await asyncio.gather(*conns, return_exceptions=True)
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    failed = len(errors) + sum(isinstance(o, BaseException) for o in outcomes)
    p50 = latencies[n // 2] * 1000 if n else float("nan")
    p99 = latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan")
    return Load(n + len(errors), failed, elapsed, p50, p99)


def run_python(url: str, body: bytes, *, clients: int, seconds: float) -> Load:
    port = int(url.rsplit(":", 1)[1])
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(asyncio.wait_for(_drive(port, body, clients, seconds), seconds + 60))


# ---- the server's side ------------------------------------------------------------------------
def uvicorn_stack(pid: int) -> dict[str, str]:
    """The HTTP parser and event loop loaded in the server's processes (uvicorn's "auto"
    imports httptools / uvloop exactly when it uses them)."""
    maps = ""
    for member in process_tree(pid):
        try:
            maps += Path(f"/proc/{member}/maps").read_text()
        except OSError:
            continue
    return {
        "http": "httptools" if "/httptools/" in maps else "h11",
        "loop": "uvloop" if "/uvloop/" in maps else "asyncio",
        "processes": str(len(process_tree(pid))),
    }
