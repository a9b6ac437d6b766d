"""Crash safety and graceful shutdown of the real service (tiny model, uvicorn on 127.0.0.1):
kill -9 the API during uploads and during a training job, then restart: the store holds only
whole adapters, no scratch folder survives the start-up cleanup, every job is final or
resumable. SIGTERM drains the requests in flight and stops the embedded worker, which puts
its running job back on the queue."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from adapters_store import AdapterStore
from app.bootstrap import open_job_store
from app.config import Settings
from app.jobs.records import JobStatus
from tests.support.adapters import AdapterFactory
from tests.support.faults import (
    LONG_TEXT,
    Golden,
    SlowUpload,
    assert_store_whole,
    metric,
    scratch_entries,
)
from tests.support.jobs import JobSystem, running
from tests.support.server import running_server, start_server
from tests.support.tiny import keyword_dataset

pytestmark = pytest.mark.timeout(300)

TEXTS = [row["text"] for row in keyword_dataset(6, seed=31)]
QUIET = {"APP_EMBEDDED_WORKER": "false", "APP_ACCESS_LOG": "false"}
EMBEDDED = {"APP_EMBEDDED_WORKER": "true", "APP_ACCESS_LOG": "false"}


@pytest.fixture(scope="module")
def golden(tiny_model_dir, factory) -> Golden:
    return Golden(tiny_model_dir, factory, [*TEXTS, LONG_TEXT]).add(7, 8, 9, 1, 2)


def _pid_running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait a while to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _pid_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _worker_pid(logs: str) -> int:
    found = re.findall(r"embedded worker started \(pid (\d+)\)", logs)
    assert found, logs[-2000:]
    return int(found[-1])


# ---- kill -9 during uploads ----------------------------------------------------------------
def _kill_during_upload(data: Path, model: Path, fields: dict, payload: bytes, after: float | None):
    """Stream an upload in 64 KiB chunks and SIGKILL the API: after 1 MiB when `after` is
    None, else `after` seconds after the last byte (while the server saves and imports it)."""
    server = start_server(data_dir=data, base_model=model, env=QUIET)
    try:
        upload = SlowUpload(server.port, fields, payload)
        stop_at = upload.remaining if after is not None else 1 << 20
        while upload.sent < stop_at:
            upload.send(min(65536, stop_at - upload.sent))
            time.sleep(0.002)
        time.sleep(after or 0)
        server.signal(signal.SIGKILL)
        server.proc.wait(10)
        upload.close()
        return server.pid
    finally:
        server.stop()


def _big_archive(factory: AdapterFactory, out: Path, seed: int) -> bytes:
    """A valid adapter archive with a 24 MiB model card: saving and importing it takes a while."""
    folder = factory.save("x", out.with_suffix(".d"), seed=seed)
    (folder / "README.md").write_bytes(os.urandom(24 << 20))
    with zipfile.ZipFile(out, "w") as zf:  # stored, not compressed
        for path in sorted(folder.iterdir()):
            zf.write(path, arcname=path.name)
    return out.read_bytes()


def _check_restart(data: Path, model: Path, golden: Golden, seeds: dict) -> dict[str, int]:
    with (
        running_server(data_dir=data, base_model=model, env=QUIET) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        stored = assert_store_whole(data / "adapters")  # after the start-up cleanup
        assert "keep" in stored, stored
        for name, version in stored.items():
            r = client.post("/classify", json={"adapter": name, "inputs": TEXTS, "top_k": None})
            assert r.status_code == 200 and r.json()["version"] == version, r.text
            seed = golden.seed_of(TEXTS, r.json()["predictions"])
            assert seed == seeds[name][version], (name, version, seed)
    return stored


def test_kill9_during_uploads_leaves_only_whole_adapters(tiny_model_dir, factory, golden, tmp_path):
    data = tmp_path / "data"
    root = data / "adapters"
    factory.add_to_store(AdapterStore(root), "keep", seed=7)
    big = {s: _big_archive(factory, tmp_path / f"{s}.zip", s) for s in (8, 9)}
    seeds = {"keep": {1: 7}, "fresh": {1: 9}}
    cases = [  # (form fields, body, seconds after the last byte; None: killed mid-stream)
        ({"name": "keep", "overwrite": "true"}, big[8] + os.urandom(1 << 20), None),
        ({"name": "fresh"}, big[9], 0.05),
        ({"name": "keep", "overwrite": "true"}, big[8], 0.15),
        ({"name": "keep", "overwrite": "true"}, big[8], 0.3),
    ]
    left = []
    for fields, payload, after in cases:
        dead_pid = _kill_during_upload(data, tiny_model_dir, fields, payload, after)
        left.append(scratch_entries(root))
        stored = _check_restart(data, tiny_model_dir, golden, seeds)
        seeds["keep"][stored["keep"] + 1] = 8  # an overwrite that lands is the next version
    print("scratch folders right after each kill:", left)
    # The leftovers of a kill at the worst instants: a staging folder of a dead process, and
    # an old version renamed aside by a replace that died before removing it.
    (root / f".tmp-{socket.gethostname()}-{dead_pid}-staging").mkdir()
    (root / ".trash-0123456789abcdef").mkdir()
    (root / ".trash-0123456789abcdef" / "adapter.safetensors").write_bytes(b"old")
    _check_restart(data, tiny_model_dir, golden, seeds)


# ---- kill -9 during a training job ---------------------------------------------------------
def test_kill9_api_during_a_job_requeues_it_and_the_restart_finishes_it(tmp_path, tiny_model_dir):
    system = JobSystem(tmp_path, tiny_model_dir, env=EMBEDDED, workers=0)
    with system:
        worker_pid = _worker_pid(system.server.logs())
        # Killed as soon as it runs; the restart trains all of it again, so keep it short, but
        # long enough that the orphaned worker (it looks for its parent every second) stops it
        # before it ends: at 150 steps a quiet box once finished the job first.
        job_id = system.submit(name="crash", max_steps=400).json()["id"]
        system.wait(job_id, until=running)
        system.server.signal(signal.SIGKILL)
        system.server.proc.wait(10)
        # The orphaned worker notices within a second, puts the job back and exits.
        assert _wait_gone(worker_pid, 60), "the embedded worker outlived its API"
        job = _read_job(system, job_id)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, 1), job
        system.start_server()  # a new API and embedded worker take the job up again
        done = system.wait(job_id, timeout_s=300)  # busy 2 cores: 400 steps ran past 110 s
        assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert_store_whole(system.data_dir / "adapters", expect=["crash"])


def test_kill9_api_and_worker_during_a_job_fails_it_after_its_lease(tmp_path, tiny_model_dir):
    system = JobSystem(tmp_path, tiny_model_dir, env=EMBEDDED, workers=0, lease_s=2.0)
    with system:
        worker_pid = _worker_pid(system.server.logs())
        job_id = system.submit(name="lost", max_steps=100_000).json()["id"]
        system.wait(job_id, until=running)
        system.server.signal(signal.SIGKILL)  # power loss: both die at once
        os.kill(worker_pid, signal.SIGKILL)
        system.server.proc.wait(10)
        assert _wait_gone(worker_pid, 10)
        assert _read_job(system, job_id).status == JobStatus.RUNNING  # nobody left to say
        system.start_server()
        job = system.wait(job_id, until={"failed"}, timeout_s=30)
        assert "worker lost" in job["error"] and job["adapter"]["version"] is None
    assert_store_whole(system.data_dir / "adapters", expect=[])


def _read_job(system: JobSystem, job_id: str):
    """The job record straight from the data directory (the API is down)."""
    settings = Settings(data_dir=system.data_dir, base_model=system.env["APP_BASE_MODEL"])
    jobs = open_job_store(settings)
    try:
        return jobs.get(job_id)
    finally:
        jobs.close()


# ---- SIGTERM -------------------------------------------------------------------------------
def test_sigterm_drains_requests_in_flight_and_requeues_the_running_job(
    tmp_path, tiny_model_dir, factory, golden
):
    env = {**EMBEDDED, "APP_MAX_BATCH_SIZE": "1", "APP_TORCH_THREADS": "1"}
    system = JobSystem(tmp_path, tiny_model_dir, env=env, workers=0)
    store = AdapterStore(system.data_dir / "adapters")
    seeds = {"a": 1, "b": 2}
    for name, seed in seeds.items():
        factory.add_to_store(store, name, seed=seed)
    body = {"adapters": list(seeds), "inputs": [LONG_TEXT] * 64, "top_k": None}
    with system:
        worker_pid = _worker_pid(system.server.logs())
        job_id = system.submit(name="long", max_steps=100_000).json()["id"]
        system.wait(job_id, until=running)
        answers: list[tuple[float, httpx.Response]] = []

        def call() -> None:
            with httpx.Client(base_url=system.server.url, timeout=60) as client:
                response = client.post("/classify", json=body)
                answers.append((time.monotonic(), response))

        callers = [threading.Thread(target=call) for _ in range(6)]  # 768 forward passes
        for t in callers:
            t.start()
        # All six queued (128 texts each, minus the few already forwarded).
        assert _queue_busy(system.client, 5 * 128), "the requests were not in flight"
        sigterm_at = time.monotonic()
        system.server.signal(signal.SIGTERM)
        for t in callers:
            t.join(120)
        code = system.server.proc.wait(120)

        assert len(answers) == len(callers)
        for _, response in answers:
            assert response.status_code == 200, response.text
            for item in response.json()["results"]:
                assert golden.matches(seeds[item["adapter"]], body["inputs"], item["predictions"])
        assert all(at > sigterm_at for at, _ in answers), "not all were in flight at SIGTERM"
        assert code in (0, -signal.SIGTERM), code
        assert not _pid_running(worker_pid), "the embedded worker outlived the API"
        assert "worker stopped" in system.server.logs()
        job = _read_job(system, job_id)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, 1), job

        system.start_server()  # the next worker starts the job again; stop it for good
        system.wait(job_id, until=lambda j: j["attempts"] == 2 and running(j))
        system.client.post(f"/train-jobs/{job_id}/cancel")
        assert system.wait(job_id)["status"] == "cancelled"
    assert_store_whole(system.data_dir / "adapters", expect=["a", "b"])


def _queue_busy(client: httpx.Client, depth: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metric(client.get("/metrics").text, "inference_queue_depth") >= depth:
            return True
        time.sleep(0.01)
    return False
