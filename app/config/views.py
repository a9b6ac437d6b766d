"""Frozen views of `app.config.Settings`, one per room: each room reads only its part.

Made with `View.of(settings)`; a view's fields are named as the settings they copy
(`APP_<FIELD>`). `BackendView` is where the one Redis-or-SQLite choice is made: every
Redis-or-SQLite pair (job records, job queue, limiter) looks its backend up by `kind`
(app/jobs/factory.py, app/jobs/queue.py, `build_limiter`). This module imports nothing of
the app (the settings are passed in), so any room may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from adapters_store import AdapterStore

SettingsLike = Any  # an app.config.Settings (not imported: config imports this module)


class _View:
    @classmethod
    def of(cls, settings: SettingsLike) -> Self:
        """The view of `settings`: each field copied from the setting of its name."""
        return cls(**{f.name: getattr(settings, f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class EngineView(_View):
    """What `Engine.load` reads: the base model and where it runs."""

    base_model: str
    device: str
    dtype: str
    max_length: int
    torch_threads: int | None
    onepass: bool = True


@dataclass(frozen=True)
class StoreView(_View):
    """The adapter store's directory (`adapters_dir`: APP_STORE_DIR or under APP_DATA_DIR)
    and its limits. `open()` is the one construction of the store: the API, the training
    worker, the Ray replicas and the Ray ingress all open it so, and agree on its limits
    (APP_MAX_ADAPTER_PARAM_BYTES, APP_KEEP_VERSIONS)."""

    adapters_dir: Path
    max_adapter_param_bytes: int
    keep_versions: int

    def open(self) -> AdapterStore:
        from adapters_store import AdapterStore  # the store's code loads with its first use

        return AdapterStore(
            self.adapters_dir,
            max_param_bytes=self.max_adapter_param_bytes,
            keep_versions=self.keep_versions,
        )


@dataclass(frozen=True)
class BackendView:
    """The one Redis-or-SQLite choice: `redis` when APP_REDIS_URL is set, else `sqlite` files
    in the data directory."""

    kind: Literal["redis", "sqlite"]
    redis_url: str | None
    data_dir: Path

    @classmethod
    def of(cls, settings: SettingsLike) -> BackendView:
        url = settings.redis_url
        return cls("redis" if url else "sqlite", url, settings.data_dir)

    def sqlite_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.sqlite3"


@dataclass(frozen=True)
class WorkerView(_View):
    """What a training worker's process loop reads."""

    job_lease_s: float
    worker_shutdown_s: float
    log_format: str


@dataclass(frozen=True)
class ObservabilityView(_View):
    """Logs, traces and metrics labels."""

    log_format: str
    log_level: str
    access_log: bool
    otlp_endpoint: str | None
    metrics_top_adapters: int


@dataclass(frozen=True)
class BatchingView(_View):
    """What the batcher's limits and the adapter tiers read (device-dependent defaults are
    filled by app/bootstrap.py once the engine is loaded)."""

    max_batch_size: int
    max_batch_tokens: int
    max_wait_ms: float
    max_queue: int
    request_timeout_s: float
    split_overhead_tokens: int | None
    pass_cost_calibration: bool
    pass_cost_budget_s: float
    pass_cost_learning: bool
    fair_slice_slowdown: float
    fair_preempt: bool
    max_resident_adapters: int
    max_resident_bytes: int | None
    host_cache_bytes: int
    slots_per_key: int | None


@dataclass(frozen=True)
class LimiterView:
    """What the per-key limiter's backend reads: the backend, and how long a hold lives."""

    backend: BackendView
    lease_s: float

    @classmethod
    def of(cls, settings: SettingsLike, *, margin_s: float) -> LimiterView:
        return cls(BackendView.of(settings), settings.request_timeout_s + margin_s)
