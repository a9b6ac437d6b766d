"""One exception boundary: domain errors -> 4xx/5xx with `{"error": {"code", "message"}}`.

Domain errors (store, service, auth) carry a stable `code`; `STATUS_BY_CODE` maps it to the
HTTP status (add a line here for a new error). Unknown exceptions are logged with their stack
and answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters_store import StoreError
from app.jobs.records import JobError
from app.schemas import ErrorResponse
from app.security import AuthError
from app.serving.errors import InvalidRequest as InvalidRequest  # the protocols' 422
from app.serving.errors import NotReady as NotReady  # and 503 (raised by app.inference too)
from app.serving.errors import ServiceError

log = logging.getLogger(__name__)

DOMAIN_ERRORS: tuple[type[Exception], ...] = (StoreError, ServiceError, AuthError, JobError)

STATUS_BY_CODE: dict[str, int] = {
    # store
    "invalid_name": 422,
    "adapter_not_found": 404,
    "adapter_exists": 409,
    "invalid_route": 422,
    "version_in_use": 409,
    "invalid_adapter": 422,
    "archive_rejected": 422,
    "archive_too_large": 413,
    "base_model_mismatch": 422,
    "adapter_too_large": 422,
    "hub_error": 422,
    "hub_unavailable": 503,
    # service
    "validation_error": 422,
    "text_too_long": 422,
    "payload_too_large": 413,
    "queue_full": 503,
    "rate_limited": 429,  # a key over its requests/s or texts/s (app.tenancy.quotas)
    "too_many_in_flight": 429,  # a key at its texts in flight or its share of the queue
    "cache_full": 503,
    "unavailable": 503,
    "not_ready": 503,
    "base_model_unavailable": 503,
    "timeout": 504,
    "inference_failed": 500,
    # training jobs (app.jobs, training.errors codes)
    "job_not_found": 404,
    "job_conflict": 409,
    "invalid_training_config": 422,
    "invalid_training_input": 422,
    "dataset_not_found": 422,
    "dataset_forbidden": 422,
    "queue_unavailable": 503,
    # auth
    "unauthorized": 401,
    "forbidden": 403,
}

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def domain_error_response(exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    """A domain error in the one shape, with its status, Retry-After and its own headers."""
    code = getattr(exc, "code", "error")
    status = STATUS_BY_CODE.get(code, 400)
    headers = {**(headers or {}), **(getattr(exc, "headers", None) or {})}
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    message = getattr(exc, "message", None) or str(exc)
    return error_response(status, code, message, headers or None)


def _domain(request: Request, exc: Exception) -> JSONResponse:
    return domain_error_response(exc)


def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(422, "validation_error", "; ".join(parts) or "invalid request")


def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if isinstance(exc.__cause__, RecursionError):  # FastAPI's 400 for a body json can't parse
        message = "the request's JSON is nested too deeply"
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    for error_type in DOMAIN_ERRORS:
        app.add_exception_handler(error_type, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


_DESCRIPTIONS = {
    401: "Missing or invalid API key",
    403: "The API key lacks the needed scope",
    404: "Unknown adapter",
    409: "Name conflict",
    413: "Upload too large",
    422: "Invalid request",
    429: "The API key is over a quota (see Retry-After)",
    503: "Queue full or not ready (see Retry-After)",
    504: "Timed out",
}


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` entries for these statuses, all in the one error shape."""
    return {
        status: {"model": ErrorResponse, "description": _DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }
