"""Prometheus metrics, one registry per app instance, and a pure-ASGI request middleware.

A registry per app (not the process-global one) keeps several apps in one process (tests)
from clashing. Every label has a fixed set of values: requests are labelled by the route
template (`/adapters/{name}`, from the request guard or the router), never by the raw path,
a path that matches no route is `other`, and so is a method outside `METHODS`.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ACTIVATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2)
TIERS = ("device", "host")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
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
        self.queue_depth = Gauge("inference_queue_depth", "Texts waiting", registry=r)
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
            "adapters_resident", "Adapters held per tier", ["tier"], registry=r
        )
        self.resident_bytes = Gauge(
            "adapters_resident_bytes", "Adapter parameter bytes held per tier", ["tier"], registry=r
        )
        for tier in TIERS:  # every series exists from the start (0), as scrapers expect
            for metric in (self.adapter_cache_hits, self.adapter_cache_misses):
                metric.labels(tier)
            self.adapter_evictions.labels(tier)
            self.resident_adapters.labels(tier).set(0)
            self.resident_bytes.labels(tier).set(0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count and time every HTTP request by method, route template and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = scope.get("route_template") or getattr(scope.get("route"), "path", "other")
            method = METHODS.get(scope.get("method", ""), "other")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.request_seconds.labels(method, template).observe(
                time.perf_counter() - started
            )
