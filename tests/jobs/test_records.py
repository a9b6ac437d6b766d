"""Job records: the state machine, ownership, leases, and safety across processes, against
both backends (SQLite and a real redis-server on 127.0.0.1)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from app.jobs.records import JobConflict, JobNotFound, JobStatus, JobStore
from tests.support.jobs import BACKENDS, StoreSpec, redis_or_skip, store_spec


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def spec(request, tmp_path) -> StoreSpec:
    return store_spec(request, tmp_path)


@pytest.fixture
def jobs(spec) -> JobStore:
    store = spec.open()
    yield store
    store.close()


def _new(jobs: JobStore, name: str = "sentiment") -> str:
    return jobs.create(adapter_name=name, config={"name": name, "dataset": "x.jsonl"}).id


def test_create_is_queued_and_readable_from_a_new_store(jobs, spec):
    job_id = _new(jobs)
    again = spec.open().get(job_id)  # e.g. after an API restart, or from another host
    assert again.status == JobStatus.QUEUED
    assert again.config == {"name": "sentiment", "dataset": "x.jsonl"}
    assert again.progress == {} and again.worker is None and again.attempts == 0
    assert again.created_at <= time.time()


def test_sqlite_wal_mode(tmp_path):
    import sqlite3

    from app.jobs.records_sqlite import SqliteJobStore

    jobs = SqliteJobStore(tmp_path / "jobs.sqlite3")
    conn = sqlite3.connect(jobs.path)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_a_frozen_writer_does_not_fail_reads_that_would_expire_leases(tmp_path):
    """A worker stopped mid-write (SIGSTOP) holds SQLite's write lock: a read that finds an
    expired lease leaves it for a later read instead of failing after the busy timeout."""
    import sqlite3

    from app.jobs.records_sqlite import SqliteJobStore

    jobs = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job_id = jobs.create(adapter_name="a", config={"name": "a"}).id
    jobs.claim(job_id, worker="gone-host:1", lease_s=0.01)
    time.sleep(0.05)
    frozen = sqlite3.connect(jobs.path, isolation_level=None)
    frozen.execute("begin immediate")  # the write lock, never released while frozen
    try:
        started = time.monotonic()
        assert jobs.expire_leases() == 0
        assert time.monotonic() - started < 3  # not the 10 s busy timeout, and no error
    finally:
        frozen.execute("rollback")
        frozen.close()
    assert jobs.expire_leases() == 1 and jobs.get(job_id).status == JobStatus.FAILED


def test_one_active_job_per_adapter_name(jobs):
    first = _new(jobs, "a")
    with pytest.raises(JobConflict, match=first):
        _new(jobs, "a")
    _new(jobs, "b")  # other names are free
    jobs.request_cancel(first)
    _new(jobs, "a")  # a finished job frees the name


def test_get_unknown(jobs):
    with pytest.raises(JobNotFound):
        jobs.get("nope")


def test_list_newest_first_and_filter(jobs):
    ids = [_new(jobs, f"n{i}") for i in range(3)]
    jobs.request_cancel(ids[1])
    assert [j.id for j in jobs.list()] == ids[::-1]
    assert [j.id for j in jobs.list(status=JobStatus.CANCELLED)] == [ids[1]]
    assert [j.id for j in jobs.list(status=JobStatus.QUEUED, limit=1)] == [ids[2]]


def test_cancel_queued_means_never_claimed(jobs):
    job_id = _new(jobs)
    job = jobs.request_cancel(job_id)
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None
    assert jobs.claim(job_id, worker="w", lease_s=5) is None
    assert jobs.request_cancel(job_id).status == JobStatus.CANCELLED  # idempotent


def test_cancel_running_sets_flag_worker_finishes(jobs):
    job_id = _new(jobs)
    assert jobs.claim(job_id, worker="w", lease_s=5).status == JobStatus.RUNNING
    assert not jobs.should_stop(job_id, worker="w")
    job = jobs.request_cancel(job_id)
    assert job.status == JobStatus.RUNNING and job.cancel_requested
    assert jobs.should_stop(job_id, worker="w")
    assert not jobs.requeue(job_id, worker="w")  # a cancelled job is never re-queued
    assert jobs.finish(job_id, worker="w", status=JobStatus.CANCELLED)
    assert jobs.get(job_id).status == JobStatus.CANCELLED


def test_cancel_finished_job_conflicts(jobs):
    job_id = _new(jobs)
    jobs.claim(job_id, worker="w", lease_s=5)
    jobs.finish(job_id, worker="w", status=JobStatus.SUCCEEDED, adapter_version=3)
    with pytest.raises(JobConflict, match="already finished"):
        jobs.request_cancel(job_id)
    assert jobs.get(job_id).adapter_version == 3


def test_only_the_owner_writes(jobs):
    job_id = _new(jobs)
    jobs.claim(job_id, worker="w1", lease_s=5)
    assert jobs.claim(job_id, worker="w2", lease_s=5) is None
    assert not jobs.set_progress(job_id, worker="w2", progress={"step": 9})
    assert not jobs.heartbeat(job_id, worker="w2", lease_s=5)
    assert not jobs.finish(job_id, worker="w2", status=JobStatus.FAILED)
    assert jobs.should_stop(job_id, worker="w2")
    assert jobs.set_progress(job_id, worker="w1", progress={"step": 1, "total_steps": 4})
    assert jobs.get(job_id).progress == {"step": 1, "total_steps": 4}


def test_finish_needs_a_final_status(jobs):
    job_id = _new(jobs)
    jobs.claim(job_id, worker="w", lease_s=5)
    with pytest.raises(ValueError):
        jobs.finish(job_id, worker="w", status=JobStatus.RUNNING)


def test_expired_lease_fails_the_job_and_locks_out_the_old_worker(jobs):
    job_id = _new(jobs)
    jobs.claim(job_id, worker="w", lease_s=10)
    assert jobs.expire_leases() == 0
    assert jobs.heartbeat(job_id, worker="w", lease_s=10)
    assert jobs.expire_leases(now=time.time() + 11) == 1
    job = jobs.get(job_id)
    assert job.status == JobStatus.FAILED
    assert "no heartbeat for 10s" in job.error
    assert not jobs.heartbeat(job_id, worker="w", lease_s=10)
    assert not jobs.finish(job_id, worker="w", status=JobStatus.SUCCEEDED)
    assert jobs.get(job_id).status == JobStatus.FAILED


def test_requeue_resets_and_allows_a_new_claim(jobs):
    job_id = _new(jobs)
    jobs.claim(job_id, worker="w1", lease_s=5)
    jobs.set_progress(job_id, worker="w1", progress={"step": 3})
    assert jobs.requeue(job_id, worker="w1")
    job = jobs.get(job_id)
    assert job.status == JobStatus.QUEUED and job.worker is None and job.progress == {}
    assert jobs.claim(job_id, worker="w2", lease_s=5).attempts == 2


def _claim_in_process(spec, job_id, worker, out):
    out.put(spec.open().claim(job_id, worker=worker, lease_s=5) is not None)


def test_exactly_one_process_claims_a_job(jobs, spec):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    for _ in range(5):
        job_id = _new(jobs, f"race-{_}")
        procs = [
            ctx.Process(target=_claim_in_process, args=(spec, job_id, f"w{i}", out))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        wins = [out.get(timeout=5) for _ in procs]
        assert sum(wins) == 1
        assert jobs.get(job_id).status == JobStatus.RUNNING


def _race(spec: StoreSpec, calls) -> list:
    """Run each call(store) in its own thread with its own store, all released at once."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        store = spec.open()
        barrier.wait()
        try:
            results[i] = call(store)
        except Exception as exc:
            results[i] = exc
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_creates_for_one_name_admit_exactly_one(jobs, spec):
    def create(store):
        return store.create(adapter_name="same", config={})

    results = _race(spec, [create] * 6)
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    assert all(isinstance(r, JobConflict) for r in results if r is not winners[0])
    assert [j.id for j in jobs.list()] == [winners[0].id]


