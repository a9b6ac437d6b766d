"""OpenTelemetry traces, optional (`pip install 'adapter-serve[otel]'`, `APP_OTLP_ENDPOINT`).

One server span per HTTP request (`POST /classify`), started by `RequestObserver` when the
request arrives (a W3C `traceparent` header makes it a child of the caller's span). A
classification adds its phases as children when it ends, laid out from the timings the
batcher measured (`Timing`): `admission` (arrival to the batcher: auth, body, validation,
limits), `tokenize`, `queue` (waiting for a forward pass), `forward` (the pass: body and
heads) and `respond` (ranking and writing the answer). Spans carry the request id, the key
id, adapter names and versions, the number of texts and the status: never a key, a text, an
exception message or a path. Nothing of OpenTelemetry is imported while tracing is off.

Spans hold bounded values only: adapter names are valid selectors or `<invalid>`
(app.observability.context), and the provider's `SpanLimits` (what the SDK's
OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT and OTEL_ATTRIBUTE_COUNT_LIMIT would set, fixed in code)
cut any attribute value at 256 characters and keep at most 32 attributes, 8 events and 8 links
per span. A `tracestate` header over 512 characters is not continued (W3C: a vendor may drop it).
"""

from __future__ import annotations

from typing import Any

from app.observability.context import MAX_FIELD_CHARS, RequestContext

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
MAX_TRACESTATE_BYTES = 512
MS = 1_000_000  # nanoseconds
LIMITS = {
    "max_attributes": 32,
    "max_events": 8,
    "max_links": 8,
    "max_attribute_length": MAX_FIELD_CHARS,
}


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector's base URL (`http://host:4318`)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def bounded_provider(processor: Any) -> Any:
    """An SDK TracerProvider with our `LIMITS`, its spans going to `processor`."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    provider = TracerProvider(
        resource=Resource.create({"service.name": "adapter-serve"}),
        span_limits=SpanLimits(**LIMITS),
    )
    provider.add_span_processor(processor)
    return provider


class Tracing:
    """Spans of requests on `provider` (an SDK TracerProvider, shut down by `shutdown`)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("adapter_serve")
        self._propagator = TraceContextTextMapPropagator()
        self._in_context = trace.set_span_in_context
        self._server = trace.SpanKind.SERVER
        self._error = trace.StatusCode.ERROR

    @classmethod
    def from_endpoint(cls, endpoint: str | None) -> Tracing | None:
        """An OTLP/HTTP exporter to `endpoint` in batches; None when `endpoint` is unset."""
        if not endpoint:
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ValueError(
                "APP_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
                "pip install 'adapter-serve[otel]'"
            ) from None
        return cls(bounded_provider(BatchSpanProcessor(OTLPSpanExporter(traces_url(endpoint)))))

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter."""
        self.provider.shutdown()

    def start(self, context: RequestContext, method: str, headers: list) -> None:
        """The request's server span (its name gets the route when the request ends)."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name == TRACEPARENT or (name == TRACESTATE and len(value) <= MAX_TRACESTATE_BYTES)
        }
        parent = self._propagator.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=self._server,
            start_time=context.started_ns,
            attributes={"http.request.method": method, "request.id": context.request_id},
        )
        context.span = span
        context.trace_id = format(span.get_span_context().trace_id, "032x")

    def finish(self, context: RequestContext, method: str, route: str, end_ns: int) -> None:
        span = context.span
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
        span.set_attribute("http.response.status_code", context.status)
        key_id = context.key_id
        if key_id is not None:
            span.set_attribute("adapter_serve.key_id", key_id)
        if context.status >= 500:
            span.set_status(self._error)
        if context.adapters is not None and span.is_recording():
            span.set_attribute("adapter_serve.adapters", context.adapters)
            span.set_attribute("adapter_serve.texts", context.texts)
            if context.versions is not None:
                span.set_attribute("adapter_serve.versions", context.versions)
            self._phases(context, span, end_ns)
        span.end(end_time=end_ns)

    def _phases(self, context: RequestContext, span: Any, end_ns: int) -> None:
        """The classification's phases as child spans, from the measured durations."""
        timing = context.timing
        parent = self._in_context(span)
        called = context.classify_ns or end_ns
        answered = context.classified_ns or end_ns
        tokenized = called + int(getattr(timing, "tokenize_ms", 0.0) * MS)
        forward = answered - int(timing.inference_ms * MS)
        queued = forward - int(timing.queue_ms * MS)
        phases = (
            ("admission", context.started_ns, called),
            ("tokenize", called, tokenized),
            ("queue", max(queued, tokenized), forward),
            ("forward", forward, answered),
            ("respond", answered, end_ns),
        )
        for name, start, end in phases:
            if end > start:
                self.tracer.start_span(name, context=parent, start_time=start).end(end_time=end)
