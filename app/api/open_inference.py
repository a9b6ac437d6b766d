"""The Open Inference Protocol (KServe v2, Triton's HTTP API) for text classification.

Each stored adapter is a model: input `text` (BYTES, shape [-1]) and optionally `text_pair`
(sentence pairs; app.inference.oip_tensors); the outputs depend on the adapter's task
(below): `labels` (BYTES) and `probabilities` (FP32), both [batch, k] and ranked
best first as /classify ranks them, `logits`, and `over_threshold` (multi-label) or `score`
(regression). Parameters `top_k`, `function_to_apply` and `threshold` as on /classify. Inputs
come as JSON `data` or with the binary tensor extension that `tritonclient.http` uses by default;
outputs are always JSON. Errors have the protocol's shape `{"error": "message"}`, with the status
/classify gives the same error.

| task | outputs (datatype, shape) |
|---|---|
| single_label | `labels` BYTES [n, k], `probabilities` FP32 [n, k], `logits` FP32 [n, labels] |
| multi_label | the same, and `over_threshold` BOOL [n, k] |
| regression | `score` FP32 [n, 1], `logits` FP32 [n, 1] |

`labels`, `probabilities` and `over_threshold` are ranked best first (`k`: every label, or the
parameter `top_k`); `probabilities` holds the task's scores (softmax; sigmoid for multi-label)
or those of the parameter `function_to_apply` (softmax | sigmoid | none); `over_threshold`
says whether each ranked label's sigmoid reaches its threshold (the parameter `threshold`, else
the adapter's own). `logits` are the head's raw outputs in label order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from adapters_store import StoredAdapter, rendering
from app.api.classify import CLIENT_CLOSED, ClientDisconnected, classify_texts
from app.api.deps import (
    INFERENCE_ROUTE,
    ClassifierDep,
    ClassifyAdapterAccess,
    SettingsDep,
    StoreDep,
)
from app.api.errors import DOMAIN_ERRORS, STATUS_BY_CODE, InvalidRequest
from app.inference.oip_tensors import INPUT, PAIR_INPUT, parse_infer_request
from app.inference.service import ClassifyFailed, check_ready
from app.schemas import OIP_INFER_BODY
from app.serving.passes import AdapterResult

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
    check_ready(getattr(request.app.state, "batcher", None))
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
    classifier: ClassifierDep,
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
            request, classifier, settings, texts=texts, adapters=[selector]
        )
    except ClassifyFailed as failure:
        return oip_error(STATUS_BY_CODE.get(failure.error.code, 400), failure.error.message)
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


# ---- outputs, per task of the adapter ---------------------------------------------------------
_RANKED = {"labels": "BYTES", "probabilities": "FP32"}
OUTPUTS: dict[str, dict[str, str]] = {
    "single_label": {**_RANKED, "logits": "FP32"},
    "multi_label": {**_RANKED, "over_threshold": "BOOL", "logits": "FP32"},
    "regression": {"score": "FP32", "logits": "FP32"},
}
FUNCTIONS = ("softmax", "sigmoid", "none")


def outputs_of(task: str) -> dict[str, str]:
    return OUTPUTS.get(task, OUTPUTS["single_label"])


def output_metadata(task: str) -> list[dict]:
    shape = [-1, 1] if task == "regression" else [-1, -1]
    return [{"name": n, "datatype": d, "shape": shape} for n, d in outputs_of(task).items()]


def requested_outputs(payload: dict, task: str) -> list[str] | None:
    """The output names asked for (None: every output of the task); 422 for unknown ones."""
    requested = payload.get("outputs")
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise InvalidRequest("'outputs' must be a list of objects")
    names = [o.get("name") for o in requested]
    known = outputs_of(task)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidRequest(
            f"unknown output {unknown[0]!r}; this adapter's outputs are {', '.join(known)}"
        )
    return names


def parameters(payload: dict) -> dict[str, Any]:
    """The request parameters we read: top_k, function_to_apply, threshold (checked)."""
    params = payload.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidRequest("'parameters' must be an object")
    top_k = params.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise InvalidRequest("parameter top_k must be a positive integer")
    function = params.get("function_to_apply")
    if function is not None and function not in FUNCTIONS:
        raise InvalidRequest(f"parameter function_to_apply must be one of {', '.join(FUNCTIONS)}")
    threshold = params.get("threshold")
    if threshold is not None and (
        not isinstance(threshold, int | float) or isinstance(threshold, bool)
    ):
        raise InvalidRequest("parameter threshold must be a number")
    if threshold is not None and not 0 <= threshold <= 1:
        raise InvalidRequest("parameter threshold must be between 0 and 1")
    return {"top_k": top_k, "function": function, "threshold": threshold}


def columns(result: AdapterResult, params: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Every output of the result's task, as rows (adapters_store.rendering's answer)."""
    head = result.head
    answer = rendering.render(
        head,
        result.logits,
        function=params["function"],
        top_k=params["top_k"],
        threshold=params["threshold"],
    )
    out: dict[str, list[list[Any]]] = {"logits": answer.logits}
    if head.task == "regression":
        out["score"] = [[number] for number in answer.numbers()]
        return out
    out["labels"] = [[head.label(i) for i in order] for order in answer.orders]
    pairs = list(zip(answer.scores, answer.orders, strict=True))
    out["probabilities"] = [[row[i] for i in order] for row, order in pairs]
    if answer.chosen is not None:
        chosen = [set(c) for c in answer.chosen]
        marks = zip(answer.orders, chosen, strict=True)
        out["over_threshold"] = [[i in c for i in o] for o, c in marks]
    return out


def render_outputs(
    result: AdapterResult, params: dict[str, Any], wanted: list[str] | None
) -> list[dict]:
    """The response's `outputs`: the wanted ones (every one when None) of the result's task."""
    available = outputs_of(result.head.task)
    names = list(available) if wanted is None else wanted
    missing = [n for n in names if n not in available]
    if missing:  # the adapter was replaced by one of another task while the request ran
        raise InvalidRequest(f"output {missing[0]!r} is not one of this adapter's outputs now")
    data = columns(result, params)
    return [
        {
            "name": name,
            "datatype": available[name],
            "shape": [len(data[name]), len(data[name][0])],
            "data": [v for row in data[name] for v in row],
        }
        for name in names
    ]
