"""Backpressure against the real server (tiny model, uvicorn on 127.0.0.1): a full queue is 503
with Retry-After, a request over its time is 504 and its work is dropped, a client that goes
away leaves no work behind; timing headers on every /classify answer that reached the route."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from adapters_store import AdapterStore
from tests.support.faults import LONG_TEXT, Golden, abandon, metric
from tests.support.server import running_server
from tests.support.tiny import keyword_dataset

pytestmark = pytest.mark.timeout(180)

SEEDS = {"a": 1, "b": 2, "c": 3, "d": 4}
POOL = [row["text"] for row in keyword_dataset(8, seed=11)]
# One text per forward pass and one torch thread: the queue builds up under a small load.
SLOW = {
    "APP_EMBEDDED_WORKER": "false",
    "APP_ACCESS_LOG": "false",
    "APP_MAX_BATCH_SIZE": "1",
    "APP_TORCH_THREADS": "1",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, factory):
    data = tmp_path_factory.mktemp("faults-data")
    store = AdapterStore(data / "adapters")
    for name, seed in SEEDS.items():
        factory.add_to_store(store, name, seed=seed)
    return data


@pytest.fixture(scope="module")
def golden(tiny_model_dir, factory) -> Golden:
    return Golden(tiny_model_dir, factory, [*POOL, LONG_TEXT]).add(*SEEDS.values())


def _body(adapter: str, texts: list[str]) -> dict:
    return {"adapter": adapter, "inputs": texts, "top_k": None}


def _exact(golden: Golden, adapter: str, texts: list[str], response: httpx.Response) -> bool:
    body = response.json()
    return golden.matches(SEEDS[adapter], texts, body["predictions"])


def _timed(response: httpx.Response) -> tuple[float, float]:
    return float(response.headers["x-queue-time"]), float(response.headers["x-inference-time"])


async def _flood(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.post("/classify", json=b) for b in bodies))


def _settled(client: httpx.Client, name: str, value: float, timeout_s: float = 10.0) -> str:
    """Poll /metrics until sample `name` equals `value`; return the last metrics text."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = client.get("/metrics").text
        if metric(text, name) == value or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_full_queue_is_503_with_retry_after_and_the_rest_is_exact(
    tiny_model_dir, data_dir, golden, tmp_path
):
    env = {**SLOW, "APP_MAX_QUEUE": "4"}
    bodies = [_body("a", [LONG_TEXT, POOL[i % len(POOL)]]) for i in range(80)]
    with (
        running_server(
            data_dir=data_dir, base_model=tiny_model_dir, env=env, log_path=tmp_path / "s.log"
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        responses = asyncio.run(_flood(server.url, bodies))
        metrics = _settled(client, "inference_queue_depth", 0)
        after = client.post("/classify", json=_body("a", POOL[:2]))
        unknown = client.post("/classify", json=_body("nope", POOL[:1]))

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    full = [r for r in responses if r.status_code == 503]
    assert full and len(full) < len(responses), f"{len(full)} of {len(responses)} refused"
    for r in full:
        assert r.json()["error"]["code"] == "queue_full"
        assert r.headers["retry-after"] == "1"
        assert _timed(r) == (0.0, 0.0)  # refused before queueing: no wait, no forward
    for body, r in zip(bodies, responses, strict=True):
        if r.status_code == 200:
            assert _exact(golden, "a", body["inputs"], r)
            assert _timed(r)[1] > 0
    assert metric(metrics, 'inference_rejected_total{reason="queue_full"}') == len(full)
    assert metric(metrics, "inference_queue_depth") == 0
    assert after.status_code == 200 and _exact(golden, "a", POOL[:2], after)
    assert unknown.status_code == 404 and _timed(unknown) == (0.0, 0.0)


def test_request_over_its_time_is_504_and_its_queued_work_is_dropped(
    tiny_model_dir, data_dir, golden, tmp_path
):
    env = {**SLOW, "APP_REQUEST_TIMEOUT_S": "0.3"}
    big = [LONG_TEXT] * 256  # 256 forward passes of ~3 ms each: well over 0.3 s
    with (
        running_server(
            data_dir=data_dir, base_model=tiny_model_dir, env=env, log_path=tmp_path / "s.log"
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        started = time.monotonic()
        slow = client.post("/classify", json=_body("b", big))
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # nothing of it may still run now
        metrics = client.get("/metrics").text
        quick = client.post("/classify", json=_body("b", POOL[:1]))

    assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
    assert elapsed < 3.0, f"504 took {elapsed:.1f} s for a 0.3 s timeout"
    queued_ms, inference_ms = _timed(slow)
    assert queued_ms > 0 and inference_ms >= 0
    forwarded = metric(metrics, "inference_batch_size_sum")
    assert 0 < forwarded < len(big), f"{forwarded} of {len(big)} texts were still forwarded"
    assert metric(metrics, 'inference_rejected_total{reason="timeout"}') >= 1
    assert metric(metrics, "inference_queue_depth") == 0
    assert quick.status_code == 200, quick.text
    assert _exact(golden, "b", POOL[:1], quick)


def test_clients_that_disconnect_leave_no_work_behind(tiny_model_dir, data_dir, golden, tmp_path):
    blocker = {"adapters": list(SEEDS), "inputs": [LONG_TEXT] * 128, "top_k": None}
    gone = [_body("c", POOL) for _ in range(10)]  # 80 texts that must never be forwarded
    with (
        running_server(
            data_dir=data_dir, base_model=tiny_model_dir, env=SLOW, log_path=tmp_path / "s.log"
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        result: dict = {}
        worker = threading.Thread(
            target=lambda: result.update(r=client.post("/classify", json=blocker))
        )
        worker.start()  # 512 forward passes: the inference thread is busy for a while
        assert _wait_queued(client), "the blocking request never queued"
        leavers = [threading.Thread(target=abandon, args=(server.port, b)) for b in gone]
        for t in leavers:
            t.start()
        for t in leavers:
            t.join()
        busy = metric(client.get("/metrics").text, "inference_queue_depth")
        worker.join(60)
        metrics = _settled(client, 'inference_rejected_total{reason="cancelled"}', len(gone))
        after = client.post("/classify", json=_body("c", POOL[:3]))

    assert busy > 0, "the blocker finished before the clients left: the test proves nothing"
    response = result["r"]
    assert response.status_code == 200, response.text
    for item in response.json()["results"]:
        seed = SEEDS[item["adapter"]]
        assert golden.matches(seed, blocker["inputs"], item["predictions"])
    assert metric(metrics, 'inference_rejected_total{reason="cancelled"}') == len(gone)
    closed = 'http_requests_total{method="POST",route="/classify",status="499"}'
    assert metric(metrics, closed) == len(gone)
    # Only the blocker's texts reached a forward pass; the queue is empty again.
    assert metric(metrics, "inference_batch_size_sum") == len(SEEDS) * len(blocker["inputs"])
    assert metric(metrics, "inference_queue_depth") == 0
    assert after.status_code == 200 and _exact(golden, "c", POOL[:3], after)


def _wait_queued(client: httpx.Client, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metric(client.get("/metrics").text, "inference_queue_depth") > 0:
            return True
        time.sleep(0.01)
    return False