def test_finish_racing_lease_expiry_gives_one_verdict(jobs, spec):
    def expire(store):
        return store.expire_leases(now=time.time() + 120)

    for i in range(8):
        job_id = _new(jobs, f"race-{i}")
        jobs.claim(job_id, worker="w", lease_s=60)

        def finish(store, job_id=job_id):
            return store.finish(job_id, worker="w", status=JobStatus.SUCCEEDED)

        finished, expired = _race(spec, [finish, expire])
        assert finished in (True, False) and expired in (0, 1), (finished, expired)
        assert finished != bool(expired), (finished, expired)  # exactly one of them won
        status = jobs.get(job_id).status
        assert status == (JobStatus.SUCCEEDED if finished else JobStatus.FAILED)


def test_a_live_worker_on_this_host_keeps_its_job_past_a_missed_heartbeat(jobs):
    """A starved heartbeat thread (busy host) is no verdict while the worker process lives."""
    import subprocess
    import sys

    from app.jobs.records import worker_id

    alive = _new(jobs, "alive")
    jobs.claim(alive, worker=worker_id("me"), lease_s=1)  # this very process: alive
    assert jobs.expire_leases(now=time.time() + 3600) == 0
    assert jobs.get(alive).status == JobStatus.RUNNING
    assert jobs.heartbeat(alive, worker=worker_id("me"), lease_s=1)  # and it can go on

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a process of this host that is gone: its pid names no live process
    gone = _new(jobs, "gone")
    jobs.claim(gone, worker=f"{worker_id('x').split(':')[0]}:{child.pid}:x:0", lease_s=1)
    assert jobs.expire_leases(now=time.time() + 3600) == 1
    assert jobs.get(gone).status == JobStatus.FAILED
    assert jobs.get(alive).status == JobStatus.RUNNING


def test_a_reused_pid_is_not_the_old_worker():
    from app.jobs.records import worker_alive_here, worker_id

    host, pid, _, start = worker_id("me").split(":")
    assert worker_alive_here(f"{host}:{pid}:me:{start}")
    assert not worker_alive_here(f"{host}:{pid}:me:{int(start) + 1}")  # other start time
    assert not worker_alive_here(f"another-host:{pid}:me:{start}")


def test_learning_curves_survive_the_round_trip(jobs, spec):
    curves = {
        "metric": "accuracy",
        "best_step": 20,
        "stopped_early": True,
        "train": [
            {"step": s, "epoch": s / 40, "loss": 0.7 - s / 100, "learning_rate": 1e-3}
            for s in range(1, 41)
        ],
        "eval": [
            {"step": 20, "epoch": 0.5, "loss": 0.4, "accuracy": 0.8, "f1_macro": 0.79},
            {"step": 40, "epoch": 1.0, "loss": 0.45, "accuracy": 0.78, "f1_macro": 0.77},
        ],
    }
    job_id = _new(jobs)
    jobs.claim(job_id, worker="w", lease_s=30)
    assert jobs.set_progress(job_id, worker="w", progress={"step": 40, "curves": curves})
    assert spec.open().get(job_id).progress["curves"] == curves  # another reader, same points
