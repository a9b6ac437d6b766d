"""The ingress side of the cluster, without HTTP: split a request by adapter, route, join.

`ClusterBatcher` stands where the one-host `Batcher` stands for the HTTP routes: same
`classify(texts=, adapters=, truncation=, timing=)` returning `Classified`, same domain errors.
Each adapter of a request becomes one call to the replica deployment, tagged with the adapter
name as Ray's multiplexed model id, so Ray's router sends it to a replica that already holds
that adapter (or, if none does, to the replica holding the fewest). The parts run concurrently
and are joined in the request's order; one failed part fails the request, as on one host.

Ray's router only knows what a replica holds once the replica has reported it: in a burst,
every request for a new adapter would go to a random replica and each replica would load every
adapter (measured: 128 loads for 400 concurrent requests over 8 adapters). So the first call for
an adapter goes alone, and first calls go one at a time (each then lands on the replica holding
the fewest adapters, as the router then knows them); the other calls for that adapter wait
until it has returned and the router has heard. The price: a burst of never-seen adapters is
placed one by one (about PROPAGATION_S each), once per adapter per ingress.

A replica that dies under a call (killed, node lost) is retried once: classification has no
side effects, and Serve starts a replacement. `ClusterView` stands where the `AdapterCache`
stands for `/adapters` reads: which adapters some replica holds, from the replies it sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from ray.exceptions import RayActorError

from adapters_store import AdapterNotFound, AdapterStore, BaseModelRef
from app.serving.adapter_cache import Resident
from app.serving.batcher import Timing
from app.serving.errors import InferenceFailed, ServiceError
from app.serving.passes import AdapterResult, Classified

log = logging.getLogger(__name__)
STALE_S = 60.0  # a replica silent this long no longer counts in the residency view
# After an adapter's first call returns, the others for it wait this long more: the replica
# reports what it loaded every 0.1 s and the controller forwards it to the router.
PROPAGATION_S = 0.3


class RemoteError(ServiceError):
    """A domain error raised on a replica, with its code and retry hint."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


def _unavailable(message: str) -> RemoteError:
    return RemoteError("unavailable", message, retry_after_s=1)


@dataclass(frozen=True)
class ReplicaInfo:
    """What /readyz reports about the base model, as one replica described it."""

    base_ref: BaseModelRef
    device: str
    dtype: str
    max_length: int


class ClusterView:
    """Which adapters the replicas hold, merged from their latest replies (a read-only view
    with the `snapshot` / `last_used` of `AdapterCache`)."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}

    def record(self, replica: str, resident: dict[str, dict[str, Any]]) -> None:
        self._seen[replica] = (time.monotonic(), resident)

    def _live(self) -> list[dict[str, dict[str, Any]]]:
        now = time.monotonic()
        return [res for seen, res in self._seen.values() if now - seen < STALE_S]

    def snapshot(self) -> dict[str, Resident]:
        merged: dict[str, Resident] = {}
        for resident in self._live():
            for name, r in resident.items():
                if name not in merged or r["version"] > merged[name].version:
                    merged[name] = Resident(
                        name=name,
                        version=r["version"],
                        labels=r["labels"],
                        nbytes=r["nbytes"],
                        stamp=(0, 0),
                        loaded_at=r["loaded_at"],
                    )
        return merged

    def last_used(self, name: str) -> float | None:
        times = [res[name]["last_used"] for res in self._live() if name in res]
        return max((t for t in times if t is not None), default=None)

    def replicas(self) -> list[str]:
        return sorted(self._seen)


class ClusterBatcher:
    def __init__(
        self,
        replicas: Any,
        *,
        timeout_s: float,
        store: AdapterStore | None = None,
        view: ClusterView | None = None,
    ) -> None:
        self.replicas = replicas  # a DeploymentHandle to the replica deployment
        self.timeout_s = timeout_s
        self.store = store  # when given, unknown names are answered here (404)
        self.view = view or ClusterView()
        self.info: ReplicaInfo | None = None
        self._placed: dict[str, asyncio.Event] = {}  # adapter -> its first call is done
        self._placing = asyncio.Lock()  # first calls, one at a time

    @property
    def running(self) -> bool:
        return self.info is not None

    async def connect(self, *, timeout_s: float = 600.0) -> ReplicaInfo:
        """Ask a replica for the base model it serves (waits while replicas start)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                d = await self.replicas.describe.remote()
                break
            except RayActorError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
        ref = BaseModelRef(id=d["base_model"], fingerprint=d["fingerprint"])
        self.info = ReplicaInfo(ref, d["device"], d["dtype"], d["max_length"])
        return self.info

    async def classify(
        self,
        *,
        texts: Sequence[str],
        adapters: Sequence[str],
        truncation: bool = True,
        timing: Timing | None = None,
        tenant: Hashable = None,  # fair shares are per replica batcher; not passed on (yet)
    ) -> Classified:
        timing = timing or Timing()
        for name in adapters:
            if self.store is not None and not self.store.exists(name):
                raise AdapterNotFound(f"adapter {name!r} not found")
        parts = [self._part(list(texts), name, truncation) for name in adapters]
        replies = await asyncio.gather(*parts)
        timing.queue_ms = max(r.get("queue_ms", 0.0) for r in replies)
        timing.inference_ms = max(r.get("inference_ms", 0.0) for r in replies)
        for reply in replies:
            if "error" in reply:
                e = reply["error"]
                raise RemoteError(e["code"], e["message"], e.get("retry_after_s"))
        results = [
            AdapterResult(
                r["adapter"], r["version"], r["labels"], r["logits"], r["task"], r["thresholds"]
            )
            for r in replies
        ]
        return Classified(results, queue_ms=timing.queue_ms, inference_ms=timing.inference_ms)

    async def _part(self, texts: list[str], name: str, truncation: bool) -> dict[str, Any]:
        placed = self._placed.get(name)
        if placed is not None:
            await placed.wait()
            return await self._call(texts, name, truncation)
        placed = self._placed[name] = asyncio.Event()
        try:
            async with self._placing:
                reply = await self._call(texts, name, truncation)
                await asyncio.sleep(PROPAGATION_S)
            return reply
        finally:
            placed.set()

    async def _call(self, texts: list[str], name: str, truncation: bool) -> dict[str, Any]:
        handle = self.replicas.options(multiplexed_model_id=name)
        for attempt in (1, 2):
            try:
                reply = await asyncio.wait_for(
                    handle.classify.remote(texts, truncation), self.timeout_s
                )
            except RayActorError as exc:  # the replica died under the call: retry once
                log.warning("replica lost during a call for %r (%s)", name, type(exc).__name__)
                if attempt == 2:
                    raise _unavailable("a replica was lost; retry shortly") from None
                continue
            except TimeoutError:
                raise RemoteError(
                    "timeout", f"no result within {self.timeout_s:g} s; the cluster is busy"
                ) from None
            except (ServiceError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("call to a replica failed for adapter %r", name)
                raise InferenceFailed("inference failed; see the replica log") from None
            self.view.record(reply["replica"], reply.get("resident", {}))
            return reply
        raise AssertionError("unreachable")
