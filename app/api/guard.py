"""The request guard: keys, Host and Origin checks and body caps, before any body is read.

A pure-ASGI middleware. Everything it decides per route is computed once, when the app's
middleware stack is built, from the router's own table: each route's compiled path regex (the
one the router matches with, in the router's order) and its policy, read off the route (the
scopes its dependencies ask for, its kind from its `openapi_extra` metadata, its error shape
from its route class). A request then costs a header scan and a few regular-expression matches:

- A path holding a control character (`%0A`, `%00`, ...) is a 400 before anything else: no
  route's path holds one, and the router's `$` would match before a trailing newline.
- A route that needs a scope (it has a `requirement(...)` dependency, app/api/deps.py) is
  refused with 401/403 right away when keys are configured and the key is missing, unknown or
  lacks the scope. Without keys, the Host header must name this machine (loopback names,
  APP_ALLOWED_HOSTS, the bound address), and a state change (POST, DELETE, ...) is refused
  when the browser says it comes from another site (`Origin`, `Sec-Fetch-Site`).
- A body over the route's cap is a 413: on its Content-Length before a byte is read, or,
  for a chunked body, as soon as the bytes received pass the cap (the rest is never read).

The route's policy is left in the scope (`POLICY_KEY`) for the quotas and the fast path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import FastAPI
from starlette._utils import get_route_path  # the router's own view of the path
from starlette.routing import BaseRoute

from app.api.deps import INFERENCE_ROUTE, POLICY_KEY, ROUTE_KIND, UPLOAD_ROUTE
from app.api.edge import FastClassify, QuotaMiddleware, covers
from app.api.errors import PayloadTooLarge
from app.config import ObservabilityView, Settings
from app.metrics import Metrics
from app.observability.middleware import install_observer
from app.security import AuthError, KeyRing, is_loopback
from app.tenancy.principal import PRINCIPAL_KEY

SMALL_BODY = 1 << 20  # every route without a cap of its own (job configs, hub imports, ...)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE = (b"same-origin", b"none")  # Sec-Fetch-Site values of the console and of typed URLs
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: in no route's path
CONTROL_MESSAGE = "the path holds a control character (U+0000-U+001F, U+007F-U+009F)"


@dataclass(frozen=True)
class Policy:
    template: str  # the route template: also the metrics label
    scopes: frozenset[str] | None  # None: an open route
    body_limit: int
    oip: bool  # errors in the Open Inference Protocol's shape
    inference: bool = False  # a classification: the quotas check the key's room in the queue
    fast: bool = False  # app.api.edge.FastClassify may answer it: it runs all its dependencies


OTHER = Policy("other", None, SMALL_BODY, False)


def route_scopes(route: Any) -> frozenset[str] | None:
    """The scopes the route's dependencies ask for (any one will do), None for an open route."""
    dependant = getattr(route, "dependant", None)
    pending = list(dependant.dependencies) if dependant is not None else []
    while pending:
        dependency = pending.pop()
        scopes = getattr(dependency.call, "scopes", None)
        if scopes is not None:
            return scopes
        pending.extend(dependency.dependencies)
    return None


def flat_routes(routes: Iterable[BaseRoute]) -> list[Any]:
    """Every route with its full path, in the router's order (FastAPI >= 0.160 keeps included
    routers unexpanded and matches through them in this order)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: include_router copied the routes in
        return list(routes)
    return list(iter_route_contexts(list(routes)))


def route_policy(route: Any, settings: Settings) -> Policy:
    """What a route declares: the scopes its dependencies ask for, its kind (route metadata in
    its `openapi_extra`, app/api/deps.py) and its error shape (its route class)."""
    kind = (getattr(route, "openapi_extra", None) or {}).get(ROUTE_KIND)
    inference, upload = kind == INFERENCE_ROUTE[ROUTE_KIND], kind == UPLOAD_ROUTE[ROUTE_KIND]
    limit = settings.max_request_bytes if inference else SMALL_BODY
    limit = settings.max_upload_bytes if upload else limit
    original = getattr(route, "original_route", route)  # a FastAPI RouteContext's own route
    return Policy(
        getattr(route, "path_format", None) or route.path,  # the template without convertors
        route_scopes(route),
        limit,
        getattr(original, "oip_errors", False),
        inference,
        covers(route),
    )


class RouteTable:
    """Policy by (method, path) as the router decides it: per method, the routes that take it,
    in the router's order, each as its own compiled path regex; the first that matches wins
    (an earlier route of the path with another method only makes the router answer 405)."""

    def __init__(self, routes: Iterable[BaseRoute], settings: Settings) -> None:
        self._tables: dict[str, list[tuple[Callable, Policy]]] = {}
        for route in flat_routes(routes):
            methods = getattr(route, "methods", None)
            if not methods:  # a mount or a websocket route: the guard could not police it
                raise TypeError(f"the request guard handles routes with methods only: {route!r}")
            entry = (route.path_regex.match, route_policy(route, settings))
            for method in methods:
                self._tables.setdefault(method, []).append(entry)

    def lookup(self, method: str, path: str) -> Policy:
        for match, policy in self._tables.get(method, ()):
            if match(path) is not None:
                return policy
        return OTHER


def host_name(host: str) -> str:
    """The name in a Host header value (no port, no brackets), lower case."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower() if "]" in host else host.lower()
    return (host.rpartition(":")[0] if host.count(":") == 1 else host).lower()


