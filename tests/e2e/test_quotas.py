"""Per-key quotas and fair shares on real servers (issue 22, item 2): 429 with Retry-After,
a flood that meets its own limit while a light key keeps its latency, and limits shared by two
server processes through a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis

from adapters_store import AdapterStore
from app.security import key_id
from bench.fairness import FLOOD_KEY_ENV, light
from tests.support.jobs import redis_or_skip
from tests.support.server import REPO, process_env, running_server

pytestmark = pytest.mark.timeout(300)
ADAPTER = "sent-00"
FLOOD = "flood-Qm7xK2pL9vR4tY8wZ3nB6cD1fG5hJ0sA"
LIGHT = "light-Tk4Lp8Qz2Xw7Rv1Ny5Mb9Hc3Jd6Gf0S"
RPS = "rps-Vb5Nm1Qa8Zs3Xd7Cf2Vg6Bh9Nj4Mk0Lxx"
TPS = "tps-Hn3Bv8Cx1Zl6Kj4Gf9Ds2Ap7Qw5Er0Tyy"
HELD = "held-Pq9Wo2Ie7Ru4Ty1Ul6Aj3Sk8Dh5Fg0Zzz"
SLOW = "slow-Lk2Jh7Gf4Ds9Aq1Wz6Xc3Vb8Nm5Po0Iuu"
KEYS = f"""# flood: no options (only the share of the queue); light: none either
{FLOOD} classify
{LIGHT} classify
{RPS} classify rps=5
{TPS} classify+admin tps=2
{HELD} classify inflight=4
{SLOW} classify rps=0.1
"""
ENV = {"APP_EMBEDDED_WORKER": "false", "APP_ACCESS_LOG": "false", "APP_LOG_LEVEL": "warning"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def body(n: int = 1, adapter: str = ADAPTER) -> dict:
    return {"adapter": adapter, "inputs": ["a good film"] * n}


@pytest.fixture(scope="module")
def data(tmp_path_factory, factory) -> Path:
    data = tmp_path_factory.mktemp("quotas")
    factory.add_to_store(AdapterStore(data / "adapters"), ADAPTER, seed=3)
    (data / "keys").write_text(KEYS)
    return data


def server_env(data: Path, **extra: str) -> dict[str, str]:
    return {**ENV, "APP_API_KEYS_FILE": str(data / "keys"), **extra}


def test_rates_answer_429_with_retry_after(tiny_model_dir, data):
    with running_server(data_dir=data, base_model=tiny_model_dir, env=server_env(data)) as srv:
        client = httpx.Client(base_url=srv.url, timeout=30)
        listed = client.get("/adapters", headers=bearer(SLOW))
        refused = client.post("/classify", json=body(), headers=bearer(SLOW))
        assert listed.status_code == 200  # every route that needs a key counts
        assert refused.status_code == 429, refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 10  # one request per 10 s
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "0.1 requests per second" in refused.json()["error"]["message"]
        v2 = client.post(f"/v2/models/{ADAPTER}/infer", json={}, headers=bearer(SLOW))
        assert v2.status_code == 429 and isinstance(v2.json()["error"], str)  # OIP's shape
        assert client.post("/classify", json=body(), headers=bearer(LIGHT)).status_code == 200

        assert client.post("/classify", json=body(6), headers=bearer(TPS)).status_code == 200
        over = client.post(f"/models/{ADAPTER}", json={"inputs": "x"}, headers=bearer(TPS))
        assert over.status_code == 429, over.text  # 6 texts at 2/s: 2.5 s before the next
        assert 1 <= int(over.headers["retry-after"]) <= 3
        assert over.json()["error"]["code"] == "rate_limited"  # every protocol counts texts
        metrics = client.get("/metrics", headers=bearer(TPS)).text
        assert 'inference_rejected_total{reason="rate_limited"} 3.0' in metrics


def _flood(port: int, key: str, clients: int, seconds: float) -> subprocess.Popen:
    """The bench's flood (bench/fairness.py) in its own process: 4 texts per request."""
    args = [sys.executable, "-m", "bench.fairness", "flood", "--port", str(port)]
    args += ["--flood-clients", str(clients), "--seconds", str(seconds), "--flood-texts", "4"]
    env = process_env({FLOOD_KEY_ENV: key})
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)


