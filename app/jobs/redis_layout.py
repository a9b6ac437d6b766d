"""How a job record is laid out in Redis: key names, the field codec (no I/O but TIME), errors.

Under a key prefix (default `adapter-serve:jobs:`)::

    <p>job:<id>          hash, one field per Job field, each value JSON (null for None)
    <p>all               sorted set of every job id, scored by created_at (list, newest first)
    <p>status:<status>   sorted set of the ids in that status, scored by created_at
    <p>leases            sorted set of running job ids, scored by lease_expires_at
    <p>name:<adapter>    the id of the one queued/running job that trains this adapter name
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import redis
from redis.client import Pipeline

from app.jobs.records import JOB_FIELDS, Job, JobStatus, JobStoreUnavailable

DEFAULT_PREFIX = "adapter-serve:jobs:"
log = logging.getLogger("app.jobs")


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    @property
    def all(self) -> str:
        return f"{self.prefix}all"

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def name(self, adapter_name: str) -> str:
        return f"{self.prefix}name:{adapter_name}"

    def status(self, status: JobStatus) -> str:
        return f"{self.prefix}status:{status}"


def new_job(job_id: str, adapter_name: str, config: dict[str, Any], now: float) -> Job:
    values: dict[str, Any] = dict.fromkeys(JOB_FIELDS)
    values.update(
        id=job_id,
        status=JobStatus.QUEUED,
        adapter_name=adapter_name,
        config=config,
        progress={},
        metrics={},
        cancel_requested=False,
        attempts=0,
        created_at=now,
    )
    return decode(encode(values))  # a copy, exactly as get() would return it


def server_time(client: redis.Redis | Pipeline) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def read_job(pipe: Pipeline, key: str) -> Job | None:
    raw = pipe.hgetall(key)
    return decode(raw) if raw else None


def decode_status(raw: str | None) -> JobStatus | None:
    return JobStatus(json.loads(raw)) if raw is not None else None


def encode(values: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in values.items()}


def decode(raw: dict[str, str]) -> Job:
    values = {f: json.loads(raw[f]) if f in raw else None for f in JOB_FIELDS}
    for field in ("config", "progress", "metrics"):
        values[field] = values[field] or {}
    values["status"] = JobStatus(values["status"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    values["attempts"] = values["attempts"] or 0
    return Job(**values)


P = ParamSpec("P")
R = TypeVar("R")


def unavailable(method: Callable[P, R]) -> Callable[P, R]:
    """Turn a Redis connection/server error into JobStoreUnavailable (logged, not leaked)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            log.warning("job records: Redis error in %s: %r", method.__name__, exc)
            raise JobStoreUnavailable("the job records are unavailable; try again later") from exc

    return wrapper
