"""The application factory: `create_app(settings)`; the lifespan builds the serving stack."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from app.api import (
    adapters,
    classify,
    hf_inference,
    open_inference,
    pages,
    train_jobs,
    versions,
)
from app.api.factory import build_http_app
from app.bootstrap import (
    build_serving,
    load_engine,
    open_job_service,
    prepare_store,
)
from app.config import EngineView, Settings, StoreView
from app.jobs.worker import start_embedded_worker, stop_embedded_worker
from app.observability.tracing import Tracing
from app.security import KeyRing, check_exposure
from app.serving.engine import Engine

log = logging.getLogger(__name__)

# Every router of the service; add one here (e.g. train_jobs.router) to mount it.
ROUTERS: list[APIRouter] = [
    pages.router,
    classify.router,
    versions.router,  # before adapters.router: /adapters/{name:path}/versions, aliases, split
    adapters.router,
    train_jobs.router,
    hf_inference.router,  # the Hugging Face Inference API (POST /models/{adapter})
    open_inference.router,  # the Open Inference Protocol (KServe v2, /v2/...)
    train_jobs.datasets_router,
    pages.console_router,
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
    return build_http_app(
        settings,
        ROUTERS,
        keyring=checked_keyring(settings),
        state={"engine": engine, "tracing": tracing, "store": None, "cache": None, "batcher": None},
        title="adapter-serve",
        summary="Many text-classification adapters on one frozen base model",
        lifespan=lifespan,
    )


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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state
    settings: Settings = state.settings
    if state.engine is None:
        state.engine = await asyncio.to_thread(load_engine, EngineView.of(settings))
    engine: Engine = state.engine
    store = StoreView.of(settings).open()
    prepare_store(store)
    serving = build_serving(settings, engine, state.metrics, store=store)
    batcher = serving.batcher
    await batcher.start()
    state.store, state.cache, state.batcher = serving.store, serving.cache, batcher
    state.job_service = open_job_service(settings, serving.store)
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
