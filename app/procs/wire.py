"""The messages between API processes and the engine process (msgspec over ZeroMQ), and the
registry that carries domain errors across by class.

API -> engine, on one DEALER per API process to the engine's ROUTER: `Classify` (token ids
packed as one int32 buffer plus one int32 length per text), `Cancel` (the client went away),
`Call` (an admin operation or a limiter take/release); each names the engine (boot id) it is
meant for, and a restarted engine drops the ones its predecessor never read (their callers have
had their 503 already). Engine -> API: `Answer` (a `Classified`,
the plain dataclasses of app.serving.passes) or `Reply` (a call's result), each either with
its result or a `Failure`; and on a PUB socket a `Beat` every BEAT_S: who the engine is (a boot
id that changes when it restarts) and the base model it serves. What a process sends in one
turn of its event loop travels as one frame, a msgpack array of the messages, encoded and
decoded in one call (`to_engine_turn`, `from_engine_turn`): zmq's Python layer costs a few
microseconds per frame on each side, a noticeable part of the engine's ~50 us a request.

A domain error raised in the engine (a StoreError or ServiceError subclass) travels as its
class's dotted name, code, message and retry hint, and is raised again in the API process as
the same class (`raise_failure`), so the HTTP status and error body stay what one process gives.
"""

from __future__ import annotations

import contextlib
import logging
from array import array
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from adapters_store import StoreError
from app.serving.errors import InferenceFailed, ServiceError
from app.serving.passes import Classified

log = logging.getLogger(__name__)
BEAT_S = 0.2  # the engine's heartbeat period
BEAT_LOST_S = 1.0  # an API process counts the engine as gone after this much silence


class Classify(msgspec.Struct, tag="classify", array_like=True):
    id: int
    ids: bytes  # int32 token ids of every text, back to back
    lengths: bytes  # int32: tokens per text
    adapters: list[str]
    truncation: bool = True
    tenant: str | None = None
    boot: str = ""  # the engine the sender saw: a restarted engine drops what was meant for


class Cancel(msgspec.Struct, tag="cancel", array_like=True):
    id: int


class Call(msgspec.Struct, tag="call", array_like=True):
    id: int
    op: str
    args: list[Any] = []
    boot: str = ""


class Failure(msgspec.Struct, array_like=True):
    type: str  # the error class, module.qualname
    code: str
    message: str
    retry_after: int | None = None


class Answer(msgspec.Struct, tag="answer", array_like=True):
    id: int
    classified: Classified | None = None
    failure: Failure | None = None
    queue_ms: float = 0.0  # also when it failed (the request log's timings)
    inference_ms: float = 0.0


class Reply(msgspec.Struct, tag="reply", array_like=True):
    id: int
    result: Any = None
    failure: Failure | None = None


class Beat(msgspec.Struct, tag="beat", array_like=True):
    boot: str  # changes when the engine restarts
    info: dict[str, Any]  # base_ref, device, dtype, max_length


ToEngine = Classify | Cancel | Call
FromEngine = Answer | Reply | Beat
encode = msgspec.msgpack.Encoder().encode  # one message; a list of them is one turn's frame
to_engine = msgspec.msgpack.Decoder(ToEngine).decode
from_engine = msgspec.msgpack.Decoder(FromEngine).decode
_to_engine_turn = msgspec.msgpack.Decoder(list[ToEngine]).decode
_from_engine_turn = msgspec.msgpack.Decoder(list[FromEngine]).decode
_raw_turn = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode


def encode_turn(messages: list, refused: Callable[[Any, Exception], Any]) -> bytes:
    """One frame of `messages`. One that cannot be encoded is replaced by what
    `refused(message, error)` returns (None: left out), so it fails alone, as it would have
    sent alone."""
    try:
        return encode(messages)
    except Exception:  # found again below, message by message
        pass
    kept = []
    for message in messages:
        try:
            encode(message)
        except Exception as exc:  # handed to `refused`
            message = refused(message, exc)
        if message is not None:
            kept.append(message)
    return encode(kept)


def failed_in_place(reply: Answer | Reply, exc: Exception) -> Answer | Reply:
    """An engine reply that cannot be encoded (a bug) answers its caller with an error."""
    log.error("an engine reply could not be encoded", exc_info=exc)
    failure = failure_of(InferenceFailed("the engine's answer could not be sent; see its log"))
    return type(reply)(reply.id, failure=failure)


def to_engine_turn(frame: bytes) -> tuple[list[ToEngine], int]:
    """The messages of one frame (`encode` of a list: what a process sent in one turn of its
    loop) and how many of them were malformed and left out."""
    return _turn(frame, _to_engine_turn, to_engine)


def from_engine_turn(frame: bytes) -> tuple[list[FromEngine], int]:
    return _turn(frame, _from_engine_turn, from_engine)


def _turn(frame: bytes, whole: Any, one: Any) -> tuple[list, int]:
    try:
        return whole(frame), 0
    except msgspec.DecodeError:  # one bad message: the others still count
        pass
    try:
        raws = _raw_turn(frame)
    except msgspec.DecodeError:  # not a list at all
        return [], 1
    messages = []
    for raw in raws:
        with contextlib.suppress(msgspec.DecodeError):
            messages.append(one(raw))
    return messages, len(raws) - len(messages)


# ---- token ids ---------------------------------------------------------------------------
def pack_ids(ids: Sequence[Sequence[int]]) -> tuple[bytes, bytes]:
    """Token ids per text -> (one int32 buffer, int32 lengths)."""
    flat = array("i")
    for row in ids:
        flat.extend(row)
    return flat.tobytes(), array("i", map(len, ids)).tobytes()


def unpack_ids(flat: bytes, lengths: bytes) -> list[list[int]]:
    values = memoryview(flat).cast("i").tolist()
    if len(lengths) == 4:  # one text (most requests)
        return [values]
    rows, start = [], 0
    for n in memoryview(lengths).cast("i").tolist():
        rows.append(values[start : start + n])
        start += n
    return rows


# ---- errors --------------------------------------------------------------------------------
class RemoteFailure(ServiceError):
    """An engine error of a class this process does not know: its code and message still say
    what happened (the status follows the code)."""

    def __init__(self, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def error_classes() -> dict[str, type[Exception]]:
    """Every StoreError and ServiceError subclass imported so far, by dotted name."""
    found: dict[str, type[Exception]] = {}
    stack: list[type[Exception]] = [StoreError, ServiceError]
    while stack:
        cls = stack.pop()
        found[_dotted(cls)] = cls
        stack.extend(cls.__subclasses__())
    return found


def failure_of(exc: BaseException) -> Failure:
    retry = getattr(exc, "retry_after_s", None)
    message = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", "inference_failed")
    return Failure(_dotted(type(exc)), code, message, None if retry is None else int(retry))


def error_of(failure: Failure) -> Exception:
    """The error `failure` describes, as its own class when this process knows it."""
    cls = error_classes().get(failure.type)
    if cls is None:
        return RemoteFailure(failure.code, failure.message, failure.retry_after)
    exc = cls.__new__(cls)
    Exception.__init__(exc, failure.message)
    exc.message = failure.message  # type: ignore[attr-defined]
    if getattr(exc, "code", None) != failure.code:  # an instance's own code (RemoteError)
        exc.code = failure.code  # type: ignore[attr-defined]
    if failure.retry_after is not None:
        exc.retry_after_s = failure.retry_after  # type: ignore[attr-defined]
    return exc