class RequestGuard:
    """The middleware; `routes` is the app's route list (complete when the stack is built)."""

    def __init__(self, app: Any, *, routes: list[BaseRoute], settings: Settings, keyring: KeyRing):
        self.app = app
        self.keyring = keyring
        self.table = RouteTable(routes, settings)
        allowed = {h.lower() for h in settings.allowed_hosts}
        if settings.host not in ("0.0.0.0", "::", ""):
            allowed.add(settings.host.lower())
        self.any_host = "*" in allowed

        @lru_cache(maxsize=256)
        def host_allowed(name: str) -> bool:
            return name in allowed or is_loopback(name)

        self.host_allowed = host_allowed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.table.lookup(scope["method"], get_route_path(scope))
        if CONTROL.search(scope["path"]) is not None:  # refused before any route sees it
            scope["route_template"] = OTHER.template
            await respond(send, policy, 400, "bad_request", CONTROL_MESSAGE, None)
            return
        scope["route_template"], scope[POLICY_KEY] = policy.template, policy
        headers = dict(scope["headers"])
        refusal = None
        if policy.scopes is not None:
            refusal = self._access(scope, policy, headers)
        if refusal is None:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > policy.body_limit:
                refusal = too_large(policy.body_limit)
            elif declared is None and b"transfer-encoding" in headers:
                await self._counted(scope, receive, send, policy)
                return
        if refusal is not None:
            await respond(send, policy, *refusal)
            return
        await self.app(scope, receive, send)

    def _access(self, scope: dict, policy: Policy, headers: dict) -> tuple | None:
        """(status, code, message, headers) when the request may not reach this route."""
        if self.keyring.enabled:
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            try:
                scope[PRINCIPAL_KEY] = self.keyring.authorize(authorization, policy.scopes)
            except AuthError as exc:
                status = 401 if exc.code == "unauthorized" else 403
                return status, exc.code, exc.message, getattr(exc, "headers", None)
            return None
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.any_host and not self.host_allowed(host_name(host)):
            message = (
                f"Host {host!r} is not this server's: a server without API keys answers only "
                "loopback names and APP_ALLOWED_HOSTS"
            )
            return 403, "host_not_allowed", message, None
        if scope["method"] not in SAFE_METHODS and cross_site(headers, host):
            message = (
                "a request from another site may not change anything on a server without API "
                "keys (Origin / Sec-Fetch-Site)"
            )
            return 403, "cross_site_request", message, None
        return None

    async def _counted(self, scope: dict, receive: Any, send: Any, policy: Policy) -> None:
        """Run the app on a chunked body, stopping with 413 when it passes the cap."""
        limit, received, over = policy.body_limit, 0, False

        async def counted_receive() -> dict:
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                over = True
                raise PayloadTooLarge(f"request body over the limit of {limit} bytes")
            return message

        async def guarded_send(message: dict) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":  # the app's answer to the error
                await respond(send, policy, *too_large(limit))

        await self.app(scope, counted_receive, guarded_send)


def cross_site(headers: dict, host: str) -> bool:
    """Whether a browser says the request comes from a page of another origin."""
    site = headers.get(b"sec-fetch-site")
    if site is not None and site not in SAME_SITE:
        return True
    origin = headers.get(b"origin")
    if origin is None:
        return False  # not a browser's cross-origin request (curl, httpx, a typed URL)
    return origin.partition(b"://")[2].decode("latin-1").lower() != host.lower()


def too_large(limit: int) -> tuple:
    return 413, "payload_too_large", f"request body over the limit of {limit} bytes", None


async def respond(
    send: Any, policy: Policy, status: int, code: str, message: str, headers: Any
) -> None:
    """A refusal; the connection closes after it, so a body the client still sends is not read."""
    error: Any = message if policy.oip else {"code": code, "message": message}
    body = json.dumps({"error": error}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def install_middleware(
    app: FastAPI, settings: Settings, keyring: KeyRing, metrics: Metrics, limiter: Any = None
):
    """The guard inside the request observer (which counts and logs its refusals), the quotas
    inside the guard (they read the key it found), innermost the fast path of `POST /classify`;
    call it after the last route is added."""
    app.add_middleware(FastClassify)
    app.add_middleware(QuotaMiddleware, settings=settings, metrics=metrics, limiter=limiter)
    app.add_middleware(RequestGuard, routes=app.routes, settings=settings, keyring=keyring)
    install_observer(app, ObservabilityView.of(settings), metrics)
