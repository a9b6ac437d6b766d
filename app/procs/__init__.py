"""The service as processes (`python -m app --api-workers N`, N > 1): one engine process owns the
model, the adapter tiers, the planner and the inference loop (`engine_main`); N API processes do
HTTP, JSON, auth, tenancy, quotas and tokenising (`api_worker`) and reach the engine through
`engine_client.EngineClient` (a `Classifier`) over ZeroMQ with msgspec messages (`wire`); the
`supervisor` starts, restarts and stops them. `--api-workers 1` runs none of this.
"""
