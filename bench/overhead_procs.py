"""Issue 28's goals of `--api-workers` (a supervisor, an engine process, N API processes) from
bench/overhead.py's cells, and how far the API processes scale (`sweep_lines`: each `ours wN`
against `ours w1`, also read by bench/gpu_check.py); the CPU per process role they read comes
from bench/proctree.py.
"""

from __future__ import annotations

import math


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


def first_goals(firsts: dict[str, dict]) -> list[tuple[str, bool | None, str]]:
    """Issue 28's first-request goal for each of ours (bench/first_request.py's answers)."""
    out: list[tuple[str, bool | None, str]] = []
    for key, first in firsts.items():
        label = f"{key}: first /classify after /readyz <= 2x a warm one"
        if "ratio" not in first:
            out.append((label, None, "not measured"))
        else:
            shown = (
                f"{first['ratio']:.2f}x ({first['first_ms']:.1f} / {first['warm_p50_ms']:.1f} ms)"
            )
            out.append((label, first["met"], shown))
    return out


def sweep_lines(cells: dict[str, list[dict]]) -> list[str]:
    """Per `ours wN` and client count: req/s, its ratio to `ours w1` at the same count, and the
    CPU ms per request of each role (engine / API processes summed / main)."""
    one = {c["clients"]: c for c in cells.get("ours w1", [])}
    lines = []
    for key, rows in cells.items():
        if not key.startswith("ours w"):
            continue
        for c in rows:
            base = one.get(c["clients"], {}).get("req_s")
            ratio = c["req_s"] / base if base else math.nan
            r = c["role_ms_per_request"]
            lines.append(
                f"{key}, {c['clients']} clients: {c['req_s']:,.0f} req/s = {ratio:.2f}x w1; "
                f"CPU ms/req engine {r['engine']:.3f}, api {r['api']:.3f}, main {r['main']:.3f}"
            )
    return lines
