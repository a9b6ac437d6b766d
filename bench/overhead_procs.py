"""bench/overhead.py's view of the processes of one server (issue 28): CPU per role from /proc,
and the goals of `--api-workers` (a supervisor, an engine process, N API processes).

A process's role is read off its title (`adapter-serve: engine`, `adapter-serve: api N`, set
with setproctitle); the server's own process is `main` (the supervisor, or with one API
process the whole server); anything else it started (the training worker) is `other`.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import overhead_load as load

ROLES = ("engine", "api", "main", "other")


def role_of(pid: int, root: int) -> str:
    if pid == root:
        return "main"
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return "other"
    if title == "adapter-serve: engine":
        return "engine"
    return "api" if title.startswith("adapter-serve: api ") else "other"


def role_cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds (user + system, reaped children included) per role of `root`'s tree."""
    seconds = dict.fromkeys(ROLES, 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    for member in load.process_tree(root):
        fields = load._stat(member)
        if fields is not None:
            used = sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick
            seconds[role_of(member, root)] += used
    return seconds


def per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict:
    """CPU ms per answered request, per role."""
    return {
        role: (after[role] - before[role]) * 1000 / requests if requests else float("nan")
        for role in ROLES
    }


def sweep_goals(cells: dict[str, list[dict]]) -> list[tuple[str, bool | None, str]]:
    """Issue 28's goals from the cells of `ours w1` and `ours w2` (64 and 16 clients)."""
    one = {c["clients"]: c for c in cells.get("ours w1", [])}
    two = {c["clients"]: c for c in cells.get("ours w2", [])}
    out: list[tuple[str, bool | None, str]] = []
    label = "--api-workers 2 req/s at 64 clients >= 1.5x --api-workers 1"
    if 64 in one and 64 in two and one[64]["req_s"]:
        ratio = two[64]["req_s"] / one[64]["req_s"]
        out.append((label, ratio >= 1.5, f"{ratio:.2f}x"))
    else:
        out.append((label, None, "needs --api-workers 1,2 and 64 clients"))
    for role, limit in (("engine", 0.15), ("api", 0.6)):
        label = f"{role} process CPU per request at 64 clients (2 API processes) <= {limit} ms"
        value = two.get(64, {}).get("role_ms_per_request", {}).get(role)
        out.append((label, None, "not measured") if value is None else
                   (label, value <= limit, f"{value:.3f}"))  # fmt: skip
    label = "p99 / p50 at 16 clients (2 API processes) <= 3"
    if 16 in two and two[16]["p50_ms"]:
        ratio = two[16]["p99_ms"] / two[16]["p50_ms"]
        out.append((label, ratio <= 3, f"{ratio:.1f}"))
    else:
        out.append((label, None, "16 clients not measured"))
    return out
