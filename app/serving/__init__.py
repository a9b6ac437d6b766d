"""Serving: one base model, adapters resident under an LRU budget, dynamic batching of requests.

Owns the engine (model + forward), the adapter cache, pure batch planning, the batching loop,
the pass runner and the base-model fit check. Imports `adapters_store` and `app.metrics`; never
FastAPI, HTTP, jobs or `training`.
"""
