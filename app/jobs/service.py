"""Training jobs as a service for the API: validate, record, enqueue, read, cancel. No HTTP.

The API validates a job with the training module's own `TrainConfig` and `validate_config`
(the same checks the worker will meet), so a config that cannot work is refused with a reason
before it is queued. Local datasets are confined to the data roots: `APP_DATA_ROOTS` when set,
else `<APP_DATA_DIR>/datasets` only. A relative path is taken inside the first root; symlinks
are resolved before the check, and the job records the resolved absolute path, so the worker
reads exactly the file that was checked.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from adapters_store import AdapterStore
from app.config import BackendView, Settings, StoreView
from app.jobs.factory import open_records
from app.jobs.queue import JobQueue, open_huey
from app.jobs.records import (
    InvalidJob,
    Job,
    JobConflict,
    JobStatus,
    JobStore,
    JobStoreUnavailable,
    QueueUnavailable,
)
from training.config import TrainConfig

log = logging.getLogger("app.jobs")
CONFLICT_CODES = ("adapter_exists",)


def data_roots(settings: Settings) -> list[Path]:
    """The directories local datasets must lie in (resolved)."""
    roots = settings.data_roots or [settings.data_dir / "datasets"]
    return [Path(r).expanduser().resolve() for r in roots]


class JobService:
    def __init__(
        self, *, settings: Settings, jobs: JobStore, queue: JobQueue, store: AdapterStore
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.queue = queue
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings, *, store: AdapterStore | None = None) -> JobService:
        if not settings.data_roots:
            (settings.data_dir / "datasets").mkdir(parents=True, exist_ok=True)
        return cls(
            settings=settings,
            jobs=open_records(BackendView.of(settings)),
            queue=JobQueue(open_huey(BackendView.of(settings))),
            store=store or StoreView.of(settings).open(),
        )

    def close(self) -> None:
        self.queue.close()
        self.jobs.close()

    # ---- commands ------------------------------------------------------------------------
    def submit(self, *, config: TrainConfig) -> Job:
        """Validate, record as queued, enqueue. InvalidJob (422) / JobConflict (409)."""
        checked = self.check(config=config)
        job = self.jobs.create(adapter_name=checked.name, config=checked.model_dump(mode="json"))
        try:
            self.queue.enqueue(job.id)
        except Exception as exc:
            log.error("could not enqueue job %s: %s", job.id, exc)
            with contextlib.suppress(JobStoreUnavailable):  # the same Redis may be down
                self.jobs.delete(job.id)
            raise QueueUnavailable("the job queue is unavailable; try again later") from None
        log.info("job %s queued: adapter %r", job.id, checked.name)
        return job

    def cancel(self, job_id: str) -> Job:
        return self.jobs.request_cancel(job_id)

    # ---- queries -------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        self.jobs.expire_leases()
        return self.jobs.get(job_id)

    def list(self, *, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        self.jobs.expire_leases()
        return self.jobs.list(status=status, limit=limit)

    # ---- validation ----------------------------------------------------------------------
    def check(self, *, config: TrainConfig) -> TrainConfig:
        """The config the worker will run (server's base model, resolved paths), or raise."""
        given = config.model_fields_set
        if "base_model" in given and config.base_model != self.settings.base_model:
            raise InvalidJob(
                f"jobs train on this server's base model ({self.settings.base_model}); "
                "leave base_model out"
            )
        if config.method != "adapter" or config.full_output_dir:
            raise InvalidJob("the job API trains adapters only (method 'adapter')")
        roots = data_roots(self.settings)
        try:
            return self._checked_paths(config, roots)
        except (OSError, ValueError):  # NUL bytes, names too long, ...: not a usable path
            raise InvalidJob("dataset or eval_split is not a usable path") from None

    def _checked_paths(self, config: TrainConfig, roots: list[Path]) -> TrainConfig:
        from training.errors import TrainingError
        from training.trainer import validate_config

        update: dict[str, Any] = {
            "base_model": self.settings.base_model,
            "dataset": self._dataset(config.dataset, roots),
        }
        if config.eval_split and _is_file_name(config.eval_split):
            update["eval_split"] = self._local_path(config.eval_split, roots)
        checked = config.model_copy(update=update)
        try:
            validate_config(
                checked,
                data_roots=roots,
                store=self.store,
                allow_hub=self.settings.allow_hub_datasets,
            )
        except TrainingError as exc:
            error = JobConflict if exc.code in CONFLICT_CODES else InvalidJob
            raise error(exc.message, code=exc.code) from None
        return checked

    def _dataset(self, dataset: str, roots: list[Path]) -> str:
        from training.data import looks_local

        if looks_local(dataset):
            return self._local_path(dataset, roots)
        if not self.settings.allow_hub_datasets:
            raise InvalidJob(
                f"{dataset!r} is not a local file, and hub datasets are disabled on this "
                "server; put the file under a data root (GET /datasets lists the files)",
                code="dataset_forbidden",
            )
        return dataset

    @staticmethod
    def _local_path(value: str, roots: list[Path]) -> str:
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = roots[0] / path
        resolved = path.resolve()
        if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
            raise InvalidJob(  # the roots unnamed: a key limited to some adapters sees none
                f"dataset path {value} is outside the allowed data roots",
                code="dataset_forbidden",
            )
        if not resolved.exists():
            raise InvalidJob(f"dataset file not found: {value}", code="dataset_not_found")
        return str(resolved)


def _is_file_name(value: str) -> bool:
    return Path(value).suffix.lower() in (".jsonl", ".json", ".csv", ".parquet")
