"""The Open Inference Protocol (KServe v2, Triton's HTTP API) for text classification.

Each stored adapter is a model: input `text` (BYTES, shape [-1]), outputs `labels` (BYTES) and
`probabilities` (FP32), both [batch, k] and ranked best first as /classify ranks them (`k` = every
label, or the request parameter `top_k`). Inputs come as JSON `data` or with the binary tensor
extension that `tritonclient.http` uses by default; outputs are always JSON. Errors have the
protocol's shape `{"error": "message"}`, with the status /classify gives the same error.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from adapters_store import StoredAdapter
from app.api.classify import CLIENT_CLOSED, ClassifyFailed, ClientDisconnected, classify_texts
from app.api.deps import BatcherDep, ClassifyAccess, SettingsDep, StoreDep
from app.api.errors import DOMAIN_ERRORS, STATUS_BY_CODE, InvalidRequest, NotReady
from app.schemas import OIP_INFER_BODY
from app.serving.passes import rank

INPUT = "text"
OUTPUTS = {"labels": "BYTES", "probabilities": "FP32"}
HEADER_LENGTH = "inference-header-content-length"


def oip_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class OIPRoute(APIRoute):
    """Every error of these routes, dependencies' included, in the protocol's shape."""

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


@router.get("/models/{name}", summary="Model metadata")
@router.get("/models/{name}/versions/{version}", summary="Model metadata (one version)")
async def model_metadata(
    name: str, store: StoreDep, _access: ClassifyAccess, version: str | None = None
) -> dict:
    manifest = (await _stored(store, name, version)).manifest
    return {
        "name": name,
        "versions": [str(manifest.version)],
        "platform": "adapters",
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": out, "datatype": kind, "shape": [-1, -1]} for out, kind in OUTPUTS.items()
        ],
    }


@router.get("/models/{name}/ready", summary="The adapter exists and can be served")
@router.get("/models/{name}/versions/{version}/ready", summary="That version is served")
async def model_ready(
    name: str, store: StoreDep, _access: ClassifyAccess, version: str | None = None
) -> dict:
    await _stored(store, name, version)
    return {"name": name, "ready": True}


INFER_EXTRA = {"requestBody": OIP_INFER_BODY}


@router.post(
    "/models/{name}/infer", summary="Classify a BYTES tensor of texts", openapi_extra=INFER_EXTRA
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Classify (one version)",
    openapi_extra=INFER_EXTRA,
)
async def infer(
    name: str,
    request: Request,
    store: StoreDep,
    batcher: BatcherDep,
    settings: SettingsDep,
    _access: ClassifyAccess,
    version: str | None = None,
) -> Response:
    body = await _read_body(request)  # its size is capped by app.api.guard (413)
    payload, texts = parse_infer_request(body, request.headers.get(HEADER_LENGTH))
    wanted = _requested_outputs(payload)
    top_k = _top_k(payload)
    await _stored(store, name, version)
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
    ranked = [rank(p, scored.labels, top_k) for p in scored.probs]
    columns = {
        "labels": [[r["label"] for r in row] for row in ranked],
        "probabilities": [[r["score"] for r in row] for row in ranked],
    }
    outputs = [
        {
            "name": out,
            "datatype": OUTPUTS[out],
            "shape": [len(ranked), len(ranked[0])],
            "data": [v for row in columns[out] for v in row],
        }
        for out in wanted
    ]
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


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[dict, list[str]]:
    """The JSON part and the texts of the one BYTES input (JSON data or binary extension)."""
    split = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidRequest(f"bad Inference-Header-Content-Length {header_length!r}")
        split = int(header_length)
    try:
        payload = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request's JSON is nested too deeply") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InvalidRequest("the request needs an 'inputs' list")
    inputs = payload["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != INPUT:
        raise InvalidRequest(f"give exactly one input, named {INPUT!r}")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise InvalidRequest(f"input {INPUT!r} must have datatype BYTES")
    texts = _tensor_texts(tensor, body[split:])
    shape = tensor.get("shape")
    count = _elements(shape)
    if count != len(texts) or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidRequest(f"input shape {shape} does not fit {len(texts)} texts ([n] or [n, 1])")
    if not texts or any(not t for t in texts):
        raise InvalidRequest("the input holds no texts, or an empty one")
    return payload, texts


def _elements(shape: Any) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidRequest("input 'shape' must be a list of non-negative integers")
    count = 1
    for dim in shape:
        count *= dim
    return count


def _tensor_texts(tensor: dict, binary: bytes) -> list[str]:
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is None:
        data = tensor.get("data")
        flat = _flatten(data, depth=2) if isinstance(data, list) else None
        if flat is None or not all(isinstance(t, str) for t in flat):
            raise InvalidRequest(f"input {INPUT!r} needs 'data': a list of strings")
        return flat
    if not isinstance(size, int) or size != len(binary):
        raise InvalidRequest("binary_data_size does not match the binary part of the request")
    return decode_bytes_tensor(binary)


def _flatten(data: list, depth: int) -> list | None:
    """The items of `data` nested at most `depth` lists deep ([n] or [n, 1]), else None."""
    out: list = []
    for item in data:
        if not isinstance(item, list):
            out.append(item)
            continue
        inner = _flatten(item, depth - 1) if depth > 1 else None
        if inner is None:
            return None
        out.extend(inner)
    return out


def decode_bytes_tensor(raw: bytes) -> list[str]:
    """Triton's BYTES serialisation: each element a 4-byte little-endian length, then bytes."""
    texts, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidRequest("truncated BYTES tensor")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidRequest("truncated BYTES tensor")
        try:
            texts.append(raw[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidRequest("a text of the BYTES tensor is not UTF-8") from None
        offset += length
    return texts


def _requested_outputs(payload: dict) -> list[str]:
    requested = payload.get("outputs")
    if requested is None:
        return list(OUTPUTS)
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise InvalidRequest("'outputs' must be a list of objects")
    names = [o.get("name") for o in requested]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise InvalidRequest(f"unknown output {unknown[0]!r}; outputs are {', '.join(OUTPUTS)}")
    return names


def _top_k(payload: dict) -> int | None:
    top_k = (payload.get("parameters") or {}).get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise InvalidRequest("parameter top_k must be a positive integer")
    return top_k
