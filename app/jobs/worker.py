"""The training worker: a Huey consumer that runs queued training jobs.

`python -m app.worker` (app/worker.py: the parts built by app.bootstrap) runs one alone;
`python -m app` starts one as a child process beside the API (see `EmbeddedWorker`) unless
`APP_EMBEDDED_WORKER=false`.

- A job id comes off the queue; the worker claims the job record (queued -> running). A job
  cancelled while queued fails the claim and never starts.
- While training, a heartbeat thread renews the job's lease. A worker that dies (SIGKILL, OOM)
  stops renewing; once the lease expires the job is marked failed (by the API on its next read
  or by any worker), never silently re-run. The store writes atomically and every worker calls
  `store.cleanup()` at start, so a dead worker leaves no partial adapter.
- `should_stop` (checked by the trainer every step) is true once a cancel is requested, the
  lease is lost, or the worker is shutting down. Cancel -> `cancelled`, nothing stored;
  shutdown (SIGTERM) -> the job goes back to `queued` and onto the queue for the next worker.

With `APP_REDIS_URL` both the queue and the job records live in Redis, so workers may run on
other hosts; they share nothing else with the API but the adapter store directory (and the
dataset roots), which must then be one shared filesystem mounted at the same path everywhere.

The per-job work is `app.jobs.runner.JobRunner`; this module is the process around it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from huey import Huey

from app.jobs.queue import JobQueue
from app.jobs.runner import JobRunner

log = logging.getLogger("app.worker")
HEALTH_CHECK_S = 10.0


def run_consumer(
    huey: Huey,
    make_runner: Callable[[threading.Event], JobRunner],
    *,
    shutdown_s: float,
    parent_pid: int | None = None,
) -> None:
    """Consume training jobs until SIGTERM/SIGINT/SIGHUP or the parent process dies.

    The stop is graceful: a running job stops at its next step and is re-queued; a second
    signal stops at once (the job then fails when its lease expires).
    """
    consumer = huey.create_consumer(
        workers=1,  # one job at a time per process; run more processes for more
        worker_type="thread",
        periodic=False,
        shutdown_timeout=shutdown_s,
    )
    runner = make_runner(consumer.stop_flag)
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
    runner.close()
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
