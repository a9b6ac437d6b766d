"""The two ASGI middlewares inside the request guard, before any route: per-key quotas that
need no body (`QuotaMiddleware`), then `POST /classify`'s fast path (`FastClassify`).

Quotas over HTTP: the checks that need no body, in ASGI before it is read, and the 429 in the
route's error shape. The quotas themselves (requests/s, texts/s, texts in flight, the key's
share of the queue) are app.tenancy.quotas's.

The fast path: `POST /classify` without FastAPI's per-request machinery, the hot path of the
service. The guard has already checked the key, the Host, the body cap, and found the route's
policy: `fast` when this path runs every dependency of the route, `covers`, so a dependency
added to the route later is never skipped: the route then answers every request. For a JSON
`POST /classify` on a started service it reads the body, validates it with pydantic straight
from the bytes, and runs the route's own work (`app.api.classify.answer`) on the same request:
dependency solving, the route wrappers, the exception middleware and the response model are
skipped (about a third of the event loop's time per request, issue 19). Anything else, and any
body that does not validate, goes to the FastAPI route unchanged, with the body replayed, so
errors keep their one shape and the OpenAPI schema stays the route's. It takes only what the
route would read as JSON (the route reads the first Content-Type header), so its answers are
the route's for any headers.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import Request

from app.api import deps
from app.api.classify import answer
from app.api.deps import POLICY_KEY, QUOTAS_KEY
from app.api.errors import domain_error_response
from app.config import Settings
from app.metrics import Metrics
from app.schemas import ClassifyRequest
from app.tenancy.limiter import RateLimited
from app.tenancy.principal import PRINCIPAL_KEY
from app.tenancy.quotas import Quotas

DRAIN_BYTES = 64 * 1024  # a refused request's body up to this is read, keeping the connection


class QuotaMiddleware:
    """Pure ASGI, inside the request guard: the checks that need no body, before it is read.

    Requests/s on every route that needs a key; on the inference routes (the route policy the
    guard found) also a key already at its texts in flight or its share of the queue, which
    would be refused whatever the body holds: a flood's refusals then cost no body parsing.
    """

    def __init__(
        self, app: Any, *, settings: Settings, metrics: Metrics | None = None, limiter: Any = None
    ) -> None:
        self.app = app
        self.quotas = Quotas(settings, metrics, limiter=limiter)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope[QUOTAS_KEY] = self.quotas
            principal = scope.get(PRINCIPAL_KEY)
            if principal is not None:
                try:
                    await self.quotas.check_request(principal)
                    if getattr(scope.get(POLICY_KEY), "inference", False):
                        self.quotas.check_room(principal)
                except RateLimited as exc:
                    keep_alive = await drained(scope, receive)
                    await self.quotas.pause(exc)
                    await refusal(scope, exc, keep_alive)(scope, receive, send)
                    return
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _lifespan(self, scope: dict, receive: Any, send: Any) -> None:
        async def sent(message: dict) -> None:
            if message["type"].startswith("lifespan.shutdown"):
                await self.quotas.close()
            await send(message)

        await self.app(scope, receive, sent)


async def drained(scope: dict, receive: Any) -> bool:
    """Read and drop a small body (the connection can then stay open); False when it is big
    or chunked: the answer closes the connection instead of reading it."""
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length", b"0")
    if b"transfer-encoding" in headers or not declared.isdigit() or int(declared) > DRAIN_BYTES:
        return False
    more = int(declared) > 0
    while more:
        message = await receive()
        more = message["type"] == "http.request" and message.get("more_body", False)
    return True


def refusal(scope: dict, exc: RateLimited, keep_alive: bool = False) -> JSONResponse:
    """The 429 in the route's error shape."""
    headers = {} if keep_alive else {"Connection": "close"}
    if getattr(scope.get(POLICY_KEY), "oip", False):  # the Open Inference Protocol's
        headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse({"error": exc.message}, status_code=429, headers=headers)
    return domain_error_response(exc, headers)


ROUTE = "/classify"


# What the route's dependencies are, and the fast path supplies itself: the batcher and the
# settings off the app's state, and the key's verdict (the guard's, with its bearer scheme). A
# dependency added to the route later is not among them: the fast path then stands aside.
SUPPLIED = frozenset(
    {deps.get_batcher, deps.get_settings, deps.require_classify, deps.bearer_scheme}
)


def dependencies(route: Any) -> set[Any]:
    """Every dependency the route runs (its dependencies' own included)."""
    found, todo = set(), list(route.dependant.dependencies)
    while todo:
        dependant = todo.pop()
        found.add(dependant.call)
        todo.extend(dependant.dependencies)
    return found


def covers(route: Any) -> bool:
    """Whether the fast path runs all that this route would: `POST /classify` with no dependency
    but those it supplies (read by app.api.guard into the route's policy)."""
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    methods = getattr(route, "methods", None) or ()
    if path != ROUTE or "POST" not in methods or getattr(route, "dependant", None) is None:
        return False
    return dependencies(route) <= SUPPLIED


class FastClassify:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        state = getattr(scope.get("app"), "state", None)
        if (
            scope["type"] != "http"
            or not getattr(scope.get(POLICY_KEY), "fast", False)  # the route's policy (guard)
            or scope["method"] != "POST"
            or getattr(state, "batcher", None) is None  # starting or stopping: the route says so
            or not _plain_json(scope["headers"])
            or (PRINCIPAL_KEY not in scope and state.keyring.enabled)  # the route checks the key
        ):
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:  # the client left before sending its body
            return
        try:
            request_body = ClassifyRequest.model_validate_json(body)
        except ValidationError:
            request_body = None
        if request_body is None:
            # The route answers it, in the one error shape. Outside the except block, so that
            # an error in the route has no ValidationError (which quoted the body) chained to it.
            await self.app(scope, _replay(body, receive), send)
            return
        request = Request(scope, receive)
        request.state.principal = scope.get(PRINCIPAL_KEY)
        try:
            response = await answer(request, request_body, state.batcher, state.settings)
        except Exception as exc:  # InvalidRequest and the like: the app's handlers render them
            response = await _handled(scope["app"], request, exc)
        await response(scope, receive, send)


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A JSON body of declared length (a chunked one is counted by the guard: the route's).
    JSON as the route decides it: by the first Content-Type header (Starlette's
    `Headers.get`), whatever later ones say."""
    content_type, sized = None, False
    for name, value in headers:
        if name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"content-length":
            sized = True
    if content_type is None or not sized:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


async def _read(receive: Any) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Any:
    """A receive that gives `body` once, then what the client sends (a disconnect)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _handled(app: Any, request: Request, exc: Exception) -> Any:
    """The response the app's exception handlers give `exc` (as the exception middleware)."""
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            response = handler(request, exc)
            return await response if hasattr(response, "__await__") else response
    raise exc
