"""The one bootstrap: the serving stack and the job service, built from settings.

Every process that serves builds its parts here: the API (`app.main` lifespan, `python -m
app`), the Ray replicas (`app.cluster.replica`). The store is opened by `StoreView.open`
(app.config.views; also the worker's and the ingress's), the base model loaded by `load_engine`; the
Redis-or-SQLite choice is made once, in `app.config.views.BackendView`, and the job records
(`app.jobs.factory`), the job queue (`app.jobs.queue`) and the per-key limiter
(`build_limiter`) look their backend up by its kind. No HTTP here.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from huey import Huey

from adapters_store import AdapterStore
from app.config import BackendView, BatchingView, EngineView, Settings, StoreView, WorkerView
from app.jobs.factory import open_records
from app.jobs.queue import open_huey
from app.jobs.records import JobStore
from app.jobs.runner import JobRunner
from app.jobs.service import JobService
from app.metrics import Metrics
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher, Limits
from app.serving.engine import Engine

log = logging.getLogger(__name__)


def load_engine(view: EngineView) -> Engine:
    """The base model, loaded once (slow: call it off the event loop)."""
    return Engine.load(
        base_model=view.base_model,
        device=view.device,
        dtype=view.dtype,
        max_length=view.max_length,
        threads=view.torch_threads,
        onepass=view.onepass,
    )


def build_limits(view: BatchingView, engine: Engine) -> Limits:
    overhead = view.split_overhead_tokens
    if overhead is None:  # padding is cheap next to a forward's fixed cost on a GPU
        overhead = 4096 if engine.device.type == "cuda" else 32
    return Limits(
        max_batch_size=view.max_batch_size,
        max_batch_tokens=view.max_batch_tokens,
        max_wait_s=view.max_wait_ms / 1000,
        max_queue=view.max_queue,
        timeout_s=view.request_timeout_s,
        split_overhead_tokens=overhead,
        calibrate=view.pass_cost_calibration,
        calibration_budget_s=view.pass_cost_budget_s,
        learn_costs=view.pass_cost_learning,
        slice_slowdown=view.fair_slice_slowdown,
        preempt=view.fair_preempt,
    )


def device_budget(view: BatchingView, engine: Engine) -> int:
    """The device tier's bytes: the setting, else a quarter of the accelerator memory left
    free after the model loaded, else (CPU) 2 GiB."""
    if view.max_resident_bytes is not None:
        return view.max_resident_bytes
    if engine.device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(engine.device)
        return max(free // 4, 64 * 1024**2)
    return 2 * 1024**3


def build_cache(
    view: BatchingView, engine: Engine, store: AdapterStore, metrics: Metrics | None
) -> AdapterCache:
    return AdapterCache(
        engine=engine,
        store=store,
        max_count=view.max_resident_adapters,
        max_bytes=device_budget(view, engine),
        host_bytes=view.host_cache_bytes,
        slots_per_key=view.slots_per_key or view.max_batch_size,
        metrics=metrics,
    )


@dataclass(frozen=True)
class Serving:
    """One process's serving stack (the batcher is started by its owner, on its loop)."""

    store: AdapterStore
    cache: AdapterCache
    batcher: Batcher


def build_serving(
    settings: Settings,
    engine: Engine,
    metrics: Metrics | None,
    *,
    store: AdapterStore | None = None,
) -> Serving:
    """Store (opened here unless given), adapter tiers and batcher around a loaded engine."""
    store = store or StoreView.of(settings).open()
    batching = BatchingView.of(settings)
    cache = build_cache(batching, engine, store, metrics)
    limits = build_limits(batching, engine)
    batcher = Batcher(engine=engine, cache=cache, store=store, limits=limits, metrics=metrics)
    return Serving(store=store, cache=cache, batcher=batcher)


def prepare_store(store: AdapterStore) -> None:
    """At an API start: drop scratch folders left by a crash, refresh the listing index beside
    the start-up (a store of an older version has no index yet, and a rebuild reads every
    manifest; GET /adapters waits for it, serving not)."""
    removed = store.cleanup()
    if removed:  # no store path in the logs (APP_STORE_DIR says where it is)
        log.info("removed %d scratch folder(s) left in the adapter store", removed)
    threading.Thread(target=refresh_index, args=(store,), name="listing-index", daemon=True).start()


def refresh_index(store: AdapterStore) -> None:
    """Bring the store's listing index up to date (a full scan; built when missing)."""
    try:
        store.index.refresh()
    except (OSError, sqlite3.Error) as exc:  # GET /adapters retries on its own
        reason = getattr(exc, "strerror", None) or type(exc).__name__  # no path: not str(exc)
        log.warning("could not bring the store's listing index up to date: %s", reason)


def worker_parts(
    settings: Settings,
) -> tuple[Huey, Callable[[threading.Event], JobRunner], WorkerView]:
    """A training worker's queue (the chosen backend) and how to make its job runner."""

    def make_runner(stop_event: threading.Event) -> JobRunner:
        return JobRunner(settings, stop_event=stop_event)

    return open_huey(BackendView.of(settings)), make_runner, WorkerView.of(settings)


def open_job_store(settings: Settings) -> JobStore:
    """The job records for these settings: Redis when `redis_url` is set, else SQLite."""
    return open_records(BackendView.of(settings))


def build_huey(settings: Settings) -> Huey:
    """The job queue for these settings: Redis when `redis_url` is set, else SQLite."""
    return open_huey(BackendView.of(settings))


def queue_db_path(settings: Settings) -> Path:
    return BackendView.of(settings).sqlite_path("queue")


def open_job_service(settings: Settings, store: AdapterStore) -> JobService:
    """Job records and queue of the chosen backend, validating against `store`."""
    return JobService.from_settings(settings, store=store)
