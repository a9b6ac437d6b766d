"""Helpers for the training-job end-to-end tests: real server, real workers, real redis-server.

with JobSystem(tmp_path, tiny_model_dir) as system:   # API (no embedded worker) + 1 worker
    job_id = system.submit(name="kw", max_steps=30).json()["id"]
    job = system.wait(job_id, until={"succeeded"})

`redis_or_skip` starts a throwaway redis-server; `StoreSpec` opens the same job records (SQLite
file or Redis URL) in any process, for tests that run against both backends.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.jobs.records import JobStore
from tests.support.server import ManagedProcess, Server, free_port, start_process, start_server
from tests.support.tiny import keyword_dataset, write_jsonl

FINAL = {"succeeded", "failed", "cancelled"}
# Tiny jobs: a few seconds on a 2-core CPU. `eval_split: null` holds out eval_fraction.
JOB_DEFAULTS: dict[str, Any] = {
    "dataset": "kw.jsonl",
    "eval_split": None,
    "batch_size": 8,
    "max_length": 32,
    "learning_rate": 0.005,
    # the random tiny base stalls at chance: no early stop, so that step counts are exact
    "early_stopping_patience": 0,
}


class JobSystem:
    """An API server (`python -m app`) and worker processes sharing one data directory.

    `separate_hosts=True` plays API and workers on different hosts (use it with APP_REDIS_URL):
    each process gets its own data directory, and they share only `<root>/shared`, the volume
    with the adapter store (APP_STORE_DIR) and the datasets (APP_DATA_ROOTS).
    """

    def __init__(
        self,
        root: Path,
        model_dir: Path,
        *,
        env: dict[str, str] | None = None,
        workers: int = 1,
        lease_s: float = 2.0,
        separate_hosts: bool = False,
    ) -> None:
        self.root = root
        self.separate_hosts = separate_hosts
        self.data_dir = root / ("api" if separate_hosts else "data")
        shared = root / "shared" if separate_hosts else self.data_dir
        self.store_dir, datasets = shared / "adapters", shared / "datasets"
        self.logs = root / "logs"
        self.env = {
            "APP_DATA_DIR": str(self.data_dir),
            "APP_BASE_MODEL": str(model_dir),
            "APP_DEVICE": "cpu",
            "APP_JOB_LEASE_S": str(lease_s),
            "APP_EMBEDDED_WORKER": "false",
            **({"APP_STORE_DIR": str(self.store_dir)} if separate_hosts else {}),
            **({"APP_DATA_ROOTS": str(datasets)} if separate_hosts else {}),
            **(env or {}),
        }
        self.n_workers = workers
        self.server: Server | None = None
        self.workers: list[ManagedProcess] = []
        self.client: httpx.Client | None = None
        write_jsonl(datasets / "kw.jsonl", keyword_dataset(160, seed=3))

    # ---- processes -----------------------------------------------------------------------
    def start_server(self) -> Server:
        self.server = start_server(
            data_dir=self.data_dir, env=self.env, log_path=self.logs / "server.log"
        )
        self.client = httpx.Client(base_url=self.server.url, timeout=30.0)
        return self.server

    def stop_server(self) -> int:
        assert self.server is not None and self.client is not None
        self.client.close()
        return self.server.stop(grace_s=90)

    def start_worker(self) -> ManagedProcess:
        n = len(self.workers)
        env = dict(self.env)
        if self.separate_hosts:
            env["APP_DATA_DIR"] = str(self.root / f"worker-{n}")
        worker = start_process(
            [sys.executable, "-m", "app.worker"],
            env=env,
            log_path=self.logs / f"worker-{n}.log",
        )
        self.workers.append(worker)
        return worker

    def __enter__(self) -> JobSystem:
        self.start_server()
        for _ in range(self.n_workers):
            self.start_worker()
        return self

    def __exit__(self, *exc: object) -> None:
        for worker in self.workers:
            worker.stop(grace_s=30)
        if self.server is not None:
            self.stop_server()

    # ---- API -----------------------------------------------------------------------------
    def submit(self, **config: Any) -> httpx.Response:
        assert self.client is not None
        return self.client.post("/train-jobs", json={**JOB_DEFAULTS, **config})

    def job(self, job_id: str) -> dict[str, Any]:
        assert self.client is not None
        response = self.client.get(f"/train-jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(
        self,
        job_id: str,
        *,
        until: Callable[[dict[str, Any]], bool] | set[str] = FINAL,
        timeout_s: float = 120.0,
        seen: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Poll the job until `until` (a status set or a predicate) holds; keep every poll."""
        done = until if callable(until) else (lambda job: job["status"] in until)
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if seen is not None:
                seen.append(job)
            if done(job):
                return job
            if job["status"] in FINAL:
                raise AssertionError(f"job ended {job['status']}: {job}\n{self.diagnostics()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}:\n{self.diagnostics()}")
            time.sleep(0.05)

    def diagnostics(self) -> str:
        parts = [self.server.logs()[-3000:]] if self.server else []
        parts += [w.logs()[-3000:] for w in self.workers]
        return "\n-----\n".join(parts)

    def store_entries(self) -> list[str]:
        """Everything in the store folder except its lock file, tombstones, listing index and
        kept versions."""
        root = self.store_dir
        if not root.is_dir():
            return []
        kept = (".lock", ".tombstones", ".index", ".versions")
        return sorted(p.name for p in root.iterdir() if p.name not in kept)


def running(job: dict[str, Any]) -> bool:
    """Running with a training step reported."""
    return job["status"] == "running" and (job["progress"].get("step") or 0) > 0


@contextmanager
def redis_server(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1:<free port>; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    tmp_path.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "redis.log"
    port = free_port()
    with log_path.open("ab") as log:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [binary, *args, "--dir", str(tmp_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_redis(url, proc, log_path)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_redis(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    import redis

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{log}")
        try:
            if redis.Redis.from_url(url).ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise TimeoutError("redis-server did not answer PING")


@contextmanager
def redis_or_skip(tmp_path: Path) -> Iterator[str]:
    """`redis_server`, or skip the test when the redis-server binary is not installed."""
    if shutil.which("redis-server") is None:
        pytest.skip(
            "redis-server not found: install the Debian package redis-server "
            "(scripts/test.sh does so when run as root with apt)"
        )
    with redis_server(tmp_path) as url:
        yield url


# Parameters for a fixture that runs a test against both job-record backends.
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@dataclass(frozen=True)
class StoreSpec:
    """Where a test's job records live; picklable, so a child process can open them too."""

    backend: str  # "sqlite" | "redis"
    location: str  # the SQLite file, or the Redis URL

    def open(self) -> JobStore:
        if self.backend == "sqlite":
            from app.jobs.records_sqlite import SqliteJobStore

            return SqliteJobStore(self.location)
        from app.jobs.records_redis import RedisJobStore

        return RedisJobStore(self.location)


def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """For a fixture parametrized with BACKENDS; the redis one needs a `redis_url` fixture and
    starts from an empty database."""
    if request.param == "sqlite":
        return StoreSpec("sqlite", str(tmp_path / "jobs.sqlite3"))
    import redis

    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()
    return StoreSpec("redis", url)
