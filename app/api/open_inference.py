"""The Open Inference Protocol (KServe v2, Triton's HTTP API) for text classification.

Each stored adapter is a model: input `text` (BYTES, shape [-1]) and optionally `text_pair`
(sentence pairs; app.api.oip_tensors); the outputs depend on the adapter's task
(app.api.oip_outputs): `labels` (BYTES) and `probabilities` (FP32), both [batch, k] and ranked
best first as /classify ranks them, `logits`, and `over_threshold` (multi-label) or `score`
(regression). Parameters `top_k`, `function_to_apply` and `threshold` as on /classify. Inputs
come as JSON `data` or with the binary tensor extension that `tritonclient.http` uses by default;
outputs are always JSON. Errors have the protocol's shape `{"error": "message"}`, with the status
/classify gives the same error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from adapters_store import StoredAdapter
from app.api.access import ClassifyAdapterAccess
from app.api.classify import CLIENT_CLOSED, ClassifyFailed, ClientDisconnected, classify_texts
from app.api.deps import INFERENCE_ROUTE, BatcherDep, SettingsDep, StoreDep
from app.api.errors import DOMAIN_ERRORS, STATUS_BY_CODE, InvalidRequest, NotReady
from app.api.oip_outputs import output_metadata, parameters, render_outputs, requested_outputs
from app.api.oip_tensors import INPUT, PAIR_INPUT, parse_infer_request
from app.schemas import OIP_INFER_BODY

HEADER_LENGTH = "inference-header-content-length"


def oip_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class OIPRoute(APIRoute):
    """Every error of these routes, dependencies' included, in the protocol's shape (the
    request guard and the quotas read `oip_errors` for the refusals they answer)."""

    oip_errors = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except DOMAIN_ERRORS as exc:
                code = getattr(exc, "code", "error")
                status = STATUS_BY_CODE.get(code, 400)
                response = oip_error(status, getattr(exc, "message", str(exc)))
                response.headers.update(getattr(exc, "headers", None) or {})
                return response
            except RequestValidationError as exc:
                return oip_error(422, "; ".join(e.get("msg", "invalid") for e in exc.errors()))

        return route


router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=OIPRoute)


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict:
    return {"name": "adapter-serve", "version": request.app.version, "extensions": []}


@router.get("/health/live", summary="The process is up")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", summary="The base model is loaded and the batcher runs")
async def ready(request: Request) -> dict:
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is None or not batcher.running:
        raise NotReady("the base model is not loaded yet")
    return {"ready": True}


def _selector(name: str, version: str | None) -> str:
    """A version of the path (a number or an alias) as a store selector: name@version."""
    return name if version in (None, "") else f"{name}@{version}"


async def _stored(store: Any, name: str, version: str | None) -> StoredAdapter:
    return await asyncio.to_thread(store.get, _selector(name, version))


@router.get("/models/{name:adapter}", summary="Model metadata")
@router.get("/models/{name:adapter}/versions/{version}", summary="Model metadata (one version)")
async def model_metadata(
    name: str, store: StoreDep, _access: ClassifyAdapterAccess, version: str | None = None
) -> dict:
    manifest = (await _stored(store, name, version)).manifest
    return {
        "name": name,
        "versions": [str(manifest.version)],
        "platform": "adapters",
        "inputs": [
            {"name": text, "datatype": "BYTES", "shape": [-1]}
            for text in ([INPUT, PAIR_INPUT] if manifest.text_pair else [INPUT])
        ],
        "outputs": output_metadata(manifest.task),
    }


@router.get("/models/{name:adapter}/ready", summary="The adapter exists and can be served")
@router.get("/models/{name:adapter}/versions/{version}/ready", summary="That version is served")
async def model_ready(
    name: str, store: StoreDep, _access: ClassifyAdapterAccess, version: str | None = None
) -> dict:
    await _stored(store, name, version)
    return {"name": name, "ready": True}


INFER_EXTRA = {**INFERENCE_ROUTE, "requestBody": OIP_INFER_BODY}


@router.post(
    "/models/{name:adapter}/infer",
    summary="Classify a BYTES tensor of texts",
    openapi_extra=INFER_EXTRA,
)
@router.post(
    "/models/{name:adapter}/versions/{version}/infer",
    summary="Classify (one version)",
    openapi_extra=INFER_EXTRA,
)
async def infer(
    name: str,
    request: Request,
    store: StoreDep,
    batcher: BatcherDep,
    settings: SettingsDep,
    _access: ClassifyAdapterAccess,
    version: str | None = None,
) -> Response:
    body = await _read_body(request)  # its size is capped by app.api.guard (413)
    payload, texts = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
    params = parameters(payload)
    manifest = (await _stored(store, name, version)).manifest
    wanted = requested_outputs(payload, manifest.task)
    try:
        selector = _selector(name, version)
        result, _ = await classify_texts(
            request, batcher, settings, texts=texts, adapters=[selector]
        )
    except ClassifyFailed as failure:
        return oip_error(failure.status, failure.error.message)
    except ClientDisconnected:
        return oip_error(CLIENT_CLOSED, "the client closed the connection")
    (scored,) = result.results
    outputs = render_outputs(scored, params, wanted)
    answer: dict[str, Any] = {
        "model_name": name,
        "model_version": str(scored.version),
        "outputs": outputs,
    }
    if "id" in payload:
        answer["id"] = payload["id"]
    return JSONResponse(answer)


async def _read_body(request: Request) -> bytes:
    if request.headers.get("content-encoding", "identity") != "identity":
        raise InvalidRequest("compressed requests are not supported; send identity encoding")
    return await request.body()
