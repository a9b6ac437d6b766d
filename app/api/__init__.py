"""The HTTP layer: routes, Annotated dependencies and the one error boundary.

The only FastAPI users besides `app.main`. Imports `app.serving`, `app.jobs.service`,
`app.config`, `app.security`, `app.schemas` and `adapters_store`; nothing imports it but `app.main`.
"""
