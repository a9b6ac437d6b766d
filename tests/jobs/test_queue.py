"""The Huey queue: JSON messages (never pickle), the same task key in API and worker."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import pytest
from huey.registry import Message

from app.bootstrap import build_huey, queue_db_path
from app.config import Settings
from app.jobs.queue import JobQueue, JsonSerializer


def test_serializer_round_trip_with_nested_message_and_datetimes():
    inner = Message(id="2", name="x.y", args=["a"], kwargs={})
    eta = dt.datetime(2024, 1, 2, 3, 4, 5, 600)
    msg = Message(id="1", name="x.y", eta=eta, args=("job",), kwargs={"k": [1, 2.5, None]})
    msg = msg._replace(on_complete=inner)
    ser = JsonSerializer()
    data = ser.serialize(msg)
    assert json.loads(data)  # plain JSON on the wire
    back = ser.deserialize(data)
    assert back.eta == eta and back.on_complete.id == "2"
    assert list(back.args) == ["job"] and back.kwargs == {"k": [1, 2.5, None]}


def test_serializer_refuses_objects():
    with pytest.raises(TypeError, match="cannot put a"):
        JsonSerializer().serialize(Message(id="1", args=(object(),), kwargs={}))


def test_sqlite_queue_from_api_to_worker(tmp_path):
    settings = Settings(data_dir=tmp_path)
    api = JobQueue(build_huey(settings))
    api.enqueue("job-1")
    api.enqueue("job-2")
    assert api.pending() == 2
    raw = sqlite3.connect(queue_db_path(settings)).execute("select data from task").fetchall()
    assert all(json.loads(bytes(r[0])) for r in raw)  # JSON rows, nothing to unpickle

    seen: list[str] = []
    worker = JobQueue(build_huey(settings), handler=seen.append)
    for _ in range(2):
        task = worker.huey.dequeue()
        worker.huey.execute(task)
    assert seen == ["job-1", "job-2"]
    assert worker.pending() == 0


def test_api_side_queue_cannot_run_jobs(tmp_path):
    queue = JobQueue(build_huey(Settings(data_dir=tmp_path)))
    queue.enqueue("j")
    task = queue.huey.dequeue()
    with pytest.raises(RuntimeError, match="without a worker handler"):
        task.execute()


def test_redis_url_selects_redis_huey(tmp_path):
    from huey import RedisHuey

    huey = build_huey(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(huey, RedisHuey)  # no connection is made until used
