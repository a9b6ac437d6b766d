"""Which adapters are in memory, in two tiers under byte budgets, and how one becomes usable.

- *host* tier: adapters decoded from the store (`app.serving.decode`) by a loader thread,
  tensors in host RAM in the serving dtype; LRU under `host_bytes`.
- *device* tier: adapters whose tensors are on the model's device; LRU under `max_bytes` (their
  tensors' bytes, not file sizes, + the one-pass stacks: `Engine.stack_bytes`) and `max_count`.
  Evicting one moves it back to the host tier: a later request costs a copy, not a disk read.
- *active*: a slot of its shape points at a device adapter's tensors (`app.serving.slots`), a
  pointer per tensor; adapters that fit no slot take the library path (`Engine.load_adapter`).

`prefetch` (event loop) reads a request's cold adapters on the loader thread, never the inference
one, before it is queued; `ensure`, `unload`, `rehearse` run on the inference thread.

A device adapter is tied to the manifest file it was read under (inode + mtime): when the store
replaces the adapter, the next `ensure` sees another file and reads the new version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from adapters_store import AdapterNotFound, AdapterStore
from app.metrics import Metrics
from app.serving.cache_metrics import CacheMetrics
from app.serving.decode import AdapterChanging, Decoded, decode, stamp_of
from app.serving.engine import Engine
from app.serving.host_tier import HostTier
from app.serving.residents import Device, Resident
from app.serving.slots import CacheFull, SlotPool

__all__ = ["AdapterCache", "AdapterChanging", "CacheFull", "Resident"]
log = logging.getLogger(__name__)


class AdapterCache:
    def __init__(
        self,
        *,
        engine: Engine,
        store: AdapterStore,
        max_count: int,
        max_bytes: int,
        host_bytes: int = 2 * 1024**3,
        slots_per_key: int = 64,
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._m = CacheMetrics(metrics)
        self.slots = SlotPool(engine, per_key=slots_per_key)
        self._device: OrderedDict[str, Device] = OrderedDict()  # LRU first
        dropped = lambda: self._m.count("adapter_evictions", "host")  # noqa: E731
        self._host = HostTier(host_bytes, on_drop=dropped)
        self._device_used = 0  # bytes
        self._inflight: dict[str, Future] = {}
        self._last_used: dict[str, float] = {}
        self._lock = threading.RLock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adapter-loader")

    # ---- reading (any thread) ------------------------------------------------------------
    def snapshot(self) -> dict[str, Resident]:  # the adapters on the device, by name
        with self._lock:
            return {name: entry.resident for name, entry in self._device.items()}

    def last_used(self, name: str) -> float | None:
        return self._last_used.get(name)

    @property
    def resident_bytes(self) -> int:
        """Device bytes under `max_bytes`: the adapters' own tensors + the one-pass stacks."""
        return self._device_used + self.engine.stack_bytes()

    @property
    def host_resident_bytes(self) -> int:
        return self._host.used

    @property
    def host_bytes(self) -> int:
        """The host tier's budget."""
        return self._host.budget

    @host_bytes.setter
    def host_bytes(self, value: int) -> None:
        self._host.budget = value

    def in_memory(self, name: str, *, device: bool = False) -> bool:  # device: no host tier
        return name in self._device or (not device and name in self._host)

    # ---- decoding ahead (event loop -> loader thread) ---------------------------------------
    async def prefetch(self, names: Iterable[str]) -> None:
        """Decode the adapters of `names` that are in neither tier (raises their errors:
        AdapterNotFound, InvalidAdapter, BaseModelMismatch, ...)."""
        futures = [self._decode_later(name) for name in names if not self.in_memory(name)]
        for future in futures:
            await asyncio.wrap_future(future)

    def _decode_later(self, name: str) -> Future:
        with self._lock:
            future = self._inflight.get(name)
            if future is None:
                future = self._loader.submit(self._decode_to_host, name)
                self._inflight[name] = future
        future.add_done_callback(lambda _: self._inflight.pop(name, None))
        return future

    def _decode_to_host(self, name: str) -> None:
        decoded = self._decode(name)
        with self._lock:
            current = self._device.get(name)
            if current is None or current.decoded.stamp != decoded.stamp:
                self._put_host(decoded)

    def _decode(self, name: str) -> Decoded:
        started = time.perf_counter()
        decoded = decode(self.store, name, base=self.engine.base_ref, dtype=self.engine.dtype)
        self.engine.note_key(name, decoded.compat.key)
        decoded.read_s = self._m.loaded(started)
        return decoded

    def _put_host(self, decoded: Decoded) -> None:
        self._host.put(decoded)
        self._gauges()

    # ---- activating (inference thread) ---------------------------------------------------
    def ensure(self, name: str, *, pinned: Collection[str] = ()) -> Resident:
        """The usable adapter `name`, activating (or reading a new version) when needed.

        Raises AdapterNotFound, InvalidAdapter / BaseModelMismatch from the store, or
        CacheFull when making room would evict an adapter in `pinned`.
        """
        stamp = stamp_of(self.store, name)
        if stamp is None:
            self.unload(name)
            raise AdapterNotFound(f"adapter {name!r} not found")
        self._last_used[name] = time.time()
        with self._lock:
            entry = self._device.get(name)
            if entry is not None and entry.decoded.stamp == stamp:
                self._device.move_to_end(name)
        if entry is not None and entry.decoded.stamp == stamp:
            self._m.count("adapter_cache_hits", "device")
            if entry.library or self.slots.bound(name, stamp):
                return entry.resident
            started = time.perf_counter()
            if self.slots.bind(entry.decoded, pinned=pinned):
                self._stacked(name, pinned)
                self._m.activated(started)
                return entry.resident
        self._m.count("adapter_cache_misses", "device")
        started = time.perf_counter()
        decoded = self._take(name, stamp)
        self._evict(name)  # another version, or a slot refused since: start afresh
        try:
            entry = self._admit(decoded, pinned=pinned)
        except CacheFull:
            self._put_host(decoded)
            raise
        self._m.activated(started, decoded)
        return entry.resident

    def unload(self, name: str) -> bool:
        """Forget `name` in both tiers (idempotent); True when it was on the device."""
        removed = self._evict(name)
        self._host.pop(name)
        self._gauges()
        self.engine.note_key(name, None)
        return removed

    def rehearse(self, name: str, run: Callable[[], object]) -> None:
        """Read `name` as `prefetch` does, activate it, `run()`, forget it, uncounted (warm-up)."""
        counted, self._m = self._m, CacheMetrics(None)
        try:
            self._decode_later(name).result()
            self.ensure(name)
            run()
        finally:
            self.unload(name)
            self._last_used.pop(name, None)
            self._m = counted

    def clear(self) -> None:
        """Unload every adapter and delete the slots: the model is the plain base again."""
        with self._lock:
            names = [*self._device, *self._host.names()]
        for name in names:
            self.unload(name)
        self.slots.clear()

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)

    # ---- internals -----------------------------------------------------------------------
    def _take(self, name: str, stamp: tuple[int, int]) -> Decoded:
        """`name` at `stamp` out of the host tier, or decoded now (a miss of both tiers)."""
        future = self._inflight.get(name)
        if future is not None:  # being decoded: wait for it rather than read twice
            with contextlib.suppress(Exception):  # its error may be stale: decode below
                future.result()
        decoded = self._host.pop(name)
        if decoded is not None and decoded.stamp == stamp:
            self._m.count("adapter_cache_hits", "host")
            return decoded
        self._m.count("adapter_cache_misses", "host")
        return self._decode(name)

    def _admit(self, decoded: Decoded, *, pinned: Collection[str]) -> Device:
        """Move `decoded` onto the device (making room) and activate it."""
        name = decoded.name
        self._make_room(name, decoded.nbytes, pinned=pinned)
        device, dtype = self.engine.device, self.engine.dtype
        decoded.tensors = {
            k: t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype)
            for k, t in decoded.tensors.items()
        }
        library = not self.slots.bind(decoded, pinned=pinned)
        nbytes = decoded.nbytes
        if library:
            nbytes = self.engine.load_adapter(name, decoded.path)
            decoded.tensors = {}
            if stamp_of(self.store, name) != decoded.stamp:  # replaced while the library read
                self.engine.unload_adapter(name)
                raise AdapterChanging(f"adapter {name!r} is being replaced; retry")
        resident = Resident(name=name, version=decoded.version, labels=decoded.labels,
                            nbytes=nbytes, stamp=decoded.stamp, loaded_at=time.time(),
                            task=decoded.task, thresholds=decoded.thresholds)  # fmt: skip
        entry = Device(decoded=decoded, resident=resident, library=library)
        with self._lock:
            self._device[name] = entry
            self._device_used += nbytes
        self._stacked(name, pinned)
        log.debug("activated %s v%d (%d bytes, library=%s)", name, decoded.version, nbytes, library)
        return entry

    def _make_room(self, name: str, incoming: int, *, pinned: Collection[str]) -> None:
        """Evict least-recently-used device adapters (never pinned ones) until `name` fits."""
        while True:
            with self._lock:
                own = self._device.get(name)
                count = len(self._device) - (own is not None)
                used = self.resident_bytes - (own.resident.nbytes if own is not None else 0)
                if count < self.max_count and (used + incoming <= self.max_bytes or not count):
                    return
            victim = self._victim(name, pinned)
            if victim is None:
                raise CacheFull(
                    f"cannot make room for adapter {name!r}: all resident adapters are in use"
                )
            self._demote(victim)

    def _stacked(self, name: str, pinned: Collection[str]) -> None:
        """Stack `name` now (one-pass path); evict LRU adapters while that put the tier over
        `max_bytes` (over it only while the batch in flight pins the others)."""
        self.engine.stack(name)
        while self.resident_bytes > self.max_bytes and (victim := self._victim(name, pinned)):
            self._demote(victim)
        self._gauges()

    def _victim(self, name: str, pinned: Collection[str]) -> str | None:
        with self._lock:
            return next((n for n in self._device if n != name and n not in pinned), None)

    def _demote(self, name: str) -> None:
        """Device -> host tier (a copy back on an accelerator; nothing moves on the CPU)."""
        with self._lock:
            entry = self._device.get(name)
        if entry is None:
            return
        self._evict(name)
        if not entry.library:
            entry.decoded.tensors = {k: t.to("cpu") for k, t in entry.decoded.tensors.items()}
            self._put_host(entry.decoded)

    def _evict(self, name: str) -> bool:
        """Take `name` off the device (release its slot or unload it); True when it was there."""
        with self._lock:
            entry = self._device.pop(name, None)
            if entry is not None:
                self._device_used -= entry.resident.nbytes
        self.slots.release(name)
        removed = self.engine.unload_adapter(name)
        if entry is not None:
            self._m.count("adapter_evictions", "device")
            with self._lock:
                self._gauges()
        return entry is not None or removed

    def _gauges(self) -> None:
        self._m.gauges(
            device=(len(self._device), self.resident_bytes), host=(len(self._host), self._host.used)
        )
