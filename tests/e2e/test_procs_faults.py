"""`python -m app --api-workers 2` under faults, real processes and real kills: a client that
goes away cancels its work in the engine (counted as cancelled, never forwarded); a key holds
one share of the queue across API processes; routes that need no inference answer while the
engine restarts (SQLite quotas: the key's limits live in the engine); an API process that cannot
start is restarted after pauses that double, and comes back once it can."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import signal
import threading
from pathlib import Path

import httpx
import pytest

from adapters_store import AdapterStore
from tests.support.faults import LONG_TEXT, abandon, metric
from tests.support.procs import bearer, close, pinned, ready, tree, wait_for
from tests.support.server import every_process_ready, running_server

pytestmark = pytest.mark.timeout(300)
ADMIN = "admin-Qw4Er7Ty0Ui3Op6As9Df2Gh5Jk8Lz1Xc"  # no limits: blockers, clients that leave
SHARER = "sharer-Rf3Tg6Yh9Uj2Ik5Ol8Pz1Xs4Cd7Vb0Nm"  # one share of the queue
LIMITED = "limited-Wq1Ae4Sr7Dt0Fy3Gu6Hi9Jo2Kp5Ll8Z classify+download+admin rps=50"
KEYS = f"{ADMIN} classify+admin\n{SHARER} classify\n{LIMITED}\n"
SEEDS = {"a": 1, "b": 2, "c": 3, "d": 4}
# One text per pass on one torch thread: a queue builds up under a small load. A key's share
# of the queue: 0.4 x 2048 = 819 texts (a blocker and the clients that leave, of one key, so
# that they queue in order: 592).
SLOW = {"APP_MAX_BATCH_SIZE": "1", "APP_TORCH_THREADS": "1", "APP_KEY_QUEUE_SHARE": "0.4"}
QUIET = {"APP_EMBEDDED_WORKER": "false", "APP_ACCESS_LOG": "false", "APP_LOG_LEVEL": "warning"}
CANCELLED = 'inference_rejected_total{reason="cancelled"}'
FORWARDED = "inference_batch_size_sum"


@pytest.fixture(scope="module")
def data(tmp_path_factory, factory) -> Path:
    data = tmp_path_factory.mktemp("procs-faults")
    store = AdapterStore(data / "adapters")
    for name, seed in {**SEEDS, "never-read": 9}.items():
        factory.add_to_store(store, name, seed=seed)
    (data / "keys").write_text(KEYS)
    return data


@pytest.fixture(scope="module")
def server(tiny_model_dir, data):
    env = {**QUIET, **SLOW, "APP_API_KEYS_FILE": str(data / "keys")}
    env["APP_QUOTA_REFUSAL_DELAY_S"] = "0"
    with running_server(
        data_dir=data, base_model=tiny_model_dir, env=env, api_workers=2, log_path=data / "s.log"
    ) as s:
        yield s


def scrape(url: str) -> str:
    return httpx.get(url + "/metrics", headers=bearer(ADMIN)).text


def blocking(url: str, key: str, texts: int = 128) -> tuple[threading.Thread, dict]:
    """A request of `texts` long texts x 4 adapters (one pass each) in a thread, once queued."""
    body = {"adapters": list(SEEDS), "inputs": [LONG_TEXT] * texts}
    result: dict = {}

    def post() -> None:
        result["r"] = httpx.post(url + "/classify", json=body, headers=bearer(key), timeout=120)

    worker = threading.Thread(target=post)
    worker.start()
    wait_for(lambda: metric(scrape(url), "inference_queue_depth") > 0, 20)
    return worker, result


def test_clients_that_leave_an_api_process_cancel_their_work_in_the_engine(server):
    before = scrape(server.url)
    worker, result = blocking(server.url, ADMIN)
    gone = {"adapter": "c", "inputs": ["a short text", "another one"] * 4}  # 8 texts each
    leavers = [
        threading.Thread(target=abandon, args=(server.port, gone), kwargs={"headers": who})
        for who in [bearer(ADMIN)] * 10
    ]
    for t in leavers:
        t.start()
    for t in leavers:
        t.join()
    busy = metric(scrape(server.url), "inference_queue_depth")
    worker.join(120)

    def cancelled() -> str | None:
        text = scrape(server.url)
        return text if metric(text, CANCELLED) - metric(before, CANCELLED) >= 10 else None

    after = wait_for(cancelled, 10, 0.05)
    assert busy > 0, "the blocker finished before the clients left: the test proves nothing"
    assert result["r"].status_code == 200, result["r"].text
    assert metric(after, CANCELLED) - metric(before, CANCELLED) == 10
    closed = 'http_requests_total{method="POST",route="/classify",status="499"}'
    assert metric(after, closed) - metric(before, closed) == 10
    # Only the blocker's texts reached a forward pass: the leavers' were dropped in the queue.
    assert metric(after, FORWARDED) - metric(before, FORWARDED) == 4 * 128
    assert metric(after, "inference_queue_depth") == 0


def test_a_cancel_that_comes_with_its_request_leaves_no_work_behind(server, tiny_model_dir):
    """A Classify of a cold adapter (the awaited path: a task) and its Cancel in one message:
    the task is cancelled before it starts; counted as cancelled, nothing read or forwarded."""
    from app.procs import wire
    from app.procs.engine_client import EngineClient
    from bench.engine_load import engine_of

    before = scrape(server.url)

    async def send_both() -> None:
        client = EngineClient(engine_of(server.pid)[1], base_model=str(tiny_model_dir),
                              timeout_s=30)  # fmt: skip
        await client.start()
        try:
            flat, lengths = wire.pack_ids([[0, 713, 2]])
            boot = client._boot or ""
            request = wire.Classify(10**9, flat, lengths, ["never-read"], True, None, boot)
            client._post(request)  # both leave in one frame
            client._post(wire.Cancel(request.id))
            await asyncio.sleep(1.0)
        finally:
            await client.close()

    asyncio.run(send_both())
    after = scrape(server.url)
    assert metric(after, CANCELLED) == metric(before, CANCELLED) + 1
    assert metric(after, FORWARDED) == metric(before, FORWARDED)
    assert metric(after, "adapter_loads_total") == metric(before, "adapter_loads_total")
    assert "never awaited" not in server.logs()


def test_a_key_holds_one_share_of_the_queue_across_api_processes(server):
    clients = pinned(server.url)
    (first,), (second,) = clients.values()
    one = {"adapter": "a", "inputs": ["a short text"]}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # 1,024 texts: over the key's share of 819, taken since the key held none.
        body = {"adapters": list(SEEDS), "inputs": [LONG_TEXT] * 256}
        big = pool.submit(first.post, "/classify", json=body, headers=bearer(SHARER))
        wait_for(
            lambda: (
                metric(second.get("/metrics", headers=bearer(ADMIN)).text, "inference_queue_depth")
                > 0
            ),
            20,
        )
        # The other API process holds none of the key's texts; the engine counts all of them.
        refused = second.post("/classify", json=one, headers=bearer(SHARER))
        early = big.done()
        other_key = second.post("/classify", json=one, headers=bearer(ADMIN))
        assert big.result(timeout=120).status_code == 200
    again = second.post("/classify", json=one, headers=bearer(SHARER))
    close(clients)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_in_flight"
    assert "share of the queue (819 texts)" in refused.json()["error"]["message"]
    assert other_key.status_code == 200 and again.status_code == 200, (other_key, again)
    assert not early, "the big request finished before the refusal: the test proves nothing"


def test_routes_that_need_no_engine_answer_while_it_restarts(server):
    key = bearer(LIMITED.split()[0])
    engine = tree(server.pid)["adapter-serve: engine"]
    os.kill(engine, signal.SIGKILL)
    # Hold the new engine before it loads (it would be back in seconds): the window is ours.
    new = wait_for(lambda: _engine_other_than(server.pid, engine), 10, 0.02)
    os.kill(new, signal.SIGSTOP)
    try:
        wait_for(lambda: ready(server.url) == 503, 10)
        with httpx.Client(base_url=server.url, timeout=30, headers=key) as client:
            codes = {
                "list": client.get("/adapters").status_code,
                "one": client.get("/adapters/a").status_code,
                "archive": client.get("/adapters/a/archive").status_code,
                "versions": client.get("/adapters/a/versions").status_code,
                "jobs": client.get("/train-jobs").status_code,
                "unload": client.post("/adapters/b/unload").status_code,
                "delete": client.delete("/adapters/d").status_code,
                "metrics": client.get("/metrics").status_code,
            }
            listed = client.get("/adapters").json()["adapters"]
            classify = client.post("/classify", json={"adapter": "a", "inputs": ["x"]})
            load = client.post("/adapters/a/load")
    finally:
        os.kill(new, signal.SIGCONT)
    assert codes == dict.fromkeys(codes, 200), codes
    assert not any(a["resident"] for a in listed) and "d" not in {a["name"] for a in listed}
    for refused in (classify, load):  # these need the engine: 503 with the reason
        assert refused.status_code == 503, refused.text
        assert "inference engine" in refused.json()["error"]["message"]
    wait_for(lambda: ready(server.url) == 200, 120, 0.5)
    every_process_ready(server, "/readyz")
    with httpx.Client(base_url=server.url, timeout=30, headers=key) as client:
        assert client.post("/classify", json={"adapter": "a", "inputs": ["x"]}).status_code == 200
        assert client.get("/adapters/d").status_code == 404  # deleted while the engine was down


def test_an_api_process_that_cannot_start_is_restarted_with_backoff(server, data):
    keys = data / "keys"
    good = keys.read_text()
    api = tree(server.pid)["adapter-serve: api 1"]
    keys.write_text(good + "short-key classify\n")  # malformed: an API process cannot start
    try:
        os.kill(api, signal.SIGKILL)
        pauses = wait_for(lambda: _pauses(server.logs(), "API process 1", 4), 60, 0.2)
        # The service keeps answering on the other API process meanwhile.
        assert httpx.get(server.url + "/healthz", headers=bearer(ADMIN)).status_code == 200
    finally:
        keys.write_text(good)
    assert pauses == [0.5, 1.0, 2.0, 4.0], pauses
    wait_for(lambda: len(_answering(server.url)) == 2, 40, 0.5)  # both API processes again


def _answering(url: str, tries: int = 16) -> set[int]:
    """The pids of the API processes that answered `tries` fresh connections."""
    return {int(httpx.get(url + "/healthz").headers["x-served-by"]) for _ in range(tries)}


def _pauses(logs: str, name: str, n: int) -> list[float] | None:
    found = re.findall(rf"{name} \(pid \d+\) died .*? restarting in ([\d.]+) s", logs)
    return [float(p) for p in found[:n]] if len(found) >= n else None


def _engine_other_than(root: int, old: int) -> int | None:
    """The engine process started after `old` (titled once its imports are done)."""
    for title, pid in tree(root).items():
        if pid != old and ("engine_main" in title or title == "adapter-serve: engine"):
            return pid
    return None
