"""Running one training job inside a worker: claim, heartbeat, progress, cancel, verdict.

`JobRunner` is the queue's handler in a worker process (see app.worker). It claims the job
record (queued -> running; a cancelled job fails the claim and never starts), renews the lease
from a heartbeat thread, runs `training.trainer.train_adapter` on the server's base model with
a progress callback that writes the job record and a `should_stop` that reads the cancel flag,
and records the outcome. Only this module imports `training.trainer` (lazily).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from adapters_store import StoreError
from app.config import BackendView, Settings, StoreView
from app.jobs.factory import open_records
from app.jobs.records import Job, JobStatus, JobStore, worker_id

log = logging.getLogger("app.worker")
PROGRESS_INTERVAL_S = 0.2


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
    at most every PROGRESS_INTERVAL_S unless it carries new eval metrics.

    It also keeps the learning curves in ``progress["curves"]`` (the shape of
    ``training.curves``: train loss points and eval points, added as the events arrive); the
    finished job's record gets the trainer's final curves (with the best step) instead.
    """

    def __init__(self, jobs: JobStore, job_id: str, *, worker: str) -> None:
        self._jobs, self._job_id, self._worker = jobs, job_id, worker
        self._last = 0.0
        self.state: dict[str, Any] = {}
        self.curves: dict[str, Any] = {"metric": "accuracy", "best_step": None,
                                       "stopped_early": False, "train": [], "eval": []}  # fmt: skip
        self.state["curves"] = self.curves

    def __call__(self, event: dict[str, Any]) -> None:
        update = _progress_fields(event)
        has_eval = bool(update.get("eval"))
        _add_point(self.curves, event)
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


def _add_point(curves: dict[str, Any], event: dict[str, Any]) -> None:
    from training.curves import MAX_TRAIN_POINTS, eval_point, train_point

    state = _EventState(event.get("step") or 0, event.get("epoch") or 0.0)
    if event.get("phase") == "train" and event.get("loss") is not None:
        curves["train"].append(train_point(state, event))
        if len(curves["train"]) > MAX_TRAIN_POINTS:
            curves["train"] = curves["train"][::2]
    elif event.get("phase") == "eval" and event.get("eval"):
        point = eval_point(state, event["eval"])
        if not curves["eval"] or curves["eval"][-1]["step"] != point["step"]:
            curves["eval"].append(point)
        # the metric that picks the best step (training.metrics.select_metric), as the
        # trainer's eval event names it; else read from the task's scores
        curves["metric"] = event.get("metric") or ("pearson" if "pearson" in point else (
            "f1_macro" if "f1_micro" in point else "accuracy"))  # fmt: skip


class _EventState:
    def __init__(self, step: int, epoch: float) -> None:
        self.global_step, self.epoch = step, epoch


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
        self.jobs = open_records(BackendView.of(settings))
        self.store = StoreView.of(settings).open()
        self.stop_event = stop_event
        self.requeue: Callable[[str], None] | None = None

    def prepare(self) -> None:
        removed = self.store.cleanup()
        expired = self.jobs.expire_leases()
        log.info(
            "worker ready: %d stale scratch dirs removed, %d dead jobs failed", removed, expired
        )

    def close(self) -> None:
        self.jobs.close()

    def __call__(self, job_id: str) -> None:
        self.jobs.expire_leases()
        worker = worker_id(uuid.uuid4().hex[:8])
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

    def _train(self, job: Job, *, worker: str, beat: Heartbeat) -> None:
        from app.jobs.service import data_roots
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
                data_roots=data_roots(self.settings),
                allow_hub=self.settings.allow_hub_datasets,
            )
        except TrainingCancelled:
            progress.flush()
            self._stopped(job.id, worker=worker)
        except (TrainingError, StoreError) as exc:
            self._finish(job.id, worker, JobStatus.FAILED, error=exc.message)
        else:
            curves = (manifest.training or {}).get("curves")
            if curves:
                progress.state["curves"] = curves  # with the best step and early-stop verdict
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
