"""Worker and API failures: SIGKILL mid-job (lease expires -> failed, store clean), SIGTERM
mid-job (re-queued, the next worker finishes it), API restart (no job lost)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.jobs import JobSystem, running

pytestmark = pytest.mark.timeout(300)


def test_sigkill_worker_fails_the_job_after_its_lease_and_leaves_the_store_clean(
    tmp_path, tiny_model_dir
):
    with JobSystem(tmp_path, tiny_model_dir, lease_s=2.0) as system:
        job_id = system.submit(name="doomed", max_steps=100_000).json()["id"]
        before = system.wait(job_id, until=running)
        worker = system.workers[0]
        # A frozen worker (SIGSTOP: no heartbeat at all, like a starved heartbeat thread on a
        # busy host) is still alive on this host: missed heartbeats alone are no verdict.
        worker.signal(signal.SIGSTOP)
        try:
            time.sleep(3 * 2.0)  # three leases without a heartbeat
            assert system.job(job_id)["status"] == "running"
        finally:
            worker.signal(signal.SIGKILL)
        worker.proc.wait(10)

        # Dead and its lease over: failed on the next read (no timing margin to meet).
        job = system.wait(job_id, until={"failed"}, timeout_s=120)
        assert "worker lost" in job["error"] and job["finished_at"]
        assert job["progress"]["step"] >= before["progress"]["step"]
        assert system.store_entries() == []

        # The API restarts without losing the record; a new worker cleans up and works.
        system.stop_server()
        system.start_server()
        assert system.job(job_id)["status"] == "failed"
        system.start_worker()
        again = system.wait(system.submit(name="doomed", max_steps=3).json()["id"])
        assert again["status"] == "succeeded", again["error"]
        assert system.store_entries() == ["doomed"]


def test_sigterm_worker_requeues_the_job_and_the_next_worker_finishes_it(tmp_path, tiny_model_dir):
    with JobSystem(tmp_path, tiny_model_dir) as system:
        job_id = system.submit(name="moved", max_steps=30).json()["id"]
        system.wait(job_id, until=running)
        assert system.workers[0].stop(grace_s=60) == 0  # SIGTERM: graceful
        job = system.job(job_id)
        assert job["status"] == "queued" and job["attempts"] == 1
        assert job["progress"] == {k: None for k in job["progress"]}
        assert system.store_entries() == []

        system.start_worker()
        done = system.wait(job_id)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2 and done["progress"]["step"] == 30
        assert system.store_entries() == ["moved"]
