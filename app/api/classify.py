"""POST /classify: texts -> pipeline-shaped predictions, through the dynamic batcher.

A client that disconnects while its request waits cancels it: the batcher drops its queued
texts before any forward pass (counted as `inference_rejected_total{reason="cancelled"}`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from adapters_store import StoreError
from app.api.access import check_adapters
from app.api.deps import INFERENCE_ROUTE, BatcherDep, ClassifyAccess, SettingsDep
from app.api.errors import (
    STATUS_BY_CODE,
    InvalidRequest,
    domain_error_response,
    error_response,
    error_responses,
)
from app.api.quotas import admitted, tenant
from app.api.versions import as_requested, resolve_selectors
from app.config import Settings
from app.observability.context import classifying
from app.schemas import ClassifyRequest, ClassifyResponse, MultiClassifyResponse
from app.serving import tasks
from app.serving.batcher import Batcher, Timing
from app.serving.engine import Text
from app.serving.errors import ServiceError
from app.serving.passes import AdapterResult, Classified

router = APIRouter(tags=["classify"])
T = TypeVar("T")
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


def check_texts(texts: list[Text], settings: Settings) -> list[Text]:
    """The service limits of every classify route (inputs, characters per input and in all;
    a pair's characters are both texts')."""
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


class ClassifyFailed(Exception):
    """A classification that ended in a domain error; each protocol renders it its own way."""

    def __init__(self, error: StoreError | ServiceError, timing: Timing) -> None:
        super().__init__(str(error))
        self.error, self.timing = error, timing

    @property
    def status(self) -> int:
        return STATUS_BY_CODE.get(self.error.code, 400)


async def classify_texts(
    request: Request,
    batcher: Batcher,
    settings: Settings,
    *,
    texts: list[Text],
    adapters: list[str],
    truncation: bool = True,
) -> tuple[Classified, Timing]:
    """The one classification path of every protocol: limits, the batcher, disconnects.

    Raises ClassifyFailed (domain errors, limits included) or ClientDisconnected.
    """
    timing = Timing()
    with classifying(request.scope, adapters, len(texts), timing) as seen:  # logs and traces
        try:
            check_texts(texts, settings)
            check_adapters(request, adapters)  # outside the key's patterns: 404 (app.api.access)
            serving = resolve_selectors(request, adapters)  # name@alias, splits -> name@N
            async with admitted(request, len(texts) * len(adapters)):  # the key's quotas: 429
                work = batcher.classify(
                    texts=texts,
                    adapters=serving,
                    truncation=truncation,
                    timing=timing,
                    tenant=tenant(request),
                )
                result = as_requested(await unless_disconnected(request, work), adapters)
        except (StoreError, ServiceError) as exc:
            raise ClassifyFailed(exc, timing) from None
        seen.answered(result)
    return result, timing


def client_closed() -> JSONResponse:
    return error_response(CLIENT_CLOSED, "client_closed", "the client closed the connection")


def render(result: Classified, body: ClassifyRequest) -> dict:
    items = [_render_one(r, body) for r in result.results]
    return items[0] if body.adapters is None else {"results": items}


def _render_one(result: AdapterResult, body: ClassifyRequest) -> dict:
    """One adapter's answer, shaped by its task (app.serving.tasks)."""
    head, function = result.head, body.function_to_apply
    rows = [tasks.scores(head, logits, function) for logits in result.logits]
    item: dict = {"adapter": result.adapter, "version": result.version, "task": head.task}
    if head.task == "regression":
        item["predictions"] = [{"score": row[0]} for row in rows]
        return item
    top_k = body.top_k_for(head.task)
    item["predictions"] = [tasks.rank(row, head.labels, top_k) for row in rows]
    if head.task == "multi_label":
        item["labels"] = [
            [head.label(i) for i in tasks.over_threshold(head, logits, body.threshold)]
            for logits in result.logits
        ]
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
    batcher: BatcherDep,
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
    return await answer(request, body, batcher, settings)


async def answer(
    request: Request, body: ClassifyRequest, batcher: Batcher, settings: Settings
) -> JSONResponse:
    """The route's work, also run by the fast path (app.api.fast_path) on the same request."""
    try:
        result, timing = await classify_texts(
            request,
            batcher,
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
