"""Prometheus metrics, one registry per app instance.

A registry per app (not the process-global one) keeps several apps in one process (tests)
from clashing. Every label has a bounded set of values: requests are labelled by the route
template (`/adapters/{name}`, from the request guard or the router), never by the raw path,
a path that matches no route is `other`, and so is a method outside `METHODS`; adapters by
name only for the busiest `top_adapters` (`TopAdapters`, below), the rest are `other`.
`observe_request` is what app.observability.middleware calls once per request: it keeps the
label children it made, so a request costs dictionary look-ups, not `labels(...)` calls.
`render(visible)` leaves out the per-adapter series whose adapter `visible` refuses (what
`GET /metrics` gives a key limited to some adapters, app/api/pages.py).

Several processes (app.procs: an engine and N API workers) share one view through
prometheus_client's multiprocess mode: each process writes its samples into files of the
directory PROMETHEUS_MULTIPROC_DIR names (set by the supervisor before they start), and
`render` of a Metrics with `shared_dir` reads them all (counters and histograms summed over
processes, gauges summed over live ones), whichever process is scraped.
"""

from __future__ import annotations

import bisect
import copy
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from app.metrics.top_adapters import OTHER, TopAdapters

__all__ = ["OTHER", "Metrics", "TopAdapters", "observe_many"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ACTIVATION_BUCKETS = (  # 7.5 and 15 ms: a p99 can be told against a 10 ms goal
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.5, 2
)  # fmt: skip
TIERS = ("device", "host")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, top_adapters: int = 20) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.shared_dir: str | None = None  # render every process's samples (multiprocess)
        r = self.registry
        self.requests = Counter(
            "http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inference_batch_size", "Texts per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_adapters = Histogram(
            "inference_batch_adapters",
            "Adapters per forward pass",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "inference_batch_seconds", "Forward pass time", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_seconds = Histogram(
            "inference_queue_seconds",
            "Time a text waits before its forward pass",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.nested_passes = Counter(
            "inference_nested_passes_total",
            "Light keys' passes run between two layers of another key's pass",
            registry=r,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth", "Texts waiting", registry=r, multiprocess_mode="livesum"
        )
        self.rejected = Counter(
            "inference_rejected_total", "Requests refused or dropped", ["reason"], registry=r
        )
        self.adapter_loads = Counter(
            "adapter_loads_total", "Adapter versions read from the store", registry=r
        )
        self.adapter_load_seconds = Histogram(
            "adapter_load_seconds",
            "Reading one adapter from the store (files -> host RAM; a loader thread)",
            buckets=ACTIVATION_BUCKETS,
            registry=r,
        )
        self.adapter_cold_seconds = Histogram(
            "adapter_cold_seconds",
            "A cold adapter made usable: its read from the store plus its first activation "
            "(the adapter's own work, no queueing)",
            buckets=ACTIVATION_BUCKETS,
            registry=r,
        )
        self.adapter_activation_seconds = Histogram(
            "adapter_activation_seconds",
            "Making a cold adapter usable on the inference thread (to the device, into a slot)",
            buckets=ACTIVATION_BUCKETS,
            registry=r,
        )
        self.adapter_cache_hits = Counter(
            "adapter_cache_hits", "Adapter look-ups found in a tier", ["tier"], registry=r
        )
        self.adapter_cache_misses = Counter(
            "adapter_cache_misses", "Adapter look-ups not found in a tier", ["tier"], registry=r
        )
        self.adapter_evictions = Counter(
            "adapter_evictions",
            "Adapters leaving a tier (device -> host, host -> dropped, unloads)",
            ["tier"],
            registry=r,
        )
        self.resident_adapters = Gauge(
            "adapters_resident",
            "Adapters held per tier",
            ["tier"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.resident_bytes = Gauge(
            "adapters_resident_bytes",
            "Adapter parameter bytes held per tier",
            ["tier"],
            registry=r,
            multiprocess_mode="livesum",
        )
        for tier in TIERS:  # every series exists from the start (0), as scrapers expect
            for metric in (self.adapter_cache_hits, self.adapter_cache_misses):
                metric.labels(tier)
            self.adapter_evictions.labels(tier)
            self.resident_adapters.labels(tier).set(0)
            self.resident_bytes.labels(tier).set(0)
        self._adapter_metrics(r, top_adapters)
        self._http: dict[tuple, tuple[Any, Any]] = {}

    def _adapter_metrics(self, r: CollectorRegistry, top: int) -> None:
        self.adapter_requests = Counter(
            "adapter_requests_total",
            "Classify requests per adapter (the busiest adapters by name, the rest 'other')",
            ["adapter", "status"],
            registry=r,
        )
        self.adapter_texts = Counter(
            "adapter_texts_total", "Texts classified per adapter", ["adapter"], registry=r
        )
        self.adapter_request_seconds = Histogram(
            "adapter_request_duration_seconds",
            "Classify request latency per adapter",
            ["adapter"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.top_adapters = TopAdapters(top, on_drop=self._drop_adapter)
        self._adapter: dict[tuple[str, int], tuple[Any, Any, Any]] = {}

    def _drop_adapter(self, name: str) -> None:
        """`name` lost its label: its series go (its traffic counts under `other` now)."""
        statuses = [status for label, status in self._adapter if label == name]
        for status in statuses:  # every series of `name` was made through self._adapter
            del self._adapter[(name, status)]
            self.adapter_requests.remove(name, str(status))
        if statuses:
            self.adapter_texts.remove(name)
            self.adapter_request_seconds.remove(name)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One HTTP request (method and route from bounded sets)."""
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.request_seconds.labels(method, route),
            )
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_adapters(
        self, adapters: list[str], texts: int, status: int, seconds: float
    ) -> None:
        """One classify request over `adapters` (answered when status < 400)."""
        top = self.top_adapters
        for name in adapters:
            if status < 400:  # an unknown or refused name never takes a label
                top.count(name, texts)
            label = top.label(name)
            key = (label, status)
            children = self._adapter.get(key)
            if children is None:
                children = (
                    self.adapter_requests.labels(label, str(status)),
                    self.adapter_texts.labels(label),
                    self.adapter_request_seconds.labels(label),
                )
                self._adapter[key] = children
            children[0].inc()
            if status < 400:
                children[1].inc(texts)
            children[2].observe(seconds)

    def render(self, visible: Callable[[str], bool] | None = None) -> bytes:
        """The exposition; with `visible`, only the per-adapter series of adapters it allows."""
        registry = self.registry
        if self.shared_dir is not None:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.shared_dir)
        if visible is None:
            return generate_latest(registry)
        return generate_latest(_Filtered(registry, visible))  # type: ignore[arg-type]


class _Filtered:
    """A registry's metrics less the samples labelled with an adapter `visible` refuses."""

    def __init__(self, registry: CollectorRegistry, visible: Callable[[str], bool]) -> None:
        self.registry, self.visible = registry, visible

    def collect(self) -> Iterator[Any]:
        for family in self.registry.collect():
            kept = [
                sample
                for sample in family.samples
                if "adapter" not in sample.labels or self.visible(sample.labels["adapter"])
            ]
            if len(kept) != len(family.samples):
                family = copy.copy(family)
                family.samples = kept
            yield family


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """`histogram.observe(v)` for every value, writing each bucket touched once: in the
    multiprocess mode every write takes a lock, asks the process id (a system call) and
    writes the shared file, and the engine observes each text's queue wait."""
    bounds, buckets = (
        getattr(histogram, "_upper_bounds", None),
        getattr(histogram, "_buckets", None),
    )
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # a parent, or other internals
        for value in values:
            histogram.observe(value)
        return
    for index, count in Tally(bisect.bisect_left(bounds, v) for v in values).items():
        buckets[index].inc(count)
    if values:
        total.inc(sum(values))
