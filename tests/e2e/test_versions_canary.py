"""A 90/10 canary against a real server (uvicorn): shares over 2,000 requests, sticky routing
keys, and rollbacks (clearing the split, moving an alias) effective on the next request."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from adapters_store import AdapterStore
from tests.support.server import running_server

REQUESTS = 2_000
KEYS = 200  # the keyed half: 200 keys x 5 requests
CLIENTS = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, factory):
    data = tmp_path_factory.mktemp("canary-data")
    store = AdapterStore(data / "adapters")
    factory.add_to_store(store, "demo", seed=1)  # version 1: the stable one
    factory.add_to_store(store, "demo", seed=2, overwrite=True)  # version 2: the canary
    return data


def _version(client: httpx.Client, adapter: str = "demo", key: str | None = None) -> int:
    headers = {"X-Routing-Key": key} if key is not None else {}
    r = client.post("/classify", json={"adapter": adapter, "inputs": "a text"}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def test_a_90_10_split_sticky_keys_and_instant_rollback(data_dir, tiny_model_dir, tmp_path):
    env = {"APP_MAX_WAIT_MS": "2", "APP_PASS_COST_CALIBRATION": "false"}
    with (
        running_server(
            data_dir=data_dir, base_model=tiny_model_dir, env=env, log_path=tmp_path / "s.log"
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        r = client.put("/adapters/demo/split", json={"weights": {"1": 90, "2": 10}})
        assert r.status_code == 200, r.text

        keyed = [f"user-{i}" for i in range(KEYS) for _ in range(5)]
        calls = [None] * (REQUESTS - len(keyed)) + keyed
        started = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            versions = list(pool.map(lambda key: _version(client, key=key), calls))
        elapsed = time.monotonic() - started

        shares = Counter(versions)
        per_key: dict[str, set[int]] = {}
        for key, version in zip(calls, versions, strict=True):
            if key is not None:
                per_key.setdefault(key, set()).add(version)
        unkeyed = Counter(v for k, v in zip(calls, versions, strict=True) if k is None)
        print(
            f"\n{REQUESTS} requests in {elapsed:.1f} s: v1 {shares[1]}, v2 {shares[2]} "
            f"(unkeyed {unkeyed[1]}/{unkeyed[2]}); keys on v2: "
            f"{sum(s == {2} for s in per_key.values())}/{KEYS}"
        )
        assert set(shares) == {1, 2}
        assert 0.85 * REQUESTS <= shares[1] <= 0.95 * REQUESTS
        assert 0.05 * REQUESTS <= shares[2] <= 0.15 * REQUESTS
        assert all(len(seen) == 1 for seen in per_key.values())  # no key ever flipped

        # Rollback 1: the split pinned to the stable version; the very next request obeys.
        client.put("/adapters/demo/split", json={"weights": {"1": 100}})
        assert [_version(client) for _ in range(20)] == [1] * 20
        # Promotion, then rollback 2: clearing the split serves the latest again.
        client.delete("/adapters/demo/split")
        assert [_version(client) for _ in range(20)] == [2] * 20
        # Rollback 3: an alias moved back; nothing re-uploaded.
        client.put("/adapters/demo/aliases/prod", json={"version": 2})
        assert _version(client, "demo@prod") == 2
        client.put("/adapters/demo/aliases/prod", json={"version": 1})
        assert [_version(client, "demo@prod") for _ in range(20)] == [1] * 20
        # A split over aliases follows an alias that moves.
        client.put("/adapters/demo/aliases/canary", json={"version": 2})
        client.put("/adapters/demo/split", json={"weights": {"prod": 0, "canary": 1}})
        assert _version(client) == 2
        client.put("/adapters/demo/aliases/canary", json={"version": 1})
        assert _version(client) == 1
