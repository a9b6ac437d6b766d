"""Which adapters are resident in the engine: lazy load by name, LRU under a count/byte budget.

Every method that loads or unloads must run on the inference thread (the engine's owner);
`snapshot` and `last_used` may be read from any thread. A resident adapter is tied to the
manifest file it was loaded from (inode + mtime): when the store replaces the adapter, the
next `ensure` sees a different file, re-reads the version and reloads. A load is kept only if
the manifest file is still the same after the weights were read: a replace or delete that lands
while the library reads the files (a mixture of two versions, or half a folder) is detected, and
the load is retried on the new version (or answers not found).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from adapters_store import AdapterNotFound, AdapterStore, InvalidAdapter, check_base
from adapters_store.format import MANIFEST, Manifest
from app.metrics import Metrics
from app.serving.engine import Engine
from app.serving.errors import ServiceError

log = logging.getLogger(__name__)
LOAD_ATTEMPTS = 3  # a load that races a replace is retried on the new version this often


class AdapterChanging(ServiceError):
    """The adapter was replaced during every load attempt: the client may retry at once."""

    code = "unavailable"
    retry_after_s = 1


class CacheFull(ServiceError):
    """Every resident adapter is pinned by the batch being run: run it first, then retry."""

    code = "cache_full"


@dataclass(frozen=True)
class Resident:
    name: str
    version: int
    labels: dict[int, str]
    nbytes: int
    stamp: tuple[int, int]
    loaded_at: float


def _stamp(store: AdapterStore, name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(store.root / name / MANIFEST)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_mtime_ns)


class AdapterCache:
    def __init__(
        self,
        *,
        engine: Engine,
        store: AdapterStore,
        max_count: int,
        max_bytes: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._resident: OrderedDict[str, Resident] = OrderedDict()  # LRU first
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()

    # ---- reading (any thread) ------------------------------------------------------------
    def snapshot(self) -> dict[str, Resident]:
        with self._lock:
            return dict(self._resident)

    def last_used(self, name: str) -> float | None:
        return self._last_used.get(name)

    @property
    def resident_bytes(self) -> int:
        with self._lock:
            return sum(r.nbytes for r in self._resident.values())

    # ---- loading (inference thread) ------------------------------------------------------
    def ensure(self, name: str, *, pinned: Collection[str] = ()) -> Resident:
        """The resident adapter `name`, loading (or reloading a new version) when needed.

        Raises AdapterNotFound, InvalidAdapter / BaseModelMismatch from the store, or
        CacheFull when making room would evict an adapter in `pinned`.
        """
        stamp = _stamp(self.store, name)
        if stamp is None:
            self.unload(name)
            raise AdapterNotFound(f"adapter {name!r} not found")
        with self._lock:
            current = self._resident.get(name)
            if current is not None and current.stamp == stamp:
                self._resident.move_to_end(name)
                self._last_used[name] = time.time()
                return current
        return self._load(name, stamp, pinned=pinned)

    def unload(self, name: str) -> bool:
        """Evict `name` (idempotent); True when it was resident."""
        with self._lock:
            resident = self._resident.pop(name, None)
        removed = self.engine.unload_adapter(name)
        if resident is not None and self.metrics:
            self.metrics.adapter_evictions.inc()
            self.metrics.resident_adapters.set(len(self._resident))
        return resident is not None or removed

    def _load(self, name: str, stamp: tuple[int, int], *, pinned: Collection[str]) -> Resident:
        for _ in range(LOAD_ATTEMPTS):
            stored = self.store.get(name)  # read after `stamp` was taken
            check_base(stored.manifest.base_model, self.engine.base_ref)
            with self._lock:
                current = self._resident.get(name)
            if current is not None and current.version == stored.manifest.version:
                # Same version, new file (e.g. rewritten metadata): keep the loaded weights.
                return self._touch(current, stamp)
            self._make_room(name, stored.manifest.size_bytes, pinned=pinned)
            started = time.perf_counter()
            nbytes = self._read_weights(name, stored.path, stamp)
            after = _stamp(self.store, name)
            if nbytes is not None and after == stamp:
                return self._record(name, stored.manifest, nbytes, stamp, started)
            self.unload(name)  # the folder changed under the library: maybe two versions
            if after is None:
                raise AdapterNotFound(f"adapter {name!r} not found")
            stamp = after
        raise AdapterChanging(f"adapter {name!r} is being replaced; retry")

    def _read_weights(self, name: str, path: Path, stamp: tuple[int, int]) -> int | None:
        """engine.load_adapter; None when it failed because the folder changed meanwhile."""
        try:
            return self.engine.load_adapter(name, path)
        except InvalidAdapter:
            if _stamp(self.store, name) == stamp:
                raise  # the files really are bad
            return None

    def _record(
        self, name: str, manifest: Manifest, nbytes: int, stamp: tuple[int, int], started: float
    ) -> Resident:
        elapsed = time.perf_counter() - started
        resident = Resident(
            name=name,
            version=manifest.version,
            labels=dict(manifest.labels),
            nbytes=nbytes,
            stamp=stamp,
            loaded_at=time.time(),
        )
        with self._lock:
            self._resident[name] = resident
            self._last_used[name] = time.time()
        if self.metrics:
            self.metrics.adapter_loads.inc()
            self.metrics.adapter_load_seconds.observe(elapsed)
            self.metrics.resident_adapters.set(len(self._resident))
        log.info(
            "loaded adapter %s v%d (%d bytes, %.1f ms)",
            name,
            resident.version,
            nbytes,
            elapsed * 1000,
        )
        return resident

    def _touch(self, current: Resident, stamp: tuple[int, int]) -> Resident:
        updated = Resident(**{**current.__dict__, "stamp": stamp})
        with self._lock:
            self._resident[current.name] = updated
            self._resident.move_to_end(current.name)
            self._last_used[current.name] = time.time()
        return updated

    def _make_room(self, name: str, incoming: int, *, pinned: Collection[str]) -> None:
        """Evict least-recently-used adapters (never pinned ones) until `name` fits."""
        while True:
            with self._lock:
                others = [r for r in self._resident.values() if r.name != name]
                used = sum(r.nbytes for r in others)
                if len(others) < self.max_count and (
                    used + incoming <= self.max_bytes or not others
                ):
                    return
                victim = next((r.name for r in others if r.name not in pinned), None)
            if victim is None:
                raise CacheFull(
                    f"cannot make room for adapter {name!r}: all resident adapters are in use"
                )
            self.unload(victim)
