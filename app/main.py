"""The application factory: `create_app(settings)`; the lifespan builds the serving stack."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from adapters_store import AdapterStore
from app.api import (
    adapters,
    classify,
    console,
    datasets,
    health,
    hf_inference,
    open_inference,
    train_jobs,
    versions,
)
from app.api.errors import install_error_handlers
from app.api.guard import install_middleware
from app.config import Settings
from app.jobs.service import JobService
from app.jobs.worker import start_embedded_worker, stop_embedded_worker
from app.metrics import Metrics
from app.observability.middleware import NATIVE_TELEMETRY_OFF
from app.observability.tracing import Tracing
from app.security import KeyRing, check_exposure
from app.serving.adapter_cache import AdapterCache
from app.serving.batcher import Batcher, Limits
from app.serving.engine import Engine

log = logging.getLogger(__name__)

# Every router of the service; add one here (e.g. train_jobs.router) to mount it.
ROUTERS: list[APIRouter] = [
    health.router,
    classify.router,
    versions.router,  # before adapters.router: /adapters/{name:path}/versions, aliases, split
    adapters.router,
    train_jobs.router,
    hf_inference.router,  # the Hugging Face Inference API (POST /models/{adapter})
    open_inference.router,  # the Open Inference Protocol (KServe v2, /v2/...)
    datasets.router,
    console.router,
]


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The FastAPI app. Pass `engine` to reuse a loaded base model (else the lifespan loads it),
    `tracing` to trace to a provider of your own (else APP_OTLP_ENDPOINT decides).

    Raises StartupRefused (a ValueError) for a keyless server on a non-loopback address unless
    APP_ALLOW_ANONYMOUS=true, ValueError for malformed keys and for APP_OTLP_ENDPOINT without
    the [otel] extra.
    """
    settings = settings or Settings()
    metrics = Metrics(top_adapters=settings.metrics_top_adapters)
    app = FastAPI(
        title="adapter-serve",
        version="0.1.0",
        summary="Many text-classification adapters on one frozen base model",
        lifespan=lifespan,
        telemetry=NATIVE_TELEMETRY_OFF,
    )
    state = app.state
    state.settings, state.metrics, state.engine = settings, metrics, engine
    state.tracing = tracing
    state.store = state.cache = state.batcher = None
    state.keyring = checked_keyring(settings)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_middleware(app, settings, state.keyring, metrics)
    return app


def checked_keyring(settings: Settings) -> KeyRing:
    """The keys; warnings for weak ones; StartupRefused for an unintended open server."""
    keyring = settings.keyring()
    for warning in keyring.warnings:
        log.warning("%s", warning)
    open_to_all = check_exposure(
        settings.host, keys=keyring.enabled, allow_anonymous=settings.allow_anonymous
    )
    if open_to_all:
        log.warning(
            "APP_ALLOW_ANONYMOUS=true: listening on %s WITHOUT API KEYS. Anyone who can reach "
            "this port can classify, download, upload, delete and train.",
            settings.host,
        )
    return keyring


def build_limits(settings: Settings, engine: Engine) -> Limits:
    overhead = settings.split_overhead_tokens
    if overhead is None:  # padding is cheap next to a forward's fixed cost on a GPU
        overhead = 4096 if engine.device.type == "cuda" else 32
    return Limits(
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=settings.max_batch_tokens,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
        timeout_s=settings.request_timeout_s,
        split_overhead_tokens=overhead,
        calibrate=settings.pass_cost_calibration,
        calibration_budget_s=settings.pass_cost_budget_s,
        learn_costs=settings.pass_cost_learning,
    )


def device_budget(settings: Settings, engine: Engine) -> int:
    """The device tier's bytes: the setting, else a quarter of the accelerator memory left
    free after the model loaded, else (CPU) 2 GiB."""
    if settings.max_resident_bytes is not None:
        return settings.max_resident_bytes
    if engine.device.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(engine.device)
        return max(free // 4, 64 * 1024**2)
    return 2 * 1024**3


def build_cache(
    settings: Settings, engine: Engine, store: AdapterStore, metrics: Metrics | None
) -> AdapterCache:
    return AdapterCache(
        engine=engine,
        store=store,
        max_count=settings.max_resident_adapters,
        max_bytes=device_budget(settings, engine),
        host_bytes=settings.host_cache_bytes,
        slots_per_key=settings.slots_per_key or settings.max_batch_size,
        metrics=metrics,
    )


def refresh_index(store: AdapterStore) -> None:
    """Bring the store's listing index up to date (a full scan; built when missing)."""
    try:
        store.index.refresh()
    except (OSError, sqlite3.Error) as exc:  # GET /adapters retries on its own
        reason = getattr(exc, "strerror", None) or type(exc).__name__  # no path: not str(exc)
        log.warning("could not bring the store's listing index up to date: %s", reason)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    settings: Settings = state.settings
    if state.engine is None:
        state.engine = await asyncio.to_thread(
            Engine.load,
            base_model=settings.base_model,
            device=settings.device,
            dtype=settings.dtype,
            max_length=settings.max_length,
            threads=settings.torch_threads,
        )
    engine: Engine = state.engine
    store = AdapterStore(
        settings.adapters_dir,
        max_param_bytes=settings.max_adapter_param_bytes,
        keep_versions=settings.keep_versions,
    )
    removed = store.cleanup()
    if removed:  # no store path in the logs (APP_STORE_DIR says where it is)
        log.info("removed %d scratch folder(s) left in the adapter store", removed)
    # Beside the start-up, not in it: a store of an older version has no index yet, and a
    # rebuild reads every manifest. GET /adapters waits for it (the store's lock); serving not.
    threading.Thread(target=refresh_index, args=(store,), name="listing-index", daemon=True).start()
    cache = build_cache(settings, engine, store, state.metrics)
    batcher = Batcher(
        engine=engine,
        cache=cache,
        store=store,
        limits=build_limits(settings, engine),
        metrics=state.metrics,
    )
    await batcher.start()
    state.store, state.cache, state.batcher = store, cache, batcher
    state.job_service = JobService.from_settings(settings, store=store)
    start_embedded_worker(state)
    log.info("serving base model %s on %s (%s)", engine.base_ref.id, engine.device, engine.dtype)
    try:
        yield
    finally:
        state.batcher = None
        await batcher.stop()
        state.job_service.close()
        await stop_embedded_worker(state)
        if state.tracing is not None:
            await asyncio.to_thread(state.tracing.shutdown)  # exports the spans still pending
