"""adapter-serve: one frozen encoder, many text-classification adapters, served over HTTP.

Three rooms: `app.api` (HTTP), `app.serving` (engine, cache, batching) and `app.jobs` (training
jobs and the worker); top-level modules hold the factory, settings, security, metrics, schemas.
"""
