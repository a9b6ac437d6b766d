"""One model replica on Ray Serve: our engine, adapter cache and batcher inside a Serve actor.

A replica is the single-host serving stack (`app.serving`) as `app.bootstrap` builds it: one base
model, adapters activated into slots under the same byte budgets (device and host tiers,
`app.serving.adapter_cache`), dynamic batching of every adapter it holds (so it keeps
mixed-adapter batching). On top, the adapters it holds are registered with Ray's model
multiplexing (`serve.multiplexed`): the router then sends a request for adapter X to a replica
that already holds X. By default the byte budget decides residency and Ray's bound is only the
count cap (`APP_MAX_RESIDENT_ADAPTERS`); an adapter the cache demoted to host RAM comes back in
a fraction of a millisecond when the router still sends it here. With `max_adapters` set, it is
both the cache's count cap and Ray's bound, and when Ray's multiplexer evicts an adapter the
replica unloads it from the cache too.

Replies are plain dicts (the wire format between ingress and replicas); domain errors travel as
`{"error": {"code", "message", "retry_after_s"}}`, never as exceptions, so that the ingress
answers them with the same status as the one-host server. Versions work as on one host: every
batch checks the adapter's manifest in the shared store, so a replaced adapter is served at its
new version from the next batch on.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ray import serve

from adapters_store import StoreError
from app.bootstrap import build_serving, load_engine
from app.config import EngineView, Settings
from app.metrics import Metrics
from app.serving.batcher import Timing
from app.serving.errors import ServiceError

log = logging.getLogger(__name__)


class AdapterHold:
    """What Ray's multiplexer keeps per adapter. Ray awaits `hold.__del__()` when it evicts the
    adapter (an instance attribute, so that garbage collection never calls it): we unload."""

    def __init__(self, name: str, release: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self.__del__ = release


def error_payload(exc: BaseException) -> dict[str, Any]:
    """A domain error as data: code, message and the retry hint, as the HTTP layer needs them."""
    return {
        "code": getattr(exc, "code", "error"),
        "message": getattr(exc, "message", None) or str(exc),
        "retry_after_s": getattr(exc, "retry_after_s", None),
    }


def _replica_id() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a Serve replica (a plain test object)
        return f"local-{os.getpid()}"


class AdapterReplica:
    """The replica's callable. `settings` are `app.config.Settings` fields (plus APP_* env)."""

    def __init__(self, settings: dict[str, Any], max_adapters: int | None = None) -> None:
        overrides = {} if max_adapters is None else {"max_resident_adapters": max_adapters}
        s = Settings(**{**settings, **overrides})
        self.settings = s
        self.metrics = Metrics()
        self.engine = load_engine(EngineView.of(s))
        serving = build_serving(s, self.engine, self.metrics)
        self.store, self.cache, self.batcher = serving.store, serving.cache, serving.batcher
        self.batcher.warm_up()  # Ray routes to a replica once this returns: warm by then

        # Built here (not as a class decorator) so that the bound is the configured budget;
        # a plain function, since Ray keeps its per-replica state as an attribute on it.
        async def load(name: str) -> AdapterHold:
            return await self._load(name)

        bound = s.max_resident_adapters
        self.hold = serve.multiplexed(max_num_models_per_replica=bound)(load)
        self.replica_id = _replica_id()
        log.info("replica %s: %s on %s", self.replica_id, s.base_model, self.engine.device)

    async def _ready(self) -> None:
        if not self.batcher.running:  # the first call runs on the replica's event loop
            await self.batcher.start()

    async def _load(self, name: str) -> AdapterHold:
        await self.cache.prefetch([name])  # off the inference thread; 404 for unknown names
        await self.batcher.run_exclusive(self.cache.ensure, name)

        async def release() -> None:
            await self.batcher.run_exclusive(self.cache.unload, name)

        return AdapterHold(name, release)

    async def classify(
        self, texts: list[str], truncation: bool = True, adapter: str | None = None
    ) -> dict[str, Any]:
        """Classify `texts` with one adapter: `adapter`, else the request's multiplexed id."""
        await self._ready()
        name = adapter or serve.get_multiplexed_model_id()
        timing = Timing()
        reply: dict[str, Any] = {"replica": self.replica_id, "adapter": name}
        try:
            await self.hold(name)
            result = await self.batcher.classify(
                texts=texts, adapters=[name], truncation=truncation, timing=timing
            )
        except (StoreError, ServiceError) as exc:
            reply["error"] = error_payload(exc)
        else:
            part = result.results[0]
            reply.update(
                version=part.version,
                labels=part.labels,
                logits=part.logits,
                task=part.task,
                thresholds=part.thresholds,
            )
        reply.update(queue_ms=timing.queue_ms, inference_ms=timing.inference_ms)
        reply["resident"] = self.residency()
        return reply

    def residency(self) -> dict[str, dict[str, Any]]:
        """Resident adapters: name -> version, size, load and last-use times."""
        return {
            name: {
                "version": r.version,
                "labels": r.labels,
                "nbytes": r.nbytes,
                "loaded_at": r.loaded_at,
                "last_used": self.cache.last_used(name),
            }
            for name, r in self.cache.snapshot().items()
        }

    def _count(self, metric: str, **labels: str) -> int:
        return int(self.metrics.registry.get_sample_value(metric, labels or None) or 0)

    async def stats(self) -> dict[str, Any]:
        """This replica's counters (read by tests, the benchmark and the ingress)."""
        return {
            "replica": self.replica_id,
            "pid": os.getpid(),
            "adapter_loads": self._count("adapter_loads_total"),
            "adapter_evictions": self._count("adapter_evictions_total", tier="device"),
            "resident": self.residency(),
            "queued": self.batcher.queued,
            "time": time.time(),
        }

    async def describe(self) -> dict[str, Any]:
        """The base model as /readyz reports it."""
        engine = self.engine
        return {
            "base_model": engine.base_ref.id,
            "fingerprint": engine.base_ref.fingerprint,
            "device": str(engine.device),
            "dtype": str(engine.dtype).removeprefix("torch."),
            "max_length": engine.max_length,
        }

    async def metrics_text(self) -> str:
        """The replica's Prometheus exposition (its own registry)."""
        return self.metrics.render().decode()
