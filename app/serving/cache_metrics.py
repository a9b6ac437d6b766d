"""The adapter cache's Prometheus series, with each labelled child looked up once (not per use)."""

from __future__ import annotations

import time

from app.metrics import Metrics
from app.serving.decode import Decoded

TIERS = ("device", "host")
COUNTERS = ("adapter_cache_hits", "adapter_cache_misses", "adapter_evictions")


class CacheMetrics:
    """No-ops when the cache runs without metrics (tests, benches)."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.enabled = metrics is not None
        if metrics is None:
            return
        self._metrics = metrics
        self._counters = {
            (name, tier): getattr(metrics, name).labels(tier) for name in COUNTERS for tier in TIERS
        }
        self._count_gauge = {tier: metrics.resident_adapters.labels(tier) for tier in TIERS}
        self._bytes_gauge = {tier: metrics.resident_bytes.labels(tier) for tier in TIERS}

    def count(self, metric: str, tier: str) -> None:
        if self.enabled:
            self._counters[metric, tier].inc()

    def activated(self, started: float, decoded: Decoded | None = None) -> None:
        """An activation that began at `started`; `decoded`'s first since it was read is also
        a cold one: its read plus this activation (`adapter_cold_seconds`)."""
        seconds = time.perf_counter() - started
        if self.enabled:
            self._metrics.adapter_activation_seconds.observe(seconds)
            if decoded is not None and decoded.read_s:
                self._metrics.adapter_cold_seconds.observe(decoded.read_s + seconds)
        if decoded is not None:
            decoded.read_s = 0.0  # activated again later (after an eviction): not cold

    def loaded(self, started: float) -> float:
        """A read that began at `started`; -> its seconds."""
        seconds = time.perf_counter() - started
        if self.enabled:
            self._metrics.adapter_loads.inc()
            self._metrics.adapter_load_seconds.observe(seconds)
        return seconds

    def gauges(self, *, device: tuple[int, int], host: tuple[int, int]) -> None:
        """Resident (count, bytes) per tier."""
        if self.enabled:
            for tier, (count, nbytes) in (("device", device), ("host", host)):
                self._count_gauge[tier].set(count)
                self._bytes_gauge[tier].set(nbytes)
