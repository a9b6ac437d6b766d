"""The one choice of job-record backend: Redis when `APP_REDIS_URL` is set, else SQLite.

This small module imports the interface and both backends, so that neither backend nor the
interface ever imports the other side (no import circle).
"""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.jobs.records import JobStore
from app.jobs.records_redis import RedisJobStore
from app.jobs.records_sqlite import SqliteJobStore


def jobs_db_path(settings: Settings) -> Path:
    return settings.data_dir / "jobs.sqlite3"


def open_job_store(settings: Settings) -> JobStore:
    """The job records for these settings: Redis when `redis_url` is set, else SQLite."""
    if settings.redis_url:
        return RedisJobStore(settings.redis_url)
    return SqliteJobStore(jobs_db_path(settings))
