"""The serving layer's domain errors. Each has a `code`; the api layer maps it to an HTTP status
(`app.api.errors`), so nothing here knows about HTTP."""

from __future__ import annotations


class ServiceError(Exception):
    """A domain error of the service; the api layer maps `code` to an HTTP status."""

    code = "service_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BaseModelLoadError(ServiceError):
    code = "base_model_unavailable"


class TextTooLong(ServiceError):
    code = "text_too_long"


class InferenceFailed(ServiceError):
    code = "inference_failed"


class QueueFull(ServiceError):
    code = "queue_full"
    retry_after_s = 1


class RequestTooLarge(ServiceError):
    code = "validation_error"


class RequestTimeout(ServiceError):
    code = "timeout"


class ServiceStopping(ServiceError):
    code = "unavailable"


class InvalidText(ServiceError):
    """A text the tokenizer refuses (a lone surrogate, ...): that request fails alone."""

    code = "validation_error"


class NonFiniteScores(ServiceError):
    """An adapter gave NaN or infinity for an input (weights stored before uploads were
    checked): a clear 422 for that request rather than scores JSON cannot carry."""

    code = "invalid_adapter"


class InvalidRequest(ServiceError):
    """A request that parses but breaks a service limit (too many inputs, text too long)."""

    code = "validation_error"


class NotReady(ServiceError):
    """The service is starting or stopping (no batcher yet, or not running)."""

    code = "not_ready"


def check_room(n: int, *, waiting: int, cap: int) -> None:
    """Whether `n` more texts x adapters fit a queue of `cap` that holds `waiting`; raises."""
    if n > cap:
        raise RequestTooLarge(
            f"the request holds {n} texts x adapters; at most {cap} fit the queue: split it"
        )
    if waiting + n > cap:
        raise QueueFull(f"the queue is full ({waiting} texts waiting, cap {cap}); retry later")
