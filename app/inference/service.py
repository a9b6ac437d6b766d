"""The one classification path of every protocol, with plain values (no HTTP):

    limits -> access -> versions -> admission -> the Classifier -> renaming

Protocols (app.api) decode a request into a `Caller` and the inputs, call `classify`, and
encode the `Classified` (rendered per task by adapters_store.rendering) or the `ClassifyFailed`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from adapters_store import AdapterStore, StoreError
from app.config import Settings
from app.inference.classifier import Classifier
from app.inference.versions import as_requested, resolve_selectors
from app.observability.context import classifying
from app.security import Principal
from app.serving.engine import Text
from app.serving.errors import InvalidRequest, NotReady, ServiceError
from app.serving.passes import Classified
from app.serving.planning import Timing
from app.tenancy.access import check_adapters, patterns_of
from app.tenancy.principal import tenant
from app.tenancy.quotas import Quotas, admitted


async def _as_is(work: Awaitable[Any]) -> Any:
    return await work


@dataclass(frozen=True)
class Caller:
    """Who asks, as the protocol found it: the key (None without keys), its quotas, the routing
    key of sticky splits, where the request's record lives (app.observability.context), and how
    to wait for the classifier (a protocol that watches its client wraps the wait)."""

    principal: Principal | None = None
    quotas: Quotas | None = None
    routing_key: str | None = None
    record: dict = field(default_factory=dict)
    wait: Callable[[Awaitable[Any]], Awaitable[Any]] = _as_is


class ClassifyFailed(Exception):
    """A classification that ended in a domain error; each protocol renders it its own way."""

    def __init__(self, error: StoreError | ServiceError, timing: Timing) -> None:
        super().__init__(str(error))
        self.error, self.timing = error, timing


async def classify(
    classifier: Classifier,
    store: AdapterStore,
    settings: Settings,
    caller: Caller,
    *,
    texts: list[Text],
    adapters: list[str],
    truncation: bool = True,
) -> tuple[Classified, Timing]:
    """Classify `texts` with each of `adapters` (selectors) for `caller`.

    Raises ClassifyFailed (domain errors, limits included) or what `caller.wait` raises.
    """
    timing = Timing()
    with classifying(caller.record, adapters, len(texts), timing) as seen:  # logs and traces
        try:
            check_ready(classifier)  # while it warms up: 503, as while the model loads
            check_texts(texts, settings)
            check_adapters(patterns_of(caller.principal), adapters)  # outside the patterns: 404
            serving = resolve_selectors(store, adapters, caller.routing_key)  # name@alias -> @N
            n = len(texts) * len(adapters)
            async with admitted(caller.quotas, caller.principal, n):  # the key's quotas: 429
                work = classifier.classify(
                    texts=texts,
                    adapters=serving,
                    truncation=truncation,
                    timing=timing,
                    tenant=tenant(caller.principal),
                )
                result = as_requested(await caller.wait(work), adapters)
        except (StoreError, ServiceError) as exc:
            raise ClassifyFailed(exc, timing) from None
        seen.answered(result)
    return result, timing


def check_ready(classifier: Classifier | None) -> Classifier:
    """The classifier when it takes requests; NotReady (503) while the service starts or stops.
    Readiness of every protocol (/readyz, /v2/health/ready) is this one decision."""
    if classifier is None or not classifier.running:  # a classifier may say why (app.procs)
        raise NotReady(
            getattr(classifier, "down_reason", None)
            or "the base model is not loaded or warmed up yet"
        )
    return classifier


def check_texts(texts: list[Text], settings: Settings) -> list[Text]:
    """The service limits of every protocol (inputs, characters per input and in all; a pair's
    characters are both texts')."""
    if len(texts) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"{len(texts)} inputs; at most {settings.max_inputs_per_request} per request"
        )
    sizes = [chars(text) for text in texts]
    for index, size in enumerate(sizes):
        if size > settings.max_text_chars:
            raise InvalidRequest(
                f"inputs[{index}] has {size} characters; the limit is {settings.max_text_chars}"
            )
    total = sum(sizes)
    if total > settings.max_request_chars:
        raise InvalidRequest(
            f"the inputs hold {total} characters; at most {settings.max_request_chars} per "
            "request: split it"
        )
    return texts


def chars(text: Text) -> int:
    return len(text) if isinstance(text, str) else len(text[0]) + len(text[1])
