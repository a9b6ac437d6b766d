"""Training-job records: the types and the `JobStore` interface (no backend is imported here).

A record is durable and shared by the API and every worker. Two backends, chosen from Settings by
`app.jobs.factory.open_records` and nothing else:

- SQLite (`app.jobs.records_sqlite`, default): `<data_dir>/jobs.sqlite3`, for an API and workers
  on one host.
- Redis (`app.jobs.records_redis`, when `APP_REDIS_URL` is set): the same Redis server as the
  queue, so workers on other hosts share the records too.

State machine (identical in both)::

    queued --claim--> running --finish--> succeeded | failed | cancelled
       |                 |  \\--requeue (graceful worker stop)--> queued
       \\--cancel--> cancelled      \\--lease expired (worker died)--> failed

A running job belongs to one worker and holds a lease that the worker's heartbeat renews; every
write by a worker is conditional on still owning the job, so a worker that lost its lease can
never overwrite the verdict. At most one queued/running job per adapter name.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
LEASE_LOST = "worker lost: no heartbeat for {lease:.0f}s (the worker process died); resubmit"


def worker_id(tag: str) -> str:
    """This process's worker id: ``host:pid:tag:start`` (start: the process start time in clock
    ticks, so that a reused pid is not mistaken for this process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{tag}:{_start_ticks(os.getpid()) or 0}"


def worker_alive_here(worker: str | None) -> bool:
    """True when `worker` names a live (not zombie) process on this host.

    The lease verdict uses it: a job whose worker runs here and is alive is not failed for a
    late heartbeat (a starved heartbeat thread on a busy host), only once its process is gone.
    A worker on another host (Redis) is judged by its heartbeats alone.
    """
    parts = (worker or "").split(":")
    if len(parts) < 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if not _pid_alive(pid):
        return False
    if len(parts) >= 4 and parts[3].isdigit() and int(parts[3]):
        return _start_ticks(pid) == int(parts[3])
    return True


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields after "(comm)": state is [0]


def _start_ticks(pid: int) -> int | None:
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _pid_alive(pid: int) -> bool:
    fields = _proc_stat(pid)
    if fields is not None:
        return fields[0] not in ("Z", "X")
    if Path("/proc/self/stat").exists():
        return False  # /proc works here and has no such process
    try:  # no /proc (macOS): signal 0 only checks existence
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobError(Exception):
    code = "job_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class JobNotFound(JobError):
    code = "job_not_found"


class JobConflict(JobError):
    """Another active job already trains this adapter name, or the job is already finished."""

    code = "job_conflict"


class InvalidJob(JobError):
    """The training config cannot work (bad values, dataset missing or not allowed)."""

    code = "invalid_training_config"


class QueueUnavailable(JobError):
    code = "queue_unavailable"


class JobStoreUnavailable(QueueUnavailable):
    """The job records cannot be reached (Redis down): 503 like the queue it lives beside."""


@dataclass(frozen=True)
class Job:
    id: str
    status: JobStatus
    adapter_name: str
    adapter_version: int | None
    config: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]
    error: str | None
    cancel_requested: bool
    worker: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    lease_expires_at: float | None


JOB_FIELDS = tuple(Job.__dataclass_fields__)


def check_final(status: JobStatus) -> None:
    if status in ACTIVE:
        raise ValueError(f"finish() needs a final status, not {status}")


class JobStore(Protocol):
    """Job records. Writers that act for a worker pass `worker` and only touch jobs they own.

    Every method is one atomic step against the backend, safe from any thread or process.
    """

    # ---- API side ------------------------------------------------------------------------
    def create(self, *, adapter_name: str, config: dict[str, Any]) -> Job:
        """Record a queued job; JobConflict while another active job trains the same name."""
        ...

    def get(self, job_id: str) -> Job:
        """The record, or JobNotFound."""
        ...

    def list(self, *, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        """Newest first."""
        ...

    def delete(self, job_id: str) -> None:
        """Remove a queued record that could not be enqueued (created a moment ago)."""
        ...

    def request_cancel(self, job_id: str) -> Job:
        """Queued -> cancelled now; running -> flag set, the worker stops at its next step.

        Cancelling a cancelled job is a no-op; a succeeded or failed job raises JobConflict.
        """
        ...

    def expire_leases(self, *, now: float | None = None) -> int:
        """Mark running jobs whose worker stopped heartbeating as failed; return how many."""
        ...

    # ---- worker side ---------------------------------------------------------------------
    def claim(self, job_id: str, *, worker: str, lease_s: float) -> Job | None:
        """Queued -> running for `worker`; None when the job was cancelled or taken already."""
        ...

    def heartbeat(self, job_id: str, *, worker: str, lease_s: float) -> bool:
        """Renew the lease; False when the job is no longer this worker's (stop working)."""
        ...

    def set_progress(self, job_id: str, *, worker: str, progress: dict[str, Any]) -> bool: ...

    def should_stop(self, job_id: str, *, worker: str) -> bool:
        """True once a cancel was requested or the job is no longer running for `worker`."""
        ...

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
        ...

    def requeue(self, job_id: str, *, worker: str) -> bool:
        """Running -> queued (the worker is shutting down); the caller enqueues it again.

        False when the job is not this worker's or a cancel was requested.
        """
        ...

    def close(self) -> None: ...
