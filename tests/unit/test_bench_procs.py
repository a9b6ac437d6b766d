"""The benches' `--api-workers` options and their report helpers for a server split into processes
(issue 28): what each option sets, what the reports print from per-role numbers."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest

from app.config import default_api_workers
from bench import fairness, gpu_check, gpu_subbench, scale, serve
from bench.common import api_workers_env
from bench.first_request import line
from bench.overhead_procs import first_goals, sweep_lines
from bench.proctree import per_request, roles_text
from bench.scale_report import bucket_quantile, goal_lines, rows, zipf_split


def test_scale_sets_the_count_for_its_server() -> None:
    assert scale.parse(["--api-workers", "3"]).env["APP_API_WORKERS"] == "3"
    assert "APP_API_WORKERS" not in scale.parse([]).env  # the server's own default
    kept = scale.parse(["--env", "APP_API_WORKERS=2"])
    assert kept.env["APP_API_WORKERS"] == "2"
    with pytest.raises(SystemExit):
        scale.parse(["--api-workers", "-1"])


def test_default_count_is_written_out() -> None:
    cores = len(os.sched_getaffinity(0))
    assert api_workers_env() == {"APP_API_WORKERS": str(default_api_workers(cores))}
    assert api_workers_env(4) == {"APP_API_WORKERS": "4"}


def test_serve_and_fairness_take_the_count() -> None:
    assert serve.parse(["--api-workers", "2"]).api_workers == 2
    assert serve.parse([]).api_workers == 0
    assert fairness.parse(["--api-workers", "2"]).api_workers == 2
    assert fairness.parse([]).api_workers == 0


def test_gpu_check_sweeps_the_counts_through_bench_overhead(tmp_path) -> None:
    opts = gpu_check.parse(["--out", str(tmp_path)])
    assert opts.api_workers == [1, 2, 4]
    args = gpu_subbench.overhead_args(opts)
    assert args[args.index("--api-workers") + 1] == "1,2,4"
    dry = gpu_check.parse(["--dry-run", "--out", str(tmp_path)])
    assert dry.api_workers == [1, 2] and dry.device == "cpu"
    none = gpu_check.parse(["--api-workers", "", "--out", str(tmp_path)])
    assert none.api_workers == [] and "--api-workers" not in gpu_subbench.overhead_args(none)
    with pytest.raises(SystemExit):
        gpu_check.parse(["--api-workers", "1,0"])


def _cell(clients: int, req_s: float, engine: float, api: float) -> dict:
    roles = {"engine": engine, "api": api, "main": 0.01, "other": 0.0}
    return {"clients": clients, "req_s": req_s, "role_ms_per_request": roles}


def test_sweep_lines_compare_each_count_with_one_process() -> None:
    cells = {
        "ours w1": [_cell(64, 1000.0, 0.0, 0.0)],
        "ours w2": [_cell(64, 1500.0, 0.2, 0.5)],
        "ours w4": [_cell(64, 2500.0, 0.25, 0.55), _cell(16, 900.0, 0.3, 0.6)],
        "reference": [_cell(64, 6000.0, 0.0, 0.0)],
    }
    lines = sweep_lines(cells)
    assert len(lines) == 4  # the reference is not a count
    assert lines[1] == (
        "ours w2, 64 clients: 1,500 req/s = 1.50x w1; CPU ms/req engine 0.200, api 0.500, "
        "main 0.010"
    )
    assert "2.50x w1" in lines[2] and "nanx w1" in lines[3]  # w1 has no 16-client cell


def test_first_request_goal_and_line() -> None:
    met = {"first_ms": 9.0, "warm_p50_ms": 5.0, "ratio": 1.8, "met": True, "first_status": 200,
           "warm_requests": 20, "cold_adapter_warm_server_ms": 7.5}  # fmt: skip
    slow = {**met, "first_ms": 30.0, "ratio": 6.0, "met": False}
    goals = first_goals({"ours w1": met, "ours w2": slow, "ours w4": {"error": "x"}})
    assert [g[1] for g in goals] == [True, False, None]
    assert goals[1][2] == "6.00x (30.0 / 5.0 ms)"
    assert line(slow).endswith("6.00x (goal <= 2x: NOT met); a never-requested adapter on the "
                               "warm server 7.5 ms")  # fmt: skip
    after_idle = {**slow, "idle_warm_ms": 12.0, "ratio_after_idle": 2.5}
    assert "; a warm one after 0.5 s idle 12.0 ms (first / it 2.50x);" in line(after_idle)
    assert "not measured (boom)" in line({"error": "boom"})


def test_scale_report_shows_roles_only_for_a_split_server() -> None:
    opts = SimpleNamespace(adapters=10, clients=4, zipf=1.1, hot_clients=4, storm_clients=4,
                           rss_after=10, cycle_env={"APP_MAX_RESIDENT_ADAPTERS": "8"})  # fmt: skip
    roles = {"engine": 1.0, "api": 0.5, "main": 0.0}
    split = {"req_s": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_ms_per_request": 1.5,
             "errors": 0, "role_ms_per_request": roles}  # fmt: skip
    one = {**split, "role_ms_per_request": {"engine": 0.0, "api": 0.0, "main": 1.5}}
    results = {"one_adapter": split, "zipf": one, "first_request": {"ratio": 2.5},
               "processes": {"engine": 1, "api": 2, "main": 1, "other": 0}}  # fmt: skip
    printed = rows(results, opts)
    assert "1.50 [1.00 / 0.50 / 0.00], 0)" in printed[3]
    assert "1.50, 0)" in printed[4]  # no engine process: no split
    assert printed[1].endswith("| 1 / 2 / 1 / 0 |")
    verdicts = [g for g in goal_lines(results) if g.startswith("first request")]
    assert verdicts == ["first request after /readyz / warm median: 2.50x (goal <= 2x) (NOT met)"]


def test_scale_report_splits_the_zipf_windows_adapter_work() -> None:
    before = {"adapter_loads_total": 300.0, "adapter_activation_seconds_count": 310.0}
    after = {"adapter_loads_total": 520.0, "adapter_activation_seconds_count": 900.0}
    results = {"metrics_before_zipf": before, "metrics_end": after, "zipf": {"requests": 1200}}
    assert zipf_split(results) == [
        "zipf window (warm-up included; 1200 requests measured): loads 220, activations 590"
    ]
    assert zipf_split({"metrics_end": after}) == []  # an older run: no metrics before it


def test_per_request_and_roles_text() -> None:
    cpu = {"engine": 0.5, "api": 1.0, "main": 0.0, "other": 0.1}
    assert per_request(cpu, 1000) == pytest.approx({"engine": 0.5, "api": 1.0, "main": 0.0,
                                                    "other": 0.1})  # fmt: skip
    assert all(math.isnan(v) for v in per_request(cpu, 0).values())
    assert roles_text(per_request(cpu, 1000)) == "0.50 / 1.00 / 0.00"


def test_bucket_quantile_counts_only_the_phase_between_two_scrapes():
    """Cumulative buckets before and after a phase: its own observations' quantiles, as the
    upper bound of the bucket that holds them (ms); none observed: None."""
    stem = "adapter_activation_seconds"

    def scrape(counts: dict[str, float]) -> dict[str, float]:
        return {f'{stem}_bucket{{le="{le}"}}': n for le, n in counts.items()}

    before = scrape({"0.0025": 5, "0.005": 5, "0.01": 5, "+Inf": 5})  # 5 fast ones earlier
    after = scrape({"0.0025": 5, "0.005": 60, "0.01": 103, "+Inf": 105})  # 100 in the phase
    assert bucket_quantile(before, after, stem, 0.5) == 5.0  # 55 of 100 within 5 ms
    assert bucket_quantile(before, after, stem, 0.98) == 10.0
    assert bucket_quantile(before, after, stem, 0.99) == math.inf  # 2 past the last bound
    assert bucket_quantile(after, after, stem, 0.5) is None
    assert bucket_quantile(before, after, "adapter_load_seconds", 0.5) is None
