"""Helpers for the multi-process server's tests (tests/e2e/test_procs*.py): its process tree by
title, keep-alive clients pinned to each API process, polling.

    tree(server.pid)["adapter-serve: engine"]        # -> the engine's pid
    clients = pinned(server.url)                      # {pid: [client]} for both API processes
    wait_for(lambda: ready(server.url) == 503, 5)
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tree(root: int) -> dict[str, int]:
    """Title (the process's /proc cmdline) -> pid, for `root` and its children."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if int(entry.name) == root or parent == root:
            found[cmdline] = int(entry.name)
    return found


def wait_for(check, timeout_s: float, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(step_s)
    raise AssertionError(f"not within {timeout_s} s")


def ready(url: str) -> int:
    try:
        return httpx.get(url + "/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def pinned(url: str, per_process: int = 1) -> dict[int, list[httpx.Client]]:
    """Keep-alive clients (one connection each) on each of the two API processes, by pid."""
    clients: dict[int, list[httpx.Client]] = {}
    for _ in range(60):
        client = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
        pid = int(client.get("/healthz").headers["x-served-by"])
        if len(clients.setdefault(pid, [])) < per_process:
            clients[pid].append(client)
        else:
            client.close()
        if len(clients) == 2 and all(len(c) == per_process for c in clients.values()):
            return clients
    raise AssertionError("the connections did not reach both API processes")


def close(clients: dict[int, list[httpx.Client]]) -> None:
    for each in clients.values():
        for client in each:
            client.close()
