"""The summary table of bench/scale.py: one row per measure, with its goal where it has one."""

from __future__ import annotations

import math

from bench.proctree import ROLES

GOALS = {
    "zipf_ratio": ("Zipf / one adapter req/s", ">= 0.8x"),
    "hot_ratio": ("hot p99 under a cold storm / alone", "<= 2x"),
    "listing": ("GET /adapters?limit=50 median", "<= 50 ms at 10,000"),
    "first_ratio": ("first request after /readyz / warm median", "<= 2x"),
    "growth": ("RSS growth after the first --rss-after activations", "within 10%"),
}


def _num(value, fmt: str = ".1f") -> str:
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else (" (met)" if ok else " (NOT met)")


def _get(results: dict, *path):
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def ratios(results: dict) -> dict[str, float | None]:
    """The goal ratios: Zipf/one req/s, hot p99 storm/alone, listing ms, RSS growth."""
    one, zipf = _get(results, "one_adapter", "req_s"), _get(results, "zipf", "req_s")
    return {
        "zipf_ratio": zipf / one if one and zipf is not None else None,
        "hot_ratio": _get(results, "hot_storm", "ratio_p99"),
        "listing": _get(results, "listing", "median_ms"),
        "first_ratio": _get(results, "first_request", "ratio"),
        "growth": _get(results, "cycles", "growth"),
    }


def _roles(values: dict | None, fmt: str) -> str:
    """` [engine / api / main]` when the server runs an engine process, else nothing."""
    if not values or not values.get("engine"):
        return ""
    return " [" + " / ".join(_num(values.get(role), fmt) for role in ROLES[:3]) + "]"


def _throughput_row(results: dict, key: str, label: str) -> str:
    r = results.get(key) or {}
    return (
        f"| {label}: req/s (p50 / p99 ms, server CPU ms/req [engine / api / main], errors) | "
        f"{_num(r.get('req_s'))} ({_num(r.get('p50_ms'))} / {_num(r.get('p99_ms'))}, "
        f"{_num(r.get('cpu_ms_per_request'), '.2f')}"
        f"{_roles(r.get('role_ms_per_request'), '.2f')}, {r.get('errors', '-')}) |"
    )


def rows(results: dict, opts) -> list[str]:
    cold, hot = results.get("cold") or {}, results.get("hot_storm") or {}
    lst, cyc, rss = results.get("listing") or {}, results.get("cycles") or {}, results.get("rss_mb")
    rss, roles = rss or {}, results.get("rss_roles_mb") or {}
    first = results.get("first_request") or {}
    procs = results.get("processes") or {}
    alone, storm = hot.get("alone") or {}, hot.get("storm") or {}
    budget = " ".join(f"{k}={v}" for k, v in opts.cycle_env.items())
    return [
        f"| start-up with {opts.adapters} adapters (spawn to /readyz 200), s | "
        f"{_num(results.get('startup_s'), '.2f')} |",
        f"| processes: engine / api / main / other | {procs.get('engine', '-')} / "
        f"{procs.get('api', '-')} / {procs.get('main', '-')} / {procs.get('other', '-')} |",
        f"| first /classify after /readyz: ms (warm median; a new adapter on the warm server) | "
        f"{_num(first.get('first_ms'))} ({_num(first.get('warm_p50_ms'))}; "
        f"{_num(first.get('cold_adapter_warm_server_ms'))}) |",
        _throughput_row(results, "one_adapter", f"one adapter, {opts.clients} clients"),
        _throughput_row(results, "zipf", f"Zipf(s={opts.zipf}) over {opts.adapters} names"),
        f"| cold request, {cold.get('adapters', '-')} distinct adapters in a row: p50 / p99 ms "
        f"| {_num(cold.get('cold_p50_ms'))} / {_num(cold.get('cold_p99_ms'))} |",
        f"| the same adapters at once again (warm): p50 / p99 ms | "
        f"{_num(cold.get('warm_p50_ms'))} / {_num(cold.get('warm_p99_ms'))} |",
        f"| cold minus warm, per adapter (what activating it added): p50 / p99 ms | "
        f"{_num(cold.get('added_p50_ms'))} / {_num(cold.get('added_p99_ms'))} |",
        f"| the server's own work per cold adapter (histogram bucket bounds): read p50 / p99, "
        f"activation p50 / p99, both (read + first activation) p50 / p99 ms | "
        f"{_work(results)} |",
        f"| hot p99, {opts.hot_clients} clients on {2} adapters: alone / under a cold storm of "
        f"{opts.storm_clients} clients ({hot.get('storm_requests', '-')} cold requests), ms | "
        f"{_num(alone.get('p99_ms'))} / {_num(storm.get('p99_ms'))} |",
        f"| GET /adapters?limit=50: median ms (bytes, items) | {_num(lst.get('median_ms'))} "
        f"({lst.get('bytes', '-')}, {lst.get('items', '-')}) |",
        f"| server RSS MB [engine / api / main]: after start-up / after the Zipf phase | "
        f"{_num(rss.get('startup'))}{_roles(roles.get('startup'), '.0f')} / "
        f"{_num(rss.get('after_zipf'))}{_roles(roles.get('after_zipf'), '.0f')} |",
        f"| RSS MB after {opts.rss_after} / after {cyc.get('activations', '-')} activations "
        f"({budget}) | {_num(cyc.get('rss_after_first_mb'))} / {_num(cyc.get('rss_end_mb'))} |",
    ]


