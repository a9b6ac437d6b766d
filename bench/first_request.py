"""The first request after `/readyz` turns green, against warm ones (issue 28's goal: the first
answers within 2x a warm request).

Call `first_request` at once after the server answered `/readyz` 200 (tests.support.server's
`start_server` polls it every 0.1 s and, with several API processes, until 8 fresh connections
in a row are ready). On one keep-alive connection (so the API process that said ready answers):
`/readyz` again, the first `/classify` of `adapter`, then `warm` more of the same request one
after another (their median is "a warm request"), one more after `idle_s` of silence (a warm
request after idle: the server's threads asleep, as they are when a first request comes); then,
when `cold_adapter` is given, one request to that never-requested adapter on the now warm
server, so a first request that pays an adapter's activation can be told from one that pays the
server's own warm-up.
"""

from __future__ import annotations

import statistics
import time

GOAL = 2.0  # first / warm median
IDLE_S = 0.5  # the silence before the warm request after idle


def _timed(client, url: str, adapter: str, text: str) -> tuple[int, float]:
    started = time.perf_counter()
    status = client.post(url + "/classify", json={"adapter": adapter, "inputs": text}).status_code
    return status, (time.perf_counter() - started) * 1000


def first_request(
    url: str,
    *,
    adapter: str,
    text: str,
    warm: int = 20,
    cold_adapter: str | None = None,
    idle_s: float = IDLE_S,
) -> dict:
    import httpx

    with httpx.Client(timeout=120) as client:
        ready = client.get(url + "/readyz").status_code
        status, first = _timed(client, url, adapter, text)
        warm_runs = [_timed(client, url, adapter, text) for _ in range(warm)]
        time.sleep(idle_s)
        idle = _timed(client, url, adapter, text)
        cold = _timed(client, url, cold_adapter, text) if cold_adapter else None
    out = {
        "readyz_status": ready,
        "first_status": status,
        "first_ms": first,
        "warm_requests": len(warm_runs),
        "warm_errors": sum(code != 200 for code, _ in warm_runs),
        "warm_p50_ms": statistics.median(ms for _, ms in warm_runs),
        "idle_warm_ms": idle[1],
        "cold_adapter_warm_server_ms": cold[1] if cold else None,
    }
    out["ratio"] = out["first_ms"] / out["warm_p50_ms"] if out["warm_p50_ms"] else float("nan")
    out["ratio_after_idle"] = out["first_ms"] / idle[1] if idle[1] else float("nan")
    out["met"] = status == 200 and out["ratio"] <= GOAL
    return out


def line(result: dict) -> str:
    """One printed line: first, warm median, their ratio and the goal's verdict."""
    if "first_ms" not in result:
        return f"first request after /readyz: not measured ({result.get('error', '-')})"
    cold = result.get("cold_adapter_warm_server_ms")
    idle = result.get("idle_warm_ms")
    extra = (
        f"; a warm one after {IDLE_S:g} s idle {idle:.1f} ms (first / it "
        f"{result['ratio_after_idle']:.2f}x)"
        if idle is not None
        else ""
    )
    extra += f"; a never-requested adapter on the warm server {cold:.1f} ms" if cold else ""
    verdict = "met" if result["met"] else "NOT met"
    return (
        f"first request after /readyz: {result['first_ms']:.1f} ms (status "
        f"{result['first_status']}), warm median of {result['warm_requests']} "
        f"{result['warm_p50_ms']:.1f} ms: {result['ratio']:.2f}x (goal <= {GOAL:g}x: {verdict})"
        f"{extra}"
    )
