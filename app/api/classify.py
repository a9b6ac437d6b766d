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
from app.api.deps import BatcherDep, ClassifyAccess, SettingsDep
from app.api.errors import (
    STATUS_BY_CODE,
    InvalidRequest,
    domain_error_response,
    error_response,
    error_responses,
)
from app.api.quotas import admitted, tenant
from app.config import Settings
from app.schemas import ClassifyRequest, ClassifyResponse, MultiClassifyResponse
from app.serving.batcher import Batcher, Timing
from app.serving.errors import ServiceError
from app.serving.passes import Classified, rank

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
    """Await `work`; cancel it and raise ClientDisconnected if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # we are cancelled ourselves (e.g. a forced shutdown)
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})  # let the batcher drop the request's queued texts
        raise ClientDisconnected
    return task.result()


def timing_headers(timing: Timing) -> dict[str, str]:
    return {
        "x-queue-time": f"{timing.queue_ms:.3f}",
        "x-inference-time": f"{timing.inference_ms:.3f}",
    }


def failed(exc: StoreError | ServiceError, timing: Timing) -> JSONResponse:
    """The one error shape (as app.api.errors answers it) plus the timing headers."""
    return domain_error_response(exc, timing_headers(timing))


def check_texts(texts: list[str], settings: Settings) -> list[str]:
    """The service limits of every classify route (inputs, characters per text and in all)."""
    if len(texts) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"{len(texts)} inputs; at most {settings.max_inputs_per_request} per request"
        )
    for index, text in enumerate(texts):
        if len(text) > settings.max_text_chars:
            raise InvalidRequest(
                f"inputs[{index}] has {len(text)} characters; the limit is "
                f"{settings.max_text_chars}"
            )
    total = sum(map(len, texts))
    if total > settings.max_request_chars:
        raise InvalidRequest(
            f"the inputs hold {total} characters; at most {settings.max_request_chars} per "
            "request: split it"
        )
    return texts


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
    texts: list[str],
    adapters: list[str],
    truncation: bool = True,
) -> tuple[Classified, Timing]:
    """The one classification path of every protocol: limits, the batcher, disconnects.

    Raises ClassifyFailed (domain errors, limits included) or ClientDisconnected.
    """
    timing = Timing()
    try:
        check_texts(texts, settings)
        async with admitted(request, len(texts) * len(adapters)):  # the key's quotas: 429
            work = batcher.classify(
                texts=texts,
                adapters=adapters,
                truncation=truncation,
                timing=timing,
                tenant=tenant(request),
            )
            return await unless_disconnected(request, work), timing
    except (StoreError, ServiceError) as exc:
        raise ClassifyFailed(exc, timing) from None


def client_closed() -> JSONResponse:
    return error_response(CLIENT_CLOSED, "client_closed", "the client closed the connection")


def render(result: Classified, body: ClassifyRequest) -> dict:
    items = [
        {
            "adapter": r.adapter,
            "version": r.version,
            "predictions": [rank(p, r.labels, body.top_k) for p in r.probs],
        }
        for r in result.results
    ]
    return items[0] if body.adapters is None else {"results": items}


@router.post(
    "/classify",
    response_model=ClassifyResponse | MultiClassifyResponse,
    responses=error_responses(404, 422, 503, 504),
    summary="Classify one text or a list with an adapter (or several)",
)
async def classify(
    request: Request,
    body: ClassifyRequest,
    batcher: BatcherDep,
    settings: SettingsDep,
    _access: ClassifyAccess,
) -> JSONResponse:
    """Scores are softmax probabilities, best first; `top_k: null` returns every label.

    Headers `x-queue-time` and `x-inference-time` give the milliseconds spent waiting for a
    batch and in the forward pass; errors from the batcher (404, 503, 504, ...) carry them too.
    """
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