def goal_lines(results: dict) -> list[str]:
    r = ratios(results)
    checks = {
        "zipf_ratio": (r["zipf_ratio"], "x", lambda v: v >= 0.8),
        "hot_ratio": (r["hot_ratio"], "x", lambda v: v <= 2),
        "listing": (r["listing"], " ms", lambda v: v <= 50),
        "first_ratio": (r["first_ratio"], "x", lambda v: v <= 2),
        "growth": (None if r["growth"] is None else r["growth"] * 100, "%", lambda v: v <= 10),
    }
    lines = []
    for key, (value, unit, ok) in checks.items():
        label, goal = GOALS[key]
        valid = isinstance(value, (int, float)) and not math.isnan(value)
        shown = f"{_num(value, '.2f')}{unit}" if valid else "-"
        lines.append(f"{label}: {shown} (goal {goal}){_verdict(ok(value) if valid else None)}")
    return lines


def bucket_quantile(before: dict, after: dict, stem: str, q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket that holds the `q` quantile of `stem`'s
    observations made between two scrapes; None when there were none."""
    counts = []
    for key, value in after.items():
        if key.startswith(stem + "_bucket{") and 'le="' in key:
            le = float(key.split('le="', 1)[1].split('"', 1)[0])
            counts.append((le, value - before.get(key, 0.0)))
    counts.sort()
    if not counts or counts[-1][1] <= 0:
        return None
    total = counts[-1][1]  # the +Inf bucket: every observation
    return next(le * 1000 for le, n in counts if n >= q * total)


def _work(results: dict) -> str:
    before = results.get("metrics_before_cold") or {}
    after = results.get("metrics_after_cold") or {}
    parts = []
    for stem in ("adapter_load_seconds", "adapter_activation_seconds", "adapter_cold_seconds"):
        bounds = [bucket_quantile(before, after, stem, q) for q in (0.5, 0.99)]
        parts.append(" / ".join("-" if b is None else f"<= {b:g}" for b in bounds))
    return ", ".join(parts)


def metric_lines(results: dict) -> list[str]:
    lines = []
    for key in ("metrics_after_cold", "metrics_end"):
        samples = results.get(key) or {}
        shown = ", ".join(
            f"{k} {v:g}" for k, v in samples.items() if k != "error" and "_bucket{" not in k
        )
        lines.append(f"{key}: {shown or 'none of the adapter metrics exist'}")
    return [*lines, *zipf_split(results)]


def zipf_split(results: dict) -> list[str]:
    """What the Zipf phase (its warm-up included) spent on adapters: the loads from the
    store and the activations (loads + slot rebinds), from the metrics around it."""
    before, after = results.get("metrics_before_zipf") or {}, results.get("metrics_end") or {}
    keys = {"loads": "adapter_loads_total", "activations": "adapter_activation_seconds_count",
            "activation s": "adapter_activation_seconds_sum",
            "load s (loader thread)": "adapter_load_seconds_sum"}  # fmt: skip
    parts = [f"{label} {after[k] - before[k]:g}" for label, k in keys.items()
             if k in before and k in after]  # fmt: skip
    if not parts:
        return []
    requests = _get(results, "zipf", "requests")
    return [f"zipf window (warm-up included; {requests} requests measured): " + ", ".join(parts)]


def summary(results: dict, opts) -> list[str]:
    failed = [f"{k} FAILED: {v['error']}" for k, v in results.items()
              if isinstance(v, dict) and "error" in v]  # fmt: skip
    return [
        "",
        f"| measure ({opts.model}, {opts.adapters} adapters of {len(opts.methods)} methods, "
        f"{opts.seconds:g} s phases, torch threads {opts.threads or 'default'}) | value |",
        "|---|---|",
        *rows(results, opts),
        "",
        *goal_lines(results),
        *metric_lines(results),
        *failed,
    ]
