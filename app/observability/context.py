"""What the service knows about the request being served: its id, key id, adapters, timings.

`RequestObserver` (app.observability.middleware) makes one `RequestContext` per HTTP request,
keeps it in the ASGI scope (`SCOPE_KEY`) and in a context variable, so that every log line
emitted while the request is served can name it (`RequestFilter`, app.observability.logs).
The classification path fills in what it learns with `classifying(...)`.

What a request context holds is recorded (log lines, span attributes, metric labels), so it
holds only bounded values: a request id of at most 128 safe characters, and adapter names that
are valid selectors (`recorded`: anything else, however long, is the placeholder `<invalid>`),
checked when they are noted, before any validation of the request itself.
"""

from __future__ import annotations

import os
import re
import time
from contextvars import ContextVar
from functools import cache
from typing import Any

from adapters_store.errors import StoreError
from adapters_store.routing import parse

SCOPE_KEY = "adapter_serve.request"
REQUEST_ID_HEADER = b"x-request-id"
# A client's id is kept when it is 1..128 of these characters (UUIDs, hex, W3C trace ids,
# ULIDs, "svc-42:7"); anything else (spaces, quotes, control characters) is replaced.
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")

INVALID = "<invalid>"  # what a log line, a span or a metric label holds for an invalid name
# The longest valid selector: namespace/name (64 + 1 + 64), '@' and an alias (32) or a version.
MAX_SELECTOR_CHARS = 64 + 1 + 64 + 1 + 32
MAX_ADAPTERS = 16  # a request names at most this many (app.schemas); more are not recorded
MAX_FIELD_CHARS = 256  # any one recorded string value, after which it is cut (`capped`)

current: ContextVar[RequestContext | None] = ContextVar("adapter_serve_request", default=None)


@cache
def principal_key() -> str:
    """Where the request guard leaves the request's principal (imported late: the training
    worker formats its log lines with app.observability.logs without the HTTP stack)."""
    from app.tenancy.principal import PRINCIPAL_KEY

    return PRINCIPAL_KEY


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is safe to log and echo, else a new random one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


def recorded(selector: object) -> str:
    """`selector` when it is a valid adapter selector (`name`, `team/name@3`), else INVALID."""
    if not isinstance(selector, str) or len(selector) > MAX_SELECTOR_CHARS:
        return INVALID
    try:
        parse(selector)
    except StoreError:
        return INVALID
    return selector


def capped(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """`text`, cut to `limit` characters (marked by a trailing '...') when longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RequestContext:
    """One HTTP request as the logs, metrics and traces see it (no key, no text, no path)."""

    __slots__ = (
        "adapters",
        "classified_ns",
        "classify_ns",
        "request_id",
        "scope",
        "span",
        "started_ns",
        "status",
        "texts",
        "timing",
        "trace_id",
        "versions",
    )

    def __init__(self, request_id: str, scope: dict) -> None:
        self.request_id = request_id
        self.scope = scope
        self.started_ns = time.time_ns()
        self.status = 500  # until the app sends a response
        self.trace_id: str | None = None
        self.span: Any = None
        self.adapters: list[str] | None = None  # set by a classification
        self.versions: list[int] | None = None
        self.texts = 0
        self.timing: Any = None  # app.serving.planning.Timing
        self.classify_ns = self.classified_ns = 0

    @property
    def key_id(self) -> str | None:
        """The short id of the request's key (app.security), once the guard has checked it."""
        principal = self.scope.get(principal_key())
        return None if principal is None else principal.key_id


class Classifying:
    """`with classifying(scope, adapters, n_texts, timing) as seen: ... seen.answered(result)`:
    notes the adapters, the number of texts and when the batcher had the request."""

    __slots__ = ("context",)

    def __init__(self, context: RequestContext | None) -> None:
        self.context = context

    def __enter__(self) -> Classifying:
        if self.context is not None:
            self.context.classify_ns = time.time_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.context is not None:
            self.context.classified_ns = time.time_ns()

    def answered(self, classified: Any) -> None:
        """The versions that answered (an app.serving.passes.Classified)."""
        if self.context is not None:
            self.context.versions = [r.version for r in classified.results]


def classifying(scope: dict, adapters: list[str], texts: int, timing: Any) -> Classifying:
    context = scope.get(SCOPE_KEY)
    if context is not None:
        context.adapters = [recorded(name) for name in adapters[:MAX_ADAPTERS]]
        context.texts, context.timing = texts, timing
    return Classifying(context)
