"""bench/proctree.py on real process trees: a titled tree started here (roles, CPU, RSS, a killed
child's CPU kept by its parent) and the real `python -m app --api-workers 2`, measured with the
benches' own helpers (scale's throughput phase, serve's cell, the first-request measurement)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import time

from bench import proctree as tree
from bench.first_request import first_request
from bench.scale_phases import throughput
from bench.served import served_cell
from tests.support.adapters import AdapterFactory
from tests.support.server import running_server, start_process

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"
TITLED = "from setproctitle import setproctitle\nsetproctitle({title!r})\n" + BURN
# The parent: an engine, two API processes, an untitled child whose own child burns CPU; it
# reaps whatever exits (poll), so a killed child's CPU lands in its cutime.
PARENT = """import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, '-c', code]) for code in {codes!r}]
while True:
    for kid in kids:
        kid.poll()
    time.sleep(0.05)
"""
SLEEP = "time.sleep(120)\n"


def _tree_code() -> str:
    engine = TITLED.format(title="adapter-serve: engine", s=0.6) + SLEEP
    api = [TITLED.format(title=f"adapter-serve: api {i}", s=0.3) + SLEEP for i in (1, 2)]
    grandchild = BURN.format(s=0.4) + SLEEP
    other = (
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {grandchild!r}])\n"
    )
    return PARENT.format(codes=[engine, *api, other + SLEEP])


def _wait_for(check, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_roles_cpu_and_rss_of_a_titled_tree(tmp_path) -> None:
    parent = start_process([sys.executable, "-c", _tree_code()], log_path=tmp_path / "log")
    try:
        expected = {"engine": 1, "api": 2, "main": 1, "other": 2}
        _wait_for(lambda: tree.role_counts(parent.pid) == expected)
        _wait_for(lambda: tree.role_cpu_seconds(parent.pid)["other"] >= 0.4)
        _wait_for(lambda: tree.role_cpu_seconds(parent.pid)["api"] >= 0.6)
        _wait_for(lambda: tree.role_cpu_seconds(parent.pid)["engine"] >= 0.6)
        cpu = tree.role_cpu_seconds(parent.pid)
        assert cpu["main"] < 0.4, cpu  # the parent only starts and polls
        assert cpu["engine"] < 1.0 and cpu["api"] < 1.2 and cpu["other"] < 0.9, cpu
        assert math.isclose(tree.tree_cpu_seconds(parent.pid), sum(cpu.values()), abs_tol=0.05)
        rss = tree.role_rss_mb(parent.pid)
        assert all(rss[role] > 1 for role in tree.ROLES), rss
        assert rss["api"] > 1.5 * rss["engine"]  # two processes summed
        assert math.isclose(rss["total"], sum(rss[r] for r in tree.ROLES), rel_tol=1e-9)

        api = [p for p in tree.process_tree(parent.pid) if tree.role_of(p, parent.pid) == "api"]
        os.kill(api[0], signal.SIGKILL)
        _wait_for(lambda: tree.role_counts(parent.pid)["api"] == 1)  # dead (a zombie, or reaped)
        after = tree.role_cpu_seconds(parent.pid)
        assert after["main"] >= cpu["main"] + 0.25, (cpu, after)  # its CPU: the parent's now
        assert sum(after.values()) >= sum(cpu.values()) - 0.02, (cpu, after)
    finally:
        parent.stop()
    assert tree.role_counts(parent.pid) == dict.fromkeys(tree.ROLES, 0)  # gone: nothing live
    assert tree.role_rss_mb(parent.pid)["total"] == 0.0


def test_tree_cpu_counts_child_processes(tmp_path) -> None:
    """CPU burnt by a child (alive, or exited and reaped) counts for the parent's tree."""
    burn = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    parent_code = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}])\n"  # reaped: the parent's cutime
        f"child = subprocess.Popen([sys.executable, '-c', {burn + chr(10) + 'time.sleep(60)'!r}])\n"
        "time.sleep(60)\n"
    )
    parent = start_process([sys.executable, "-c", parent_code], log_path=tmp_path / "log")
    try:
        deadline = time.monotonic() + 45
        while tree.tree_cpu_seconds(parent.pid) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(tree.process_tree(parent.pid)) == 2  # the parent and its sleeping child
        assert tree.tree_cpu_seconds(parent.pid) >= 0.8
        own = tree.stat(parent.pid)  # the parent's own utime + stime: not where the CPU went
        assert (int(own[11]) + int(own[12])) / os.sysconf("SC_CLK_TCK") < 0.5
    finally:
        parent.stop()


def test_the_benches_read_every_process_of_the_real_server(tmp_path, tiny_model_dir) -> None:
    factory = AdapterFactory(tiny_model_dir, model_id="tiny")
    from adapters_store import AdapterStore

    store = AdapterStore(tmp_path / "adapters")
    for seed, name in enumerate(("hot", "spare")):
        factory.add_to_store(store, name, seed=seed)
    env = {"APP_STORE_DIR": str(tmp_path / "adapters"), "APP_EMBEDDED_WORKER": "false",
           "APP_PASS_COST_CALIBRATION": "false", "APP_TORCH_THREADS": "1"}  # fmt: skip
    with running_server(
        data_dir=tmp_path, base_model=tiny_model_dir, env=env, api_workers=2
    ) as server:
        first = first_request(server.url, adapter="hot", text="a fine film", cold_adapter="spare")
        assert tree.role_counts(server.pid) == {"engine": 1, "api": 2, "main": 1, "other": 0}
        load = {"names": ["hot"], "texts": ["a fine film"], "clients": 4, "seconds": 1.5}
        phase = asyncio.run(throughput(server.port, server.pid, **load))
        cell, mean_batch, cpu_ms = served_cell(server, **load, warmup=0.5)
        rss = tree.role_rss_mb(server.pid)
    assert first["readyz_status"] == 200 and first["first_status"] == 200, first
    assert first["warm_requests"] == 20 and first["warm_errors"] == 0, first
    assert first["ratio"] > 0 and first["cold_adapter_warm_server_ms"] > 0, first
    assert first["met"] == (first["ratio"] <= 2)
    assert phase["errors"] == 0 and phase["requests"] > 0, phase
    for roles in (phase["role_ms_per_request"], cpu_ms):
        # the engine runs the forward, the API processes the HTTP: both cost CPU per request;
        # the supervisor only watches
        assert roles["engine"] > 0 and roles["api"] > 0, roles
        assert roles["main"] < 0.2 * (roles["engine"] + roles["api"]), roles
    total = sum(phase["role_ms_per_request"].values())
    assert math.isclose(phase["cpu_ms_per_request"], total, rel_tol=1e-9)
    assert cell.errors == 0 and cell.requests > 0 and mean_batch >= 1
    assert rss["engine"] > 50 and rss["api"] > 50 and rss["main"] > 5, rss
