"""The job records' backends by kind (`BackendView.kind`: redis or sqlite).

The choice itself is made once, in `app.config.views.BackendView`; this small module maps the
kind to a backend. It imports the interface and both backends, so that neither backend nor the
interface ever imports the other side (no import circle).
"""

from __future__ import annotations

from collections.abc import Callable

from app.config.views import BackendView
from app.jobs.records import JobStore
from app.jobs.records_redis import RedisJobStore
from app.jobs.records_sqlite import SqliteJobStore

RECORDS: dict[str, Callable[[BackendView], JobStore]] = {
    "redis": lambda backend: RedisJobStore(str(backend.redis_url)),
    "sqlite": lambda backend: SqliteJobStore(backend.sqlite_path("jobs")),
}


def open_records(backend: BackendView) -> JobStore:
    """The job records of this backend."""
    return RECORDS[backend.kind](backend)
