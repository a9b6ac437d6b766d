"""The same job flow with the Redis queue (a real redis-server on 127.0.0.1, free port) and the
worker embedded in `python -m app` (the one-command setup); the worker stops with the API."""

from __future__ import annotations

import os
import re
import shutil
import signal

import pytest

from tests.support.jobs import JobSystem, redis_server, running

pytestmark = [pytest.mark.timeout(300), pytest.mark.redis]


@pytest.fixture
def redis_url(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip(
            "redis-server not found: install the Debian package redis-server "
            "(scripts/test.sh does so when run as root with apt)"
        )
    with redis_server(tmp_path / "redis") as url:
        yield url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_redis_queue_with_embedded_worker(tmp_path, tiny_model_dir, redis_url):
    import redis

    env = {"APP_REDIS_URL": redis_url, "APP_EMBEDDED_WORKER": "true"}
    system = JobSystem(tmp_path / "sys", tiny_model_dir, env=env, workers=0)
    with system:
        match = re.search(r"embedded worker started \(pid (\d+)\)", system.server.logs())
        assert match, system.server.logs()[-2000:]
        worker_pid = int(match.group(1))
        assert _alive(worker_pid)

        job_id = system.submit(name="via-redis", max_steps=30).json()["id"]
        polls: list[dict] = []
        job = system.wait(job_id, seen=polls)
        assert job["status"] == "succeeded", (job["error"], system.diagnostics())
        assert any(running(p) and p["progress"]["step"] < 30 for p in polls)
        answer = system.client.post("/classify", json={"adapter": "via-redis", "inputs": "good"})
        assert answer.status_code == 200 and answer.json()["version"] == 1
        # The queue really is Redis: no SQLite queue file; the server saw the push and the pop.
        assert not (system.data_dir / "queue.sqlite3").exists()
        stats = redis.Redis.from_url(redis_url).info("commandstats")
        assert stats["cmdstat_lpush"]["calls"] >= 1 and stats["cmdstat_brpop"]["calls"] >= 1

        # Cancel while running and while queued (one worker: the second job waits).
        long_id = system.submit(name="long", max_steps=100_000).json()["id"]
        system.wait(long_id, until=running)
        queued_id = system.submit(name="later", max_steps=2).json()["id"]
        assert system.client.post(f"/train-jobs/{queued_id}/cancel").json()["status"] == (
            "cancelled"
        )
        system.client.post(f"/train-jobs/{long_id}/cancel")
        assert system.wait(long_id)["status"] == "cancelled"
        assert system.store_entries() == ["via-redis"]

    # uvicorn re-raises the SIGTERM after its graceful shutdown, hence -15. The lifespan
    # stopped the worker first: it is gone the moment the API is, and said so in the log.
    assert system.server.proc.returncode in (0, -signal.SIGTERM)
    assert not _alive(worker_pid), "the embedded worker outlived the API"
    assert "worker stopped" in system.server.logs()
