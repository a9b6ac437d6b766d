"""Readiness waits for the warm-up (a real server): /readyz and /classify are 503 while the pass
cost model is timed, /readyz turns 200 only once it has been, within the budget, and the first
request after that does not wait in the queue for a calibration."""

from __future__ import annotations

import re
import sys
import time

import httpx

from adapters_store import AdapterStore
from tests.support.server import Server, free_port, start_process

BUDGET_S = 2.0


def _poll_until_ready(server: Server, timeout_s: float = 90.0) -> tuple[list, str]:
    """GET /readyz every 10 ms: (statuses seen, the log as it was at the first 200)."""
    seen: list = []
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            assert server.alive(), server.logs()[-4000:]
            try:
                status = client.get("/readyz").status_code
            except httpx.TransportError:
                status = "refused"
            if status == 200:
                return seen, server.logs()
            if status == 503 and 503 not in seen:  # warming up: classify is 503 too
                r = client.post("/classify", json={"adapter": "alpha", "inputs": "early"})
                assert r.status_code == 503, r.text
                assert r.json()["error"]["code"] == "not_ready"
            seen.append(status)
            time.sleep(0.01)
    raise TimeoutError(server.logs()[-4000:])


def test_readyz_is_503_until_the_warm_up_has_ended(tmp_path, tiny_model_dir, factory):
    data_dir = tmp_path / "data"
    factory.add_to_store(AdapterStore(data_dir / "adapters"), "alpha", seed=1)
    port = free_port()
    env = {
        "APP_HOST": "127.0.0.1",
        "APP_PORT": str(port),
        "APP_DATA_DIR": str(data_dir),
        "APP_BASE_MODEL": str(tiny_model_dir),
        "APP_EMBEDDED_WORKER": "false",
        "APP_PASS_COST_CALIBRATION": "true",
        "APP_PASS_COST_BUDGET_S": str(BUDGET_S),
        "APP_MAX_BATCH_SIZE": "64",  # a larger grid to time: the warm-up takes a while
    }
    process = start_process([sys.executable, "-m", "app"], log_path=tmp_path / "s.log", env=env)
    server = Server(process.args, process.proc, process.log_path, port=port, data_dir=data_dir)
    try:
        seen, log_at_ready = _poll_until_ready(server)
        assert 503 in seen, seen  # it listened before it was warm, and said so
        done = re.search(r"warm-up done in ([\d.]+) s", log_at_ready)
        assert done, log_at_ready[-4000:]  # ended before the first 200, not after it
        # (fitted, or too few shapes timed on a box this loaded: ended either way)
        assert float(done.group(1)) < BUDGET_S * 2 + 2  # bounded by the budget (noisy box)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            r = client.post("/classify", json={"adapter": "alpha", "inputs": "first"})
        assert r.status_code == 200, r.text
        assert float(r.headers["x-queue-time"]) < 250  # no calibration in front of it
        # A first request was rehearsed through the adapter before ready, then forgotten:
        # the real first request loaded it (once), as the metrics and residency say.
        assert "rehearsed a first request (adapter alpha" in log_at_ready, log_at_ready[-4000:]
        metrics = httpx.get(server.url + "/metrics").text
        assert re.search(r"^adapter_loads_total 1\.0$", metrics, re.M), metrics
    finally:
        server.stop()
