"""The training worker: a Huey consumer that runs queued training jobs.

`python -m app.worker` runs one alone; `python -m app` starts one as a child process beside the
API (see `EmbeddedWorker`) unless `APP_EMBEDDED_WORKER=false`.

- A job id comes off the queue; the worker claims the job record (queued -> running). A job
  cancelled while queued fails the claim and never starts.
- While training, a heartbeat thread renews the job's lease. A worker that dies (SIGKILL, OOM)
  stops renewing; once the lease expires the job is marked failed (by the API on its next read
  or by any worker), never silently re-run. The store writes atomically and every worker calls
  `store.cleanup()` at start, so a dead worker leaves no partial adapter.
- `should_stop` (checked by the trainer every step) is true once a cancel is requested, the
  lease is lost, or the worker is shutting down. Cancel -> `cancelled`, nothing stored;
  shutdown (SIGTERM) -> the job goes back to `queued` and onto the queue for the next worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from adapters_store import AdapterStore, StoreError
from app.config import Settings
from app.job_queue import JobQueue, build_huey, jobs_db_path
from app.jobs import JobStatus, JobStore

log = logging.getLogger("app.worker")
PROGRESS_INTERVAL_S = 0.2
HEALTH_CHECK_S = 10.0


class Heartbeat:
    """Renews a job's lease in a thread; `lost` is set when the job is no longer ours."""

    def __init__(self, jobs: JobStore, job_id: str, *, worker: str, lease_s: float) -> None:
        self._jobs, self._job_id, self._worker, self._lease = jobs, job_id, worker, lease_s
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        interval = max(self._lease / 4, 0.1)
        while not self._done.wait(interval):
            try:
                alive = self._jobs.heartbeat(self._job_id, worker=self._worker, lease_s=self._lease)
            except Exception:  # a busy database must not kill the job; retry next beat
                log.warning("heartbeat for job %s failed", self._job_id, exc_info=True)
                continue
            if not alive:
                self.lost.set()
                return


class ProgressWriter:
    """The trainer's progress callback: writes {step,total_steps,epoch,loss,eval} to the record,
    at most every PROGRESS_INTERVAL_S unless it carries new eval metrics."""

    def __init__(self, jobs: JobStore, job_id: str, *, worker: str) -> None:
        self._jobs, self._job_id, self._worker = jobs, job_id, worker
        self._last = 0.0
        self.state: dict[str, Any] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        update = _progress_fields(event)
        has_eval = bool(update.get("eval"))
        self.state.update({k: v for k, v in update.items() if v is not None})
        now = time.monotonic()
        if has_eval or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            self.flush()

    def flush(self) -> None:
        try:
            self._jobs.set_progress(self._job_id, worker=self._worker, progress=self.state)
        except Exception:
            log.warning("could not record progress of job %s", self._job_id, exc_info=True)


def _progress_fields(event: dict[str, Any]) -> dict[str, Any]:
    """The trainer's event, keeping `loss` the latest training loss (eval loss is in `eval`)."""
    fields = {k: event.get(k) for k in ("step", "total_steps", "epoch", "loss", "eval", "phase")}
    if fields["phase"] == "eval":
        fields["loss"] = None
    return fields