def test_a_flood_meets_its_share_of_the_queue_and_a_light_key_is_served(tiny_model_dir, data):
    """32 clients of one key (4 texts each, retrying at once) against a queue of 64 texts:
    the flood gets 429 at its share (32 texts); the light key gets no error, and its requests
    are served in the next batch rather than behind the flood's backlog, some of them between
    two layers of a flood's pass (app/serving/preempt.py). Before: no 429; the queue filled and
    both keys got 503s."""
    # Passes of 16: the flood's share (32 texts) runs as several, so light requests arrive
    # while one runs (with the default 64 a batch holds the whole share and the light key's
    # rows, and its pass runs first: nothing to nest).
    env = server_env(data, APP_MAX_QUEUE="64", APP_KEY_QUEUE_SHARE="0.5", APP_MAX_BATCH_SIZE="16")
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as srv:
        asyncio.run(light(srv.port, LIGHT, count=10))  # warm-up
        alone, alone_errors = asyncio.run(light(srv.port, LIGHT, count=30))
        flood = _flood(srv.port, FLOOD, clients=32, seconds=90)
        try:
            time.sleep(2.0)
            under, under_errors = asyncio.run(light(srv.port, LIGHT, count=30))
        finally:
            flood.terminate()  # it stops and prints what it got
            out, _ = flood.communicate(timeout=60)
        flood_statuses = json.loads(out.strip().splitlines()[-1])
        shown = httpx.get(srv.url + "/metrics", headers=bearer(LIGHT), timeout=30).text
    nested = re.search(r"(?m)^inference_nested_passes_total (\S+)", shown)
    assert nested and float(nested.group(1)) > 0  # light passes ran inside the flood's
    assert not alone_errors and not under_errors, (alone_errors, under_errors)
    assert flood_statuses.get("429", 0) > 0 and flood_statuses.get("200", 0) > 0, flood_statuses
    assert "503" not in flood_statuses, flood_statuses
    median_alone, median_under = alone[len(alone) // 2], under[len(under) // 2]
    # Loose (2 cores shared with other jobs): the goal's 2x is measured by bench/fairness.py.
    assert median_under <= 10 * median_alone + 1.0, (alone, under)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_or_skip(tmp_path_factory.mktemp("redis")) as url:
        yield url


async def _hammer(urls: list[str], key: str, seconds: float, clients: int, n: int) -> Counter:
    """`clients` clients, each alternating between the servers, back to back."""
    end, statuses = time.monotonic() + seconds, Counter()

    async def one(index: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            turn = index
            while time.monotonic() < end:
                url = urls[turn % len(urls)]
                turn += 1
                r = await client.post(url + "/classify", json=body(n), headers=bearer(key))
                statuses[(url, r.status_code)] += 1

    await asyncio.gather(*(one(i) for i in range(clients)))
    return statuses


def _quota_keys(key: str) -> list[str]:
    return [f"adapter-serve:quota:{{{key_id(key)}}}:{name}" for name in ("held", "leases")]


def _held(redis_url: str, key: str) -> int:
    return int(redis.Redis.from_url(redis_url).get(_quota_keys(key)[0]) or 0)


@pytest.mark.redis
def test_two_servers_share_one_limit_through_redis(tiny_model_dir, data, redis_url, tmp_path):
    env = server_env(data, APP_REDIS_URL=redis_url)
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    with (
        running_server(data_dir=data, base_model=tiny_model_dir, env=env, log_path=logs[0]) as a,
        running_server(data_dir=data, base_model=tiny_model_dir, env=env, log_path=logs[1]) as b,
    ):
        urls = [a.url, b.url]
        for url in urls:  # warm: the adapter loaded on both
            assert (
                httpx.post(url + "/classify", json=body(), headers=bearer(LIGHT)).status_code == 200
            )
        # One request per 10 s for both servers together: each alone would allow one.
        first = httpx.post(a.url + "/classify", json=body(), headers=bearer(SLOW), timeout=30)
        second = httpx.post(b.url + "/classify", json=body(), headers=bearer(SLOW), timeout=30)
        assert first.status_code == 200, first.text
        assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(second.headers["retry-after"]) <= 10

        # Texts in flight held by another process (as the script writes them) block both.
        held_key, leases_key = _quota_keys(HELD)
        client = redis.Redis.from_url(redis_url)
        seconds, micros = client.time()
        client.zadd(leases_key, {"elsewhere|4": seconds * 1000 + micros // 1000 + 60_000})
        client.set(held_key, 4)
        for url in urls:
            r = httpx.post(url + "/classify", json=body(), headers=bearer(HELD), timeout=30)
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_in_flight"
        client.delete(held_key, leases_key)

        statuses = asyncio.run(_hammer(urls, HELD, seconds=2.0, clients=6, n=2))
        assert sum(v for (_, s), v in statuses.items() if s == 429) > 0, statuses
        assert sum(v for (_, s), v in statuses.items() if s == 200) > 0, statuses
        assert _held(redis_url, HELD) == 0  # every hold given back

        missing = httpx.post(a.url + "/classify", json=body(4, "nope"), headers=bearer(HELD))
        assert missing.status_code == 404
        assert _held(redis_url, HELD) == 0  # released after a failure too

        async def go_away() -> None:  # clients that leave before their answer
            async with httpx.AsyncClient(timeout=0.002) as client:
                for url in urls * 10:
                    with contextlib.suppress(httpx.TimeoutException):
                        await client.post(url + "/classify", json=body(4), headers=bearer(HELD))

        asyncio.run(go_away())
        deadline = time.monotonic() + 10
        while _held(redis_url, HELD) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _held(redis_url, HELD) == 0
        ok = httpx.post(b.url + "/classify", json=body(4), headers=bearer(HELD), timeout=30)
        assert ok.status_code == 200, ok.text
