"""Job records in SQLite (the default backend): one host, any number of processes.

One file (`<data_dir>/jobs.sqlite3`) in WAL mode; every operation opens its own connection and
runs one short transaction, so any number of threads and processes on the host can use it. WAL
needs a local filesystem: for workers on other hosts use the Redis backend (app.jobs.records_redis).
The state machine and the ownership rules are in app.jobs.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.jobs.records import (
    ACTIVE,
    JOB_FIELDS,
    LEASE_LOST,
    Job,
    JobConflict,
    JobNotFound,
    JobStatus,
    check_final,
    worker_alive_here,
)

_SCHEMA = """
create table if not exists jobs (
    id text primary key,
    status text not null,
    adapter_name text not null,
    adapter_version integer,
    config text not null,
    progress text not null default '{}',
    metrics text not null default '{}',
    error text,
    cancel_requested integer not null default 0,
    worker text,
    attempts integer not null default 0,
    created_at real not null,
    started_at real,
    finished_at real,
    heartbeat_at real,
    lease_expires_at real
);
create index if not exists jobs_status_created on jobs (status, created_at);
create index if not exists jobs_adapter_status on jobs (adapter_name, status);
"""
_COLUMNS = list(JOB_FIELDS)
_JSON_COLUMNS = ("config", "progress", "metrics")


EXPIRE_LOCK_S = 0.5  # how long a read waits to expire leases before leaving it to the next


class SqliteJobStore:
    """`app.jobs.JobStore` in one SQLite file (see the interface for each method's contract)."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._timeout = busy_timeout_s
        with self._connect() as conn:
            conn.execute("pragma journal_mode=wal")
            conn.executescript(_SCHEMA)

    # ---- API side ------------------------------------------------------------------------
    def create(self, *, adapter_name: str, config: dict[str, Any]) -> Job:
        """Record a queued job; refuse while another queued/running job trains the same name."""
        job_id = uuid.uuid4().hex
        with self._write() as conn:
            busy = conn.execute(
                "select id from jobs where adapter_name = ? and status in (?, ?)",
                (adapter_name, *ACTIVE),
            ).fetchone()
            if busy is not None:
                raise JobConflict(
                    f"job {busy[0]} is already training adapter {adapter_name!r}; "
                    "wait for it or cancel it"
                )
            conn.execute(
                "insert into jobs (id, status, adapter_name, config, created_at) "
                "values (?, ?, ?, ?, ?)",
                (job_id, JobStatus.QUEUED, adapter_name, json.dumps(config), time.time()),
            )
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with self._connect() as conn:
            row = conn.execute(
                f"select {', '.join(_COLUMNS)} from jobs where id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise JobNotFound(f"training job {job_id!r} not found")
        return _to_job(row)

    def list(self, *, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""
        query = f"select {', '.join(_COLUMNS)} from jobs"
        args: tuple[Any, ...] = ()
        if status is not None:
            query += " where status = ?"
            args = (status,)
        query += " order by created_at desc, id limit ?"
        with self._connect() as conn:
            rows = conn.execute(query, (*args, limit)).fetchall()
        return [_to_job(r) for r in rows]

    def delete(self, job_id: str) -> None:
        """Remove a record that could not be enqueued (the caller created it a moment ago)."""
        with self._write() as conn:
            conn.execute("delete from jobs where id = ? and status = ?", (job_id, JobStatus.QUEUED))

    def request_cancel(self, job_id: str) -> Job:
        """Queued -> cancelled now; running -> flag set, the worker stops at its next step.

        Cancelling a cancelled job is a no-op; a succeeded or failed job raises JobConflict.
        """
        now = time.time()
        with self._write() as conn:
            status = self._status(conn, job_id)
            if status == JobStatus.QUEUED:
                conn.execute(
                    "update jobs set status = ?, cancel_requested = 1, finished_at = ? "
                    "where id = ?",
                    (JobStatus.CANCELLED, now, job_id),
                )
            elif status == JobStatus.RUNNING:
                conn.execute("update jobs set cancel_requested = 1 where id = ?", (job_id,))
            elif status != JobStatus.CANCELLED:
                raise JobConflict(f"training job {job_id!r} already finished ({status})")
        return self.get(job_id)

    def expire_leases(self, *, now: float | None = None) -> int:
        """Mark running jobs whose worker stopped heartbeating as failed; return how many."""
        now = time.time() if now is None else now
        expired = "select 1 from jobs where status = ? and lease_expires_at < ? limit 1"
        with self._connect() as conn:  # the common case (none expired) takes no write lock
            if conn.execute(expired, (JobStatus.RUNNING, now)).fetchone() is None:
                return 0
        try:
            with self._write(timeout=EXPIRE_LOCK_S) as conn:
                rows = conn.execute(
                    "select id, lease_expires_at - heartbeat_at, worker from jobs "
                    "where status = ? and lease_expires_at < ?",
                    (JobStatus.RUNNING, now),
                ).fetchall()
                rows = [(i, lease) for i, lease, worker in rows if not worker_alive_here(worker)]
                for job_id, lease in rows:
                    conn.execute(
                        "update jobs set status = ?, error = ?, finished_at = ?, worker = null "
                        "where id = ?",
                        (JobStatus.FAILED, LEASE_LOST.format(lease=lease or 0), now, job_id),
                    )
        except sqlite3.OperationalError:
            # A frozen process holds the write lock (e.g. a worker stopped mid-heartbeat): the
            # read that called us must not fail for it; a later read expires the lease.
            return 0
        return len(rows)

    # ---- worker side ---------------------------------------------------------------------
    def claim(self, job_id: str, *, worker: str, lease_s: float) -> Job | None:
        """Queued -> running for `worker`; None when the job was cancelled or taken already."""
        now = time.time()
        with self._write() as conn:
            cur = conn.execute(
                "update jobs set status = ?, worker = ?, started_at = ?, heartbeat_at = ?, "
                "lease_expires_at = ?, attempts = attempts + 1, error = null "
                "where id = ? and status = ?",
                (JobStatus.RUNNING, worker, now, now, now + lease_s, job_id, JobStatus.QUEUED),
            )
            claimed = cur.rowcount == 1
        return self.get(job_id) if claimed else None

    def heartbeat(self, job_id: str, *, worker: str, lease_s: float) -> bool:
        """Renew the lease; False when the job is no longer this worker's (stop working)."""
        now = time.time()
        with self._write() as conn:
            cur = conn.execute(
                "update jobs set heartbeat_at = ?, lease_expires_at = ? "
                "where id = ? and worker = ? and status = ?",
                (now, now + lease_s, job_id, worker, JobStatus.RUNNING),
            )
            return cur.rowcount == 1

    def set_progress(self, job_id: str, *, worker: str, progress: dict[str, Any]) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "update jobs set progress = ? where id = ? and worker = ? and status = ?",
                (json.dumps(progress), job_id, worker, JobStatus.RUNNING),
            )
            return cur.rowcount == 1

    def should_stop(self, job_id: str, *, worker: str) -> bool:
        """True once a cancel was requested or the job is no longer running for `worker`."""
        with self._connect() as conn:
            row = conn.execute(
                "select cancel_requested, status, worker from jobs where id = ?", (job_id,)
            ).fetchone()
        return row is None or bool(row[0]) or row[1] != JobStatus.RUNNING or row[2] != worker

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
        """Running -> a final status; False when the job was no longer this worker's."""
        check_final(status)
        with self._write() as conn:
            cur = conn.execute(
                "update jobs set status = ?, error = ?, adapter_version = ?, "
                "metrics = ?, finished_at = ? where id = ? and worker = ? and status = ?",
                (
                    status,
                    error,
                    adapter_version,
                    json.dumps(metrics or {}),
                    time.time(),
                    job_id,
                    worker,
                    JobStatus.RUNNING,
                ),
            )
            return cur.rowcount == 1

    def requeue(self, job_id: str, *, worker: str) -> bool:
        """Running -> queued (the worker is shutting down); the caller enqueues it again."""
        with self._write() as conn:
            cur = conn.execute(
                "update jobs set status = ?, worker = null, progress = '{}', "
                "heartbeat_at = null, lease_expires_at = null "
                "where id = ? and worker = ? and status = ? and cancel_requested = 0",
                (JobStatus.QUEUED, job_id, worker, JobStatus.RUNNING),
            )
            return cur.rowcount == 1

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own connection."""

    # ---- internals -----------------------------------------------------------------------
    def _connect(self, timeout: float | None = None) -> contextlib.closing[sqlite3.Connection]:
        wait = self._timeout if timeout is None else timeout
        conn = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        return contextlib.closing(conn)

    @contextlib.contextmanager
    def _write(self, timeout: float | None = None) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE: take the write lock up front)."""
        with self._connect(timeout) as conn:
            conn.execute("begin immediate")
            try:
                yield conn
            except BaseException:
                conn.execute("rollback")
                raise
            conn.execute("commit")

    @staticmethod
    def _status(conn: sqlite3.Connection, job_id: str) -> JobStatus:
        row = conn.execute("select status from jobs where id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"training job {job_id!r} not found")
        return JobStatus(row[0])


def _to_job(row: tuple[Any, ...]) -> Job:
    values = dict(zip(_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        values[column] = json.loads(values[column] or "{}")
    values["status"] = JobStatus(values["status"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return Job(**values)
