"""Redis job records specifics: Settings pick the backend, the key layout and its indexes, the
server's clock for leases, and an unreachable Redis. A real redis-server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from app.bootstrap import open_job_store
from app.config import Settings
from app.jobs.records import JobStatus, JobStoreUnavailable, QueueUnavailable
from app.jobs.records_redis import DEFAULT_PREFIX, RedisJobStore
from app.jobs.records_sqlite import SqliteJobStore
from app.jobs.runner import JobRunner
from app.jobs.service import JobService
from tests.support.jobs import redis_or_skip
from tests.support.server import free_port

pytestmark = pytest.mark.redis
P = DEFAULT_PREFIX


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def r(redis_url) -> redis.Redis:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def jobs(redis_url, r) -> RedisJobStore:
    store = RedisJobStore(redis_url)
    yield store
    store.close()


def test_settings_pick_the_backend_for_api_and_worker(tmp_path, redis_url, r):
    local = Settings(data_dir=tmp_path / "local")
    assert isinstance(open_job_store(local), SqliteJobStore)
    shared = Settings(data_dir=tmp_path / "shared", redis_url=redis_url)
    api = JobService.from_settings(shared)
    worker = JobRunner(shared, stop_event=threading.Event())
    assert isinstance(api.jobs, RedisJobStore) and isinstance(worker.jobs, RedisJobStore)
    job = api.jobs.create(adapter_name="a", config={"k": [1, "x"]})
    assert worker.jobs.claim(job.id, worker="w", lease_s=5).config == {"k": [1, "x"]}
    assert r.exists(f"{P}job:{job.id}")
    assert not (tmp_path / "shared" / "jobs.sqlite3").exists()
    api.close()
    worker.close()


def _members(r: redis.Redis, key: str) -> set[str]:
    return set(r.zrange(key, 0, -1))


def test_indexes_move_with_every_transition(jobs, r):
    ids = {n: jobs.create(adapter_name=n, config={}).id for n in "abcde"}
    jobs.claim(ids["a"], worker="w", lease_s=30)
    jobs.request_cancel(ids["b"])
    jobs.claim(ids["c"], worker="w", lease_s=30)
    jobs.finish(ids["c"], worker="w", status=JobStatus.SUCCEEDED, adapter_version=1)
    jobs.claim(ids["d"], worker="w", lease_s=1)
    assert jobs.expire_leases(now=time.time() + 5) == 1
    jobs.delete(ids["e"])

    assert _members(r, f"{P}all") == {ids[n] for n in "abcd"}
    assert _members(r, f"{P}status:running") == {ids["a"]}
    assert _members(r, f"{P}status:cancelled") == {ids["b"]}
    assert _members(r, f"{P}status:succeeded") == {ids["c"]}
    assert _members(r, f"{P}status:failed") == {ids["d"]}
    assert _members(r, f"{P}status:queued") == set()
    assert _members(r, f"{P}leases") == {ids["a"]}
    assert r.zscore(f"{P}leases", ids["a"]) == jobs.get(ids["a"]).lease_expires_at
    assert r.keys(f"{P}name:*") == [f"{P}name:a"]  # only the active job's name
    assert not r.exists(f"{P}job:{ids['e']}")
    raw = r.hgetall(f"{P}job:{ids['c']}")
    assert json.loads(raw["status"]) == "succeeded" and json.loads(raw["error"]) is None

    assert jobs.requeue(ids["a"], worker="w")
    assert _members(r, f"{P}leases") == set()
    assert _members(r, f"{P}status:queued") == {ids["a"]}
    assert r.get(f"{P}name:a") == ids["a"]  # re-queued: still the active job for "a"


def test_leases_run_on_the_redis_clock_not_the_hosts(jobs, r, monkeypatch):
    """A worker host whose clock is an hour ahead neither stamps future times nor makes the
    API (or another worker) expire a live lease."""
    job_id = jobs.create(adapter_name="a", config={}).id
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)
    job = jobs.claim(job_id, worker="w", lease_s=30)
    assert jobs.heartbeat(job_id, worker="w", lease_s=30)
    monkeypatch.setattr(time, "time", lambda: real_time() - 3600)  # an API host an hour behind
    assert jobs.expire_leases() == 0
    monkeypatch.undo()
    seconds, micros = r.time()
    assert abs(job.started_at - (seconds + micros / 1e6)) < 5
    assert jobs.get(job_id).status == JobStatus.RUNNING


def test_unreachable_redis_is_unavailable_not_a_crash():
    store = RedisJobStore(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(JobStoreUnavailable) as info:
        store.get("anything")
    assert time.monotonic() - started < 10
    assert isinstance(info.value, QueueUnavailable) and info.value.code == "queue_unavailable"
    assert "127.0.0.1" not in info.value.message  # no connection details for clients
    with pytest.raises(JobStoreUnavailable):
        store.create(adapter_name="a", config={})
