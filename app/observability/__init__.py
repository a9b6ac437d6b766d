"""Following requests: request ids, structured logs, traces, per-adapter metric labels.

- `context`: the request being served (id, key id, adapters, timings) and `classifying`.
- `logs`: the logging filter and formatters (text, JSON), the access line, the dictConfig.
- `tracing`: optional OpenTelemetry spans (the `[otel]` extra, APP_OTLP_ENDPOINT).
- `middleware`: `RequestObserver`, the pure-ASGI middleware that ties them together.

Import the modules, not this package (it imports nothing). The busiest-adapters label
policy lives below, in `app.metrics.top_adapters` (`TopAdapters`): the metrics never import
this package.
"""
