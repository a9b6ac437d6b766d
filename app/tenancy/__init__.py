"""Tenancy: who asks (keys and principals, app.security), which adapters a key may use
(`access`), its quotas and share of the queue (`quotas`), and the limiters that count them in
process or in Redis (`limiter`, `limiter_redis`). No HTTP: app.api reads the key and renders
the refusals; app.inference asks these modules."""
