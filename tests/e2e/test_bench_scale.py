"""bench/scale.py end to end, small: tiny model, 48 adapters of 6 methods, 2-second phases,
against the server split into processes (`--api-workers 2`: CPU and RSS per process role)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

from adapters_store import AdapterStore
from bench.scale_store import METHODS, build_store
from tests.support.server import REPO, process_env

NUMBERS = {
    "one_adapter": ("req_s", "p50_ms", "p99_ms", "cpu_ms_per_request"),
    "zipf": ("req_s", "p50_ms", "p99_ms", "cpu_ms_per_request"),
    "cold": ("cold_p50_ms", "cold_p99_ms", "warm_p50_ms", "warm_p99_ms", "added_p99_ms"),
    "hot_storm": ("ratio_p99", "storm_p50_ms", "storm_p99_ms"),
    "listing": ("median_ms", "max_ms", "bytes", "items"),
    "rss_mb": ("startup", "after_zipf"),
    "cycles": ("rss_after_first_mb", "rss_end_mb", "growth"),
    "first_request": ("first_ms", "warm_p50_ms", "ratio", "cold_adapter_warm_server_ms"),
}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_scale_bench_measures_every_phase(tmp_path, tiny_model_dir) -> None:
    scratch = tmp_path / "scratch"
    shutil.copytree(tiny_model_dir, scratch / "tiny" / "model")  # the session's tiny model
    # the store is built here (this process has the libraries loaded); the bench takes it from
    # the cache: 48 adapters, six distinct configurations (ia3 is stored as a lora architecture)
    said: list[str] = []
    _, store, names = build_store(scratch, "tiny", 48, METHODS, say=said.append)
    assert said[0].startswith("store: built 48 adapters") and len(names) == 48
    assert len(AdapterStore(store).list()) == 48
    configs = {
        json.dumps(json.loads((store / n / "adapter_config.json").read_text())["config"])
        for n in names
    }
    assert len(configs) == len(METHODS)
    out = tmp_path / "scale.json"
    args = [
        sys.executable, "-m", "bench.scale", "--model", "tiny", "--adapters", "48",
        "--seconds", "2", "--cold", "10", "--clients", "8", "--list-calls", "3",
        "--cycles", "20", "--rss-after", "10", "--cycle-limit-s", "6",
        "--env", "APP_PASS_COST_CALIBRATION=false", "--scratch", str(scratch), "--json", str(out),
        "--api-workers", "2",
    ]  # fmt: skip
    done = subprocess.run(
        args, cwd=REPO, env=process_env(), capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "store: 48 adapters from the cache" in done.stdout
    result = json.loads(out.read_text())

    assert _finite(result["startup_s"]) and result["startup_s"] > 0
    for phase, keys in NUMBERS.items():
        for key in keys:
            assert _finite(result[phase][key]), (phase, key, result[phase])
    for phase in ("one_adapter", "zipf", "cold", "cycles"):
        assert result[phase]["errors"] == 0, (phase, result[phase])
    for side in ("alone", "storm"):
        assert _finite(result["hot_storm"][side]["p99_ms"]), result["hot_storm"]
    assert result["cold"]["adapters"] == 10
    assert result["listing"]["items"] >= 1 and result["listing"]["bytes"] > 0
    assert result["cycles"]["activations"] >= 10  # 0 errors: each method's adapters load
    assert result["hot_storm"]["storm_requests"] > 0
    assert "adapter" in json.dumps(result["metrics_end"])  # today's adapter metrics at least
    assert result["processes"] == {"engine": 1, "api": 2, "main": 1, "other": 0}
    for phase in ("one_adapter", "zipf"):  # the engine's forward and the API processes' HTTP
        roles = result[phase]["role_ms_per_request"]
        assert roles["engine"] > 0 and roles["api"] > 0, (phase, roles)
        assert result[phase]["cpu_ms_per_request"] > roles["engine"], (phase, result[phase])
    for when in ("startup", "after_zipf"):
        rss = result["rss_roles_mb"][when]
        assert rss["engine"] > 50 and rss["api"] > 50 and rss["total"] == result["rss_mb"][when]
    assert result["first_request"]["first_status"] == 200, result["first_request"]

    printed = done.stdout
    work = next(r for r in printed.splitlines() if r.startswith("| the server's own work"))
    assert work.count("<= ") == 6, work  # read, activation, both; p50 and p99: 10 cold ran
    for line in ("Zipf / one adapter req/s:", "hot p99 under a cold storm / alone:",
                 "GET /adapters?limit=50 median:", "RSS growth after the first",
                 "first request after /readyz / warm median:"):  # fmt: skip
        row = next(r for r in printed.splitlines() if r.startswith(line))
        assert "-" not in row.split(":", 1)[1].split("(goal")[0], row
