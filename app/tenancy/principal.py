"""Where a request's principal (app.security.Principal) is kept once its key is checked.

The request guard (app.api.guard) leaves it in the ASGI scope under `PRINCIPAL_KEY`; the route
dependencies, the quotas, the inference calls and the logs (app.observability.context) read it
there. A plain string: importing it costs nothing and ties the reader to no HTTP module.
"""

from __future__ import annotations

from app.security import Principal

PRINCIPAL_KEY = "adapter_serve.principal"


def tenant(principal: Principal | None) -> str | None:
    """Whose request, for the batcher's fair share: the key's id (None without keys)."""
    return None if principal is None else principal.key_id
