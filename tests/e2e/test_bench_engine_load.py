"""bench/engine_load.py end to end, small: a real multi-process server, the engine fed through
its socket by the bench's own EngineClient."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from tests.support.server import REPO, process_env


def test_engine_load_bench_measures_the_engine_alone(tmp_path, tiny_model_dir) -> None:
    out = tmp_path / "engine.json"
    args = [
        sys.executable, "-m", "bench.engine_load", "--seconds", "1", "--concurrency", "1,8",
        "--base-model", str(tiny_model_dir), "--env", "APP_PASS_COST_CALIBRATION=false",
        "--env", "APP_EMBEDDED_WORKER=false", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        args, cwd=REPO, env=process_env(), capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = json.loads(out.read_text())["cells"]
    assert [c["concurrency"] for c in cells] == [1, 8]
    for c in cells:
        assert c["failed"] == 0 and c["req_s"] > 0, c
        assert 0 < c["engine_ms"] < 1000 and math.isfinite(c["client_ms"]), c
    one, eight = cells
    assert one["texts_per_pass"] == 1.0  # one request in flight: nothing to batch with
    assert 1.0 < eight["texts_per_pass"] <= 8.0  # 8 in flight share passes
    assert "| 8 |" in done.stdout and "goal: engine CPU per request" in done.stdout
