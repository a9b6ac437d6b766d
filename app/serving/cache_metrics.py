"""The adapter cache's Prometheus series, with each labelled child looked up once (not per use)."""

from __future__ import annotations

import time

from app.metrics import Metrics

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

    def activated(self, started: float) -> None:
        if self.enabled:
            self._metrics.adapter_activation_seconds.observe(time.perf_counter() - started)

    def loaded(self, started: float) -> None:
        if self.enabled:
            self._metrics.adapter_loads.inc()
            self._metrics.adapter_load_seconds.observe(time.perf_counter() - started)

    def gauges(self, *, device: tuple[int, int], host: tuple[int, int]) -> None:
        """Resident (count, bytes) per tier."""
        if self.enabled:
            for tier, (count, nbytes) in (("device", device), ("host", host)):
                self._count_gauge[tier].set(count)
                self._bytes_gauge[tier].set(nbytes)
