"""Training jobs: durable job records (SQLite or Redis), the Huey queue, and the worker.

Owns the record types + interface, both backends and the factory choosing one, the queue, the
API-side service, the per-job runner and the worker process. Imports `adapters_store`,
`app.config` and `training`; never FastAPI or `app.serving`.
"""
