"""The Huey queue that carries training-job ids from the API to the workers.

`SqliteHuey` in the data directory by default (no extra server); `APP_REDIS_URL` switches to
`RedisHuey` so workers can run elsewhere. Both use the same task and the same code path.

Messages are JSON, not Huey's default pickle: a worker must never unpickle bytes that anyone
with access to the queue (a Redis server, a file) could have written. A message carries only
a job id; the job's config lives in the job record (app.jobs: SQLite, or Redis beside the
queue when `APP_REDIS_URL` is set).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.api import TaskWrapper
from huey.registry import Message
from huey.serializer import Serializer

from app.config.views import BackendView

QUEUE_NAME = "adapter-serve-training"
TASK_NAME = "train_job"


class JsonSerializer(Serializer):
    """Huey serializer for task messages made of JSON values, datetimes and nested messages."""

    def _serialize(self, data: Any) -> bytes:
        return json.dumps(_encode(data), separators=(",", ":")).encode("utf-8")

    def _deserialize(self, data: bytes) -> Any:
        return _decode(json.loads(bytes(data).decode("utf-8")))


def _encode(value: Any) -> Any:
    if isinstance(value, Message):
        return {"__message__": {k: _encode(v) for k, v in value._asdict().items()}}
    if isinstance(value, dt.datetime):
        return {"__datetime__": value.isoformat()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("queue messages need string keys")
        return {k: _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot put a {type(value).__name__} on the job queue")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__message__"}:
            fields = {k: _decode(v) for k, v in value["__message__"].items()}
            return Message(**{k: v for k, v in fields.items() if k in Message._fields})
        if set(value) == {"__datetime__"}:
            return dt.datetime.fromisoformat(value["__datetime__"])
        return {k: _decode(v) for k, v in value.items()}
    return value


def _redis_huey(backend: BackendView, **common: Any) -> Huey:
    return RedisHuey(QUEUE_NAME, url=backend.redis_url, **common)


def _sqlite_huey(backend: BackendView, **common: Any) -> Huey:
    backend.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(backend.sqlite_path("queue")), **common)


HUEYS: dict[str, Callable[..., Huey]] = {"redis": _redis_huey, "sqlite": _sqlite_huey}


def open_huey(backend: BackendView) -> Huey:
    """The queue of this backend (the kind chosen once, in `BackendView`)."""
    common: dict[str, Any] = {"results": False, "serializer": JsonSerializer(), "utc": True}
    return HUEYS[backend.kind](backend, **common)


class JobQueue:
    """Enqueue job ids; in a worker, `handler` is what runs for each dequeued id."""

    def __init__(self, huey: Huey, handler: Callable[[str], None] | None = None) -> None:
        self.huey = huey
        self._handler = handler

        # Defined here so that the task's registry key ("app.jobs.queue.train_job") is the same
        # in the API (no handler) and in the workers.
        def train_job(job_id: str) -> None:
            if self._handler is None:
                raise RuntimeError(f"job {job_id} reached a queue without a worker handler")
            self._handler(job_id)

        self._task: TaskWrapper = huey.task(name=TASK_NAME)(train_job)

    def enqueue(self, job_id: str) -> None:
        self._task(job_id)

    def pending(self) -> int:
        return self.huey.pending_count()

    def close(self) -> None:
        storage_close = getattr(self.huey.storage, "close", None)
        if callable(storage_close):
            storage_close()
