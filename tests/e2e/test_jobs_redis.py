"""The job flow with Redis as queue AND job records (a real redis-server on 127.0.0.1, free port).

1. API and workers as if on separate hosts: each process has its own data directory, and they
   share nothing but Redis and the volume with the adapter store and the datasets.
2. The one-command setup: the worker embedded in `python -m app`; it stops with the API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from app.jobs.records_redis import DEFAULT_PREFIX
from tests.support.jobs import JobSystem, redis_or_skip, running

pytestmark = [pytest.mark.timeout(300), pytest.mark.redis]


@pytest.fixture
def redis_url(tmp_path):
    with redis_or_skip(tmp_path / "redis") as url:
        yield url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _redis_status(redis_url: str, job_id: str) -> str | None:
    import redis

    raw = redis.Redis.from_url(redis_url, decode_responses=True).hget(
        f"{DEFAULT_PREFIX}job:{job_id}", "status"
    )
    return json.loads(raw) if raw is not None else None


def test_api_and_workers_on_separate_hosts_share_only_redis_and_the_store(
    tmp_path, tiny_model_dir, redis_url
):
    import redis

    env = {"APP_REDIS_URL": redis_url}
    system = JobSystem(tmp_path / "sys", tiny_model_dir, env=env, separate_hosts=True)
    with system:
        job_id = system.submit(name="via-redis", max_steps=30).json()["id"]
        polls: list[dict] = []
        job = system.wait(job_id, seen=polls)
        assert job["status"] == "succeeded", (job["error"], system.diagnostics())
        assert any(running(p) and p["progress"]["step"] < 30 for p in polls)  # worker -> API
        answer = system.client.post("/classify", json={"adapter": "via-redis", "inputs": "good"})
        assert answer.status_code == 200 and answer.json()["version"] == 1
        assert _redis_status(redis_url, job_id) == "succeeded"  # the record lives in Redis
        stats = redis.Redis.from_url(redis_url).info("commandstats")
        assert stats["cmdstat_lpush"]["calls"] >= 1 and stats["cmdstat_brpop"]["calls"] >= 1

        # Cancel while running and while queued (one worker: the second job waits).
        long_id = system.submit(name="long", max_steps=100_000).json()["id"]
        system.wait(long_id, until=running)
        queued_id = system.submit(name="later", max_steps=2).json()["id"]
        cancelled = system.client.post(f"/train-jobs/{queued_id}/cancel").json()
        assert cancelled["status"] == "cancelled"
        system.client.post(f"/train-jobs/{long_id}/cancel")
        assert system.wait(long_id)["status"] == "cancelled"

        # SIGKILL the worker mid-job: the API fails the job once its 2 s lease expires.
        doomed_id = system.submit(name="doomed", max_steps=100_000).json()["id"]
        system.wait(doomed_id, until=running)
        system.workers[0].signal(signal.SIGKILL)
        system.workers[0].proc.wait(10)
        killed_at = time.monotonic()
        doomed = system.wait(doomed_id, until={"failed"}, timeout_s=30)
        assert time.monotonic() - killed_at < 10 and "worker lost" in doomed["error"]

        # A restarted API still has every job; a worker on another "host" runs the next one.
        system.stop_server()
        system.start_server()
        assert system.job(job_id)["status"] == "succeeded"
        assert system.job(doomed_id)["status"] == "failed"
        system.start_worker()
        again = system.wait(system.submit(name="doomed", max_steps=3).json()["id"])
        assert again["status"] == "succeeded", (again["error"], system.diagnostics())
        assert system.store_entries() == ["doomed", "via-redis"]

    # Nothing but Redis carried jobs: no SQLite queue or records anywhere, and no process kept
    # any file in its own data directory (everything shared is in Redis or on the volume).
    root = tmp_path / "sys"
    assert sorted(str(p) for p in root.rglob("*.sqlite3*")) == []
    own = [root / "api", root / "worker-0", root / "worker-1"]
    assert [str(p) for d in own if d.exists() for p in d.rglob("*") if p.is_file()] == []


def test_redis_with_embedded_worker_stops_with_the_api(tmp_path, tiny_model_dir, redis_url):
    env = {"APP_REDIS_URL": redis_url, "APP_EMBEDDED_WORKER": "true"}
    system = JobSystem(tmp_path / "sys", tiny_model_dir, env=env, workers=0)
    with system:
        match = re.search(r"embedded worker started \(pid (\d+)\)", system.server.logs())
        assert match, system.server.logs()[-2000:]
        worker_pid = int(match.group(1))
        assert _alive(worker_pid)
        job_id = system.submit(name="via-redis", max_steps=10).json()["id"]
        job = system.wait(job_id)
        assert job["status"] == "succeeded", (job["error"], system.diagnostics())
        assert _redis_status(redis_url, job_id) == "succeeded"
        assert list(system.data_dir.glob("*.sqlite3")) == []

    # uvicorn re-raises the SIGTERM after its graceful shutdown, hence -15. The lifespan
    # stopped the worker first: it is gone the moment the API is, and said so in the log.
    assert system.server.proc.returncode in (0, -signal.SIGTERM)
    assert not _alive(worker_pid), "the embedded worker outlived the API"
    assert "worker stopped" in system.server.logs()