class JobRunner:
    """Runs one job id end to end inside a worker (the queue's handler)."""

    def __init__(self, settings: Settings, *, stop_event: threading.Event) -> None:
        self.settings = settings
        self.jobs = JobStore(jobs_db_path(settings))
        self.store = AdapterStore(settings.adapters_dir)
        self.stop_event = stop_event
        self.requeue: Callable[[str], None] | None = None

    def prepare(self) -> None:
        import training.trainer  # noqa: F401  (import once at start, not in the first job)

        removed = self.store.cleanup()
        expired = self.jobs.expire_leases()
        log.info(
            "worker ready: %d stale scratch dirs removed, %d dead jobs failed", removed, expired
        )

    def __call__(self, job_id: str) -> None:
        self.jobs.expire_leases()
        worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        lease = self.settings.job_lease_s
        job = self.jobs.claim(job_id, worker=worker, lease_s=lease)
        if job is None:
            log.info("job %s is not queued any more (cancelled?); skipped", job_id)
            return
        log.info("job %s: training adapter %r", job_id, job.adapter_name)
        with Heartbeat(self.jobs, job_id, worker=worker, lease_s=lease) as beat:
            try:
                self._train(job, worker=worker, beat=beat)
            except Exception as exc:  # never leave a claimed job running: record the failure
                log.exception("job %s failed", job_id)
                error = f"training failed unexpectedly ({type(exc).__name__}); see the worker log"
                self._finish(job_id, worker, JobStatus.FAILED, error=error)

    def _train(self, job: Any, *, worker: str, beat: Heartbeat) -> None:
        from training.config import TrainConfig
        from training.errors import TrainingCancelled, TrainingError
        from training.trainer import train_adapter

        progress = ProgressWriter(self.jobs, job.id, worker=worker)

        def should_stop() -> bool:
            return (
                self.stop_event.is_set()
                or beat.lost.is_set()
                or self.jobs.should_stop(job.id, worker=worker)
            )

        try:
            config = TrainConfig.model_validate(job.config)
            manifest = train_adapter(
                config,
                store=self.store,
                progress=progress,
                should_stop=should_stop,
                device=self.settings.device,
            )
        except TrainingCancelled:
            progress.flush()
            self._stopped(job.id, worker=worker)
        except (TrainingError, StoreError) as exc:
            self._finish(job.id, worker, JobStatus.FAILED, error=exc.message)
        else:
            progress.flush()
            self._finish(
                job.id,
                worker,
                JobStatus.SUCCEEDED,
                adapter_version=manifest.version,
                metrics=dict(manifest.metrics),
            )

    def _stopped(self, job_id: str, *, worker: str) -> None:
        if self.stop_event.is_set() and self.jobs.requeue(job_id, worker=worker):
            log.info("job %s: worker stopping, job put back on the queue", job_id)
            if self.requeue is not None:
                self.requeue(job_id)
            return
        if not self._finish(job_id, worker, JobStatus.CANCELLED):
            log.warning("job %s: stopped after losing its lease", job_id)

    def _finish(self, job_id: str, worker: str, status: JobStatus, **fields: Any) -> bool:
        done = self.jobs.finish(job_id, worker=worker, status=status, **fields)
        log.info("job %s: %s%s", job_id, status, "" if done else " (lease lost, not recorded)")
        return done


def run_consumer(settings: Settings, *, workers: int = 1, parent_pid: int | None = None) -> None:
    """Consume training jobs until SIGTERM/SIGINT/SIGHUP or the parent process dies.

    The stop is graceful: a running job stops at its next step and is re-queued; a second
    signal stops at once (the job then fails when its lease expires).
    """
    huey = build_huey(settings)
    consumer = huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=False,
        shutdown_timeout=settings.worker_shutdown_s,
    )
    runner = JobRunner(settings, stop_event=consumer.stop_flag)
    queue = JobQueue(huey, handler=runner)
    runner.requeue = queue.enqueue
    runner.prepare()
    stop = threading.Event()
    consumer.start()
    _on_stop_signals(stop)  # after start(): replaces the consumer's own handlers
    if parent_pid is not None:
        _watch_parent(parent_pid, stop)
    while not stop.wait(HEALTH_CHECK_S):
        consumer.check_worker_health()
    log.info("stopping: a running job stops at its next step and goes back to the queue")
    consumer.stop(graceful=True)
    queue.close()
    log.info("worker stopped")


def _on_stop_signals(stop: threading.Event) -> None:
    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: huey stops without waiting
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, handle)


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """Stop gracefully when the process that started us is gone."""

    def watch() -> None:
        while os.getppid() == parent_pid and not stop.is_set():
            time.sleep(1.0)
        if not stop.is_set():
            log.warning("parent process %d is gone; stopping", parent_pid)
            stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class EmbeddedWorker:
    """A `python -m app.worker` child beside the API, stopped (gracefully) with it."""

    def __init__(self, *, stop_timeout_s: float = 30.0) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._stop_timeout = stop_timeout_s

    def start(self) -> None:
        cmd = [sys.executable, "-m", "app.worker", "--parent-pid", str(os.getpid())]
        # A new session: a terminal's Ctrl-C reaches only the API, which then stops us cleanly.
        self._proc = subprocess.Popen(cmd, start_new_session=True)
        log.info("embedded worker started (pid %d)", self._proc.pid)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=self._stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded worker did not stop in %.0fs; killing it", self._stop_timeout)
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_embedded_worker(app_state: Any) -> None:
    """Lifespan hook: start `app_state.embedded_worker` (set by `python -m app`), if any."""
    worker = getattr(app_state, "embedded_worker", None)
    if worker is not None:
        worker.start()


async def stop_embedded_worker(app_state: Any) -> None:
    """Lifespan hook: stop it gracefully (its running job is re-queued) before the API exits."""
    worker = getattr(app_state, "embedded_worker", None)
    if worker is not None:
        await asyncio.to_thread(worker.stop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.worker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--workers", type=int, default=1, help="jobs run at once (default 1)")
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
    except Exception as exc:  # pydantic ValidationError: one clear line, no traceback
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    run_consumer(settings, workers=args.workers, parent_pid=args.parent_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
