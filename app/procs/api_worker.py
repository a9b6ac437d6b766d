"""An API process: `python -m app.procs.api_worker RUNTIME_DIR INDEX PORT` (the supervisor
starts N of them). uvicorn serves the same FastAPI app as one process (same routers, middleware,
auth, tenancy, quotas, rendering) on its own SO_REUSEPORT socket on APP_HOST:PORT (the kernel
spreads connections over the processes; app.procs.supervisor says why); the engine is reached
through `EngineClient` (state.batcher), its residency through `EngineResidency` (state.cache),
its base model as `EngineInfo` (state.engine, once the engine's first heartbeat arrived), and
with the SQLite backend the per-key limiter the engine hosts (`EngineLimiter`; the Redis one is
shared already). Until the engine beats, /readyz and the inference routes answer 503. SIGTERM:
uvicorn stops accepting, finishes the requests in flight, then the lifespan closes the client.
Startup work done once (store clean-up and index, key file, training worker) is the
supervisor's, not this process's."""

from __future__ import annotations

import asyncio
import logging.config
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from app.api.factory import build_http_app
from app.bootstrap import open_job_service
from app.config import BackendView, Settings, StoreView
from app.main import ROUTERS
from app.procs.engine_client import EngineClient
from app.procs.stand_ins import EngineLimiter, EngineResidency
from app.procs.titles import set_title, stop_with_parent

log = logging.getLogger("app.procs.api")
PID_HEADER = "x-served-by"  # the answering API process's pid, on every response


def create_api_app(settings: Settings, client: EngineClient, *, shared_metrics: Path | None):
    """The app of one API process (`client` is started and closed by its lifespan)."""
    sqlite = BackendView.of(settings).kind == "sqlite"
    app = build_http_app(
        settings,
        ROUTERS,
        keyring=settings.keyring(),  # checked (and warned about) once, by the supervisor
        state={"engine": None, "tracing": None, "store": None, "cache": None, "batcher": None},
        limiter=EngineLimiter(client) if sqlite else None,
        title="adapter-serve",
        summary="Many text-classification adapters on one frozen base model",
        lifespan=_lifespan,
    )
    app.state.client = client
    client.metrics = app.state.metrics
    if shared_metrics is not None:
        app.state.metrics.shared_dir = str(shared_metrics)
    return app


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    state = app.state
    client: EngineClient = state.client
    client.on_info = lambda info: setattr(state, "engine", info)
    state.store = StoreView.of(state.settings).open()
    state.job_service = open_job_service(state.settings, state.store)
    await client.start()
    state.cache, state.batcher = EngineResidency(client), client
    try:
        yield
    finally:
        state.batcher = None
        await client.close()
        state.job_service.close()
        if state.tracing is not None:
            await asyncio.to_thread(state.tracing.shutdown)


class ServedBy:
    """Pure ASGI: every response names the API process that answered (tests, debugging)."""

    def __init__(self, app: Any, pid: int) -> None:
        self.app, self.value = app, str(pid).encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-served-by", self.value)]
            await send(message)

        await self.app(scope, receive, sending)


def main(argv: list[str]) -> int:
    import os

    import uvicorn

    from app.procs.supervisor import reuseport_socket

    runtime, index, port = Path(argv[0]), int(argv[1]), int(argv[2])
    set_title(f"adapter-serve: api {index}")
    stop_with_parent()
    settings = Settings()
    from app.observability.logs import logging_config

    log_config = logging_config(settings.log_format, settings.log_level)
    logging.config.dictConfig(log_config)
    client = EngineClient(
        runtime, base_model=settings.base_model, timeout_s=settings.request_timeout_s
    )
    app = create_api_app(settings, client, shared_metrics=runtime / "metrics")
    config = uvicorn.Config(
        ServedBy(app, os.getpid()),
        log_level=settings.log_level,
        log_config=log_config,
        access_log=False,  # the request observer writes the access line (APP_ACCESS_LOG)
        lifespan="on",
    )
    # Bound, not listening: uvicorn listens after the lifespan started (a restarted process
    # takes no connections of the port's group before it can answer them).
    uvicorn.Server(config).run(sockets=[reuseport_socket(settings.host, port)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
