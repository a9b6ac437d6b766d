"""The native protocol, POST /classify: texts -> pipeline-shaped predictions (app.inference's
use case, rendered by adapters_store.rendering); and the HTTP half every protocol shares: the
caller read off the request, the disconnect watch, the timing headers.

A client that disconnects while its request waits cancels it: the batcher drops its queued
texts before any forward pass (counted as `inference_rejected_total{reason="cancelled"}`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from adapters_store import StoreError, rendering
from app.api.deps import INFERENCE_ROUTE, QUOTAS_KEY, ClassifierDep, ClassifyAccess, SettingsDep
from app.api.errors import domain_error_response, error_response, error_responses
from app.config import Settings
from app.inference import service
from app.inference.classifier import Classifier
from app.inference.service import Caller, ClassifyFailed
from app.schemas import ClassifyRequest, ClassifyResponse, MultiClassifyResponse
from app.serving.engine import Text
from app.serving.errors import ServiceError
from app.serving.passes import AdapterResult, Classified
from app.serving.planning import Timing

router = APIRouter(tags=["classify"])
T = TypeVar("T")
ROUTING_HEADER = "x-routing-key"  # sticky traffic splits (app.inference.versions)
CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, the logs and metrics do


class ClientDisconnected(Exception):
    """The client closed the connection before its result was ready."""


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the body is read: receive() waits for that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await `work` in this task; if the client leaves first, cancel it (the batcher drops the
    request's queued texts) and raise ClientDisconnected. One watcher task, no other hop."""
    me = asyncio.current_task()
    assert me is not None
    left = False

    async def watch() -> None:
        nonlocal left
        await _disconnected(request)
        left = True
        me.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if left and me.uncancel() == 0:  # only our own cancel, not a shutdown's
            raise ClientDisconnected from None
        raise
    finally:
        watcher.cancel()


def timing_headers(timing: Timing) -> dict[str, str]:
    return {
        "x-queue-time": f"{timing.queue_ms:.3f}",
        "x-inference-time": f"{timing.inference_ms:.3f}",
    }


def failed(exc: StoreError | ServiceError, timing: Timing) -> JSONResponse:
    """The one error shape (as app.api.errors answers it) plus the timing headers."""
    return domain_error_response(exc, timing_headers(timing))


def caller(request: Request) -> Caller:
    """Who asks, read off the request: its key (set by its scope dependency), the key's quotas
    (app.api.edge), the routing key of sticky splits; waits end when the client leaves."""
    return Caller(
        principal=getattr(request.state, "principal", None),
        quotas=request.scope.get(QUOTAS_KEY),
        routing_key=request.headers.get(ROUTING_HEADER),
        record=request.scope,
        wait=lambda work: unless_disconnected(request, work),
    )


async def classify_texts(
    request: Request,
    classifier: Classifier,
    settings: Settings,
    *,
    texts: list[Text],
    adapters: list[str],
    truncation: bool = True,
) -> tuple[Classified, Timing]:
    """app.inference's use case for an HTTP request (every protocol of app.api calls it).

    Raises ClassifyFailed (domain errors, limits included) or ClientDisconnected.
    """
    return await service.classify(
        classifier,
        request.app.state.store,
        settings,
        caller(request),
        texts=texts,
        adapters=adapters,
        truncation=truncation,
    )


def client_closed() -> JSONResponse:
    return error_response(CLIENT_CLOSED, "client_closed", "the client closed the connection")


def render(result: Classified, body: ClassifyRequest) -> dict:
    items = [_render_one(r, body) for r in result.results]
    return items[0] if body.adapters is None else {"results": items}


def _render_one(result: AdapterResult, body: ClassifyRequest) -> dict:
    """One adapter's answer, shaped by its task (adapters_store.rendering)."""
    head = result.head
    answer = rendering.render(
        head,
        result.logits,
        function=body.function_to_apply,
        top_k=body.top_k_for(head.task),
        threshold=body.threshold,
    )
    item: dict = {"adapter": result.adapter, "version": result.version, "task": head.task}
    if head.task == "regression":
        item["predictions"] = [{"score": number} for number in answer.numbers()]
        return item
    item["predictions"] = answer.predictions()
    if head.task == "multi_label":
        item["labels"] = answer.labels_over_threshold()
    return item


@router.post(
    "/classify",
    response_model=ClassifyResponse | MultiClassifyResponse,
    responses=error_responses(404, 422, 503, 504),
    summary="Classify one text or a list with an adapter (or several)",
    openapi_extra=INFERENCE_ROUTE,
)
async def classify(
    request: Request,
    body: ClassifyRequest,
    classifier: ClassifierDep,
    settings: SettingsDep,
    _access: ClassifyAccess,
) -> JSONResponse:
    """Each input is a text or `{"text", "text_pair"}`. Answers follow the adapter's task:
    single-label, softmax scores best first (`top_k: null`: every label); multi-label, sigmoid
    scores of every label and `labels` at or over threshold (`threshold` overrides the stored
    ones); regression, `{"score"}`. `function_to_apply` (softmax, sigmoid, none = logits)
    replaces the task's function for the scores.

    Headers `x-queue-time` and `x-inference-time` give the milliseconds spent waiting for a
    batch and in the forward pass; errors from the batcher (404, 503, 504, ...) carry them too.
    """
    return await answer(request, body, classifier, settings)


async def answer(
    request: Request, body: ClassifyRequest, classifier: Classifier, settings: Settings
) -> JSONResponse:
    """The route's work, also run by the fast path (app.api.edge) on the same request."""
    try:
        result, timing = await classify_texts(
            request,
            classifier,
            settings,
            texts=body.texts,
            adapters=body.adapter_names,
            truncation=body.truncation,
        )
    except ClassifyFailed as failure:
        return failed(failure.error, failure.timing)
    except ClientDisconnected:
        return client_closed()
    # Built by us from validated data: skip re-validating it against the response model.
    return JSONResponse(render(result, body), headers=timing_headers(timing))
