"""Job records in Redis (when `APP_REDIS_URL` is set): API and workers on any number of hosts.

Same contract as the SQLite backend (app.jobs.JobStore); the keys are described in
app.jobs.redis_layout (a hash per job, sorted-set indexes by time, status and lease).

Every write is one optimistic transaction (WATCH the job's hash, read it, decide, MULTI/EXEC;
redis-py retries when another client changed the hash in between), so a claim, an ownership-
checked worker write and a lease expiry are atomic and the indexes always move with the hash.
Timestamps come from the Redis server's clock (TIME), so leases do not depend on the clocks of
the hosts agreeing. Redis errors surface as JobStoreUnavailable (503).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline

from app.jobs.records import (
    ACTIVE,
    LEASE_LOST,
    Job,
    JobConflict,
    JobNotFound,
    JobStatus,
    check_final,
    worker_alive_here,
)
from app.jobs.redis_layout import (
    DEFAULT_PREFIX,
    Keys,
    decode,
    decode_status,
    encode,
    new_job,
    read_job,
    server_time,
    unavailable,
)

log = logging.getLogger("app.jobs")
Changes = dict[str, Any]
Decide = Callable[[Job, float], Changes | None]


class RedisJobStore:
    """`app.jobs.JobStore` in Redis (see the interface for each method's contract)."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._r = redis.Redis.from_url(url, decode_responses=True)
        self._k = Keys(prefix)

    # ---- API side ------------------------------------------------------------------------
    @unavailable
    def create(self, *, adapter_name: str, config: dict[str, Any]) -> Job:
        job_id = uuid.uuid4().hex
        name_key = self._k.name(adapter_name)

        def tx(pipe: Pipeline) -> Job:
            holder = pipe.get(name_key)
            if (
                holder is not None
                and decode_status(pipe.hget(self._k.job(holder), "status")) in ACTIVE
            ):
                raise JobConflict(
                    f"job {holder} is already training adapter {adapter_name!r}; "
                    "wait for it or cancel it"
                )
            now = server_time(pipe)
            job = new_job(job_id, adapter_name, config, now)
            pipe.multi()
            pipe.hset(self._k.job(job_id), mapping=encode(dataclasses.asdict(job)))
            pipe.zadd(self._k.all, {job_id: now})
            pipe.zadd(self._k.status(JobStatus.QUEUED), {job_id: now})
            pipe.set(name_key, job_id)
            return job

        return self._r.transaction(tx, name_key, value_from_callable=True)

    @unavailable
    def get(self, job_id: str) -> Job:
        raw = self._r.hgetall(self._k.job(job_id))
        if not raw:
            raise JobNotFound(f"training job {job_id!r} not found")
        return decode(raw)

    @unavailable
    def list(self, *, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        if limit <= 0:
            return []
        index = self._k.all if status is None else self._k.status(status)
        ids = self._r.zrevrange(index, 0, limit - 1)
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self._k.job(job_id))
        return [decode(raw) for raw in pipe.execute() if raw]  # skip one deleted meanwhile

    @unavailable
    def delete(self, job_id: str) -> None:
        key = self._k.job(job_id)

        def tx(pipe: Pipeline) -> None:
            job = read_job(pipe, key)
            if job is None or job.status != JobStatus.QUEUED:
                return
            holder = self._watch_name(pipe, job)
            pipe.multi()
            pipe.delete(key)
            pipe.zrem(self._k.all, job_id)
            pipe.zrem(self._k.status(JobStatus.QUEUED), job_id)
            if holder == job_id:
                pipe.delete(self._k.name(job.adapter_name))

        self._r.transaction(tx, key)

    @unavailable
    def request_cancel(self, job_id: str) -> Job:
        def decide(job: Job, now: float) -> Changes | None:
            if job.status == JobStatus.QUEUED:
                return {"status": JobStatus.CANCELLED, "cancel_requested": True, "finished_at": now}
            if job.status == JobStatus.RUNNING:
                return {"cancel_requested": True}
            if job.status != JobStatus.CANCELLED:
                raise JobConflict(f"training job {job_id!r} already finished ({job.status})")
            return None

        self._transition(job_id, decide, must_exist=True)
        return self.get(job_id)

    @unavailable
    def expire_leases(self, *, now: float | None = None) -> int:
        now = server_time(self._r) if now is None else now
        due = self._r.zrangebyscore(self._k.leases, "-inf", f"({now!r}")

        def decide(job: Job, _: float) -> Changes | None:
            expires = job.lease_expires_at
            if job.status != JobStatus.RUNNING or expires is None or expires >= now:
                return None  # renewed or finished since the index was read
            if worker_alive_here(job.worker):
                return None  # a late heartbeat of a live worker on this host: not lost
            lease = expires - job.heartbeat_at if job.heartbeat_at is not None else 0
            error = LEASE_LOST.format(lease=lease)
            return {"status": JobStatus.FAILED, "error": error, "finished_at": now, "worker": None}

        return sum(self._transition(job_id, decide) is not None for job_id in due)

    # ---- worker side ---------------------------------------------------------------------
    @unavailable
    def claim(self, job_id: str, *, worker: str, lease_s: float) -> Job | None:
        def decide(job: Job, now: float) -> Changes | None:
            if job.status != JobStatus.QUEUED:
                return None
            return {
                "status": JobStatus.RUNNING,
                "worker": worker,
                "started_at": now,
                "heartbeat_at": now,
                "lease_expires_at": now + lease_s,
                "attempts": job.attempts + 1,
                "error": None,
            }

        return self._transition(job_id, decide)

    @unavailable
    def heartbeat(self, job_id: str, *, worker: str, lease_s: float) -> bool:
        def decide(job: Job, now: float) -> Changes | None:
            return {"heartbeat_at": now, "lease_expires_at": now + lease_s}

        return self._transition(job_id, _owned(worker, decide)) is not None

    @unavailable
    def set_progress(self, job_id: str, *, worker: str, progress: dict[str, Any]) -> bool:
        decide = _owned(worker, lambda job, now: {"progress": progress})
        return self._transition(job_id, decide) is not None

    @unavailable
    def should_stop(self, job_id: str, *, worker: str) -> bool:
        fields = ("cancel_requested", "status", "worker")
        raw = self._r.hmget(self._k.job(job_id), fields)
        if raw[1] is None:
            return True
        cancel, status, owner = (json.loads(v) if v is not None else None for v in raw)
        return bool(cancel) or status != JobStatus.RUNNING or owner != worker

    @unavailable
    def finish(
        self,
        job_id: str,
        *,
        worker: str,
        status: JobStatus,
        error: str | None = None,
        adapter_version: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> bool:
        check_final(status)

        def decide(job: Job, now: float) -> Changes | None:
            return {
                "status": status,
                "error": error,
                "adapter_version": adapter_version,
                "metrics": metrics or {},
                "finished_at": now,
            }

        return self._transition(job_id, _owned(worker, decide)) is not None

    @unavailable
    def requeue(self, job_id: str, *, worker: str) -> bool:
        def decide(job: Job, now: float) -> Changes | None:
            if job.cancel_requested:
                return None
            return {
                "status": JobStatus.QUEUED,
                "worker": None,
                "progress": {},
                "heartbeat_at": None,
                "lease_expires_at": None,
            }

        return self._transition(job_id, _owned(worker, decide)) is not None

    def close(self) -> None:
        self._r.close()

    # ---- internals -----------------------------------------------------------------------
    def _transition(self, job_id: str, decide: Decide, *, must_exist: bool = False) -> Job | None:
        """Apply `decide(job, now)`'s changes atomically; the new record, or None when the job
        is missing (JobNotFound with must_exist) or `decide` declined."""
        key = self._k.job(job_id)

        def tx(pipe: Pipeline) -> Job | None:
            job = read_job(pipe, key)
            if job is None:
                if must_exist:
                    raise JobNotFound(f"training job {job_id!r} not found")
                return None
            changes = decide(job, server_time(pipe))
            if changes is None:
                return None
            new = dataclasses.replace(job, **changes)
            ends = job.status in ACTIVE and new.status not in ACTIVE
            holder = self._watch_name(pipe, job) if ends else None
            pipe.multi()
            pipe.hset(key, mapping=encode(changes))
            self._reindex(pipe, job, new, release_name=holder == job.id)
            return new

        return self._r.transaction(tx, key, value_from_callable=True)

    def _watch_name(self, pipe: Pipeline, job: Job) -> str | None:
        name_key = self._k.name(job.adapter_name)
        pipe.watch(name_key)
        return pipe.get(name_key)

    def _reindex(self, pipe: Pipeline, old: Job, new: Job, *, release_name: bool) -> None:
        """Queue the index updates for old -> new (inside MULTI)."""
        if new.status != old.status:
            pipe.zrem(self._k.status(old.status), old.id)
            pipe.zadd(self._k.status(new.status), {old.id: old.created_at})
        if new.status == JobStatus.RUNNING:
            if old.status != JobStatus.RUNNING or new.lease_expires_at != old.lease_expires_at:
                pipe.zadd(self._k.leases, {old.id: new.lease_expires_at})
        elif old.status == JobStatus.RUNNING:
            pipe.zrem(self._k.leases, old.id)
        if release_name:
            pipe.delete(self._k.name(old.adapter_name))


def _owned(worker: str, decide: Decide) -> Decide:
    """Only while the job is running for `worker`."""

    def guarded(job: Job, now: float) -> Changes | None:
        if job.status != JobStatus.RUNNING or job.worker != worker:
            return None
        return decide(job, now)

    return guarded
