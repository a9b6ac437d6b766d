"""The HTTP layer: routes, dependencies and the error boundary (the only FastAPI users)."""
