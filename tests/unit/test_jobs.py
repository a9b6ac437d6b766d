"""Job records: the state machine, ownership, leases, and safety across processes."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from app.jobs import JobConflict, JobNotFound, JobStatus, JobStore


@pytest.fixture
def jobs(tmp_path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3")


def _new(jobs: JobStore, name: str = "sentiment") -> str:
    return jobs.create(adapter_name=name, config={"name": name, "dataset": "x.jsonl"}).id


def test_create_is_queued_and_readable_from_a_new_store(jobs, tmp_path):
    job_id = _new(jobs)
    again = JobStore(tmp_path / "jobs.sqlite3").get(job_id)  # e.g. after an API restart
    assert again.status == JobStatus.QUEUED
    assert again.config == {"name": "sentiment", "dataset": "x.jsonl"}
    assert again.progress == {} and again.worker is None and again.attempts == 0
    assert again.created_at <= time.time()


def test_wal_mode(jobs):
    import sqlite3

    conn = sqlite3.connect(jobs.path)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    conn.close()


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


def _claim_in_process(path, job_id, worker, out):
    out.put(JobStore(path).claim(job_id, worker=worker, lease_s=5) is not None)


def test_exactly_one_process_claims_a_job(jobs):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    for _ in range(5):
        job_id = _new(jobs, f"race-{_}")
        procs = [
            ctx.Process(target=_claim_in_process, args=(jobs.path, job_id, f"w{i}", out))
            for i in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        wins = [out.get(timeout=5) for _ in procs]
        assert sum(wins) == 1
        assert jobs.get(job_id).status == JobStatus.RUNNING
