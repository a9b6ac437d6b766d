"""The request guard: keys, Host and Origin checks and body caps, before any body is read.

A pure-ASGI middleware. Everything it decides per route is computed once, when the app's
middleware stack is built: the route table becomes one regular expression per method, and
each route its policy (the scopes its dependencies ask for, its body cap, its error shape).
A request then costs a header scan and one regular-expression match:

- A route that needs a scope (it has a `requirement(...)` dependency, app/api/deps.py) is
  refused with 401/403 right away when keys are configured and the key is missing, unknown or
  lacks the scope. Without keys, the Host header must name this machine (loopback names,
  APP_ALLOWED_HOSTS, the bound address), and a state change (POST, DELETE, ...) is refused
  when the browser says it comes from another site (`Origin`, `Sec-Fetch-Site`).
- A body over the route's cap is a 413: on its Content-Length before a byte is read, or,
  for a chunked body, as soon as the bytes received pass the cap (the rest is never read).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import FastAPI
from starlette.convertors import CONVERTOR_TYPES
from starlette.routing import BaseRoute

from app.api.deps import PRINCIPAL_KEY
from app.api.errors import PayloadTooLarge
from app.api.fast_path import FastClassify
from app.api.quotas import QuotaMiddleware
from app.config import Settings
from app.metrics import Metrics
from app.observability.middleware import install_observer
from app.security import AuthError, KeyRing, is_loopback

SMALL_BODY = 1 << 20  # every route without a cap of its own (job configs, hub imports, ...)
INFERENCE_ROUTES = frozenset(
    {
        "/classify",
        "/models/{adapter}",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }
)
UPLOAD_ROUTES = frozenset({"/adapters"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SAME_SITE = (b"same-origin", b"none")  # Sec-Fetch-Site values of the console and of typed URLs
PARAM = re.compile(r"\{[^}:]+(:[a-z]+)?\}")


@dataclass(frozen=True)
class Policy:
    template: str  # the route template: also the metrics label
    scopes: frozenset[str] | None  # None: an open route
    body_limit: int
    oip: bool  # errors in the Open Inference Protocol's shape


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
    """Every route with its full path (FastAPI >= 0.160 keeps included routers unexpanded)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: include_router copied the routes in
        return list(routes)
    return list(iter_route_contexts(list(routes)))


def _pattern(template: str) -> str:
    parts, last = [], 0
    for match in PARAM.finditer(template):  # each parameter as its convertor matches it
        wildcard = CONVERTOR_TYPES[match[1][1:]].regex if match[1] else "[^/]+"
        parts += [re.escape(template[last : match.start()]), wildcard]
        last = match.end()
    return "".join([*parts, re.escape(template[last:])])


class RouteTable:
    """Policy by (method, path): one alternation regex per method, routes in router order."""

    def __init__(self, routes: Iterable[BaseRoute], settings: Settings) -> None:
        by_method: dict[str, list[Policy]] = {}
        by_regex: dict[str, list[str]] = {}
        for route in flat_routes(routes):
            template = getattr(route, "path_format", None) or route.path  # without convertors
            for method in getattr(route, "methods", None) or ():
                policy = Policy(
                    template,
                    route_scopes(route),
                    _body_limit(method, template, settings),
                    template.startswith("/v2"),
                )
                by_method.setdefault(method, []).append(policy)
                by_regex.setdefault(method, []).append(_pattern(route.path))
        self._tables = {
            method: (
                re.compile("|".join(f"(?P<r{i}>{r})" for i, r in enumerate(by_regex[method]))),
                ps,
            )
            for method, ps in by_method.items()
        }

    def lookup(self, method: str, path: str) -> Policy:
        table = self._tables.get(method)
        if table is None:
            return OTHER
        match = table[0].fullmatch(path)
        if match is None:
            return OTHER
        return table[1][int(match.lastgroup[1:])]


def _body_limit(method: str, template: str, settings: Settings) -> int:
    if method == "POST" and template in UPLOAD_ROUTES:
        return settings.max_upload_bytes
    if method == "POST" and template in INFERENCE_ROUTES:
        return settings.max_request_bytes
    return SMALL_BODY


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
        path, root = scope["path"], scope.get("root_path")
        if root and path.startswith(root):  # as the router sees it (mounted under a prefix)
            path = path[len(root) :] or "/"
        policy = self.table.lookup(scope["method"], path)
        scope["route_template"] = policy.template
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


def install_middleware(app: FastAPI, settings: Settings, keyring: KeyRing, metrics: Metrics):
    """The guard inside the request observer (which counts and logs its refusals), the quotas
    inside the guard (they read the key it found), innermost the fast path of `POST /classify`;
    call it after the last route is added."""
    app.add_middleware(FastClassify)
    app.add_middleware(
        QuotaMiddleware, settings=settings, metrics=metrics, inference=INFERENCE_ROUTES
    )
    app.add_middleware(RequestGuard, routes=app.routes, settings=settings, keyring=keyring)
    install_observer(app, settings, metrics)
