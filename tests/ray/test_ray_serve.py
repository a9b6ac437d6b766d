"""The service on Ray Serve: a real two-node Ray cluster on 127.0.0.1, tiny model, CPU only.

2 replicas with room for 4 adapters each, 8 adapters in the store. Tests run in file order:
the replace and kill tests come last since they change the cluster.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from adapters_store import AdapterStore
from adapters_store.rendering import softmax
from tests.ray.conftest import ADAPTERS, TEXTS, Reference
from tests.support.adapters import AdapterFactory
from tests.support.ray_cluster import ServeCluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
TOL = 1e-5


def _scores(result: dict) -> list[dict[str, float]]:
    return [{p["label"]: p["score"] for p in row} for row in result["predictions"]]


def _check(result: dict, expected: list[list[float]], labels: dict[int, str]) -> None:
    for got, want in zip(_scores(result), expected, strict=True):
        assert set(got) == set(labels.values())
        for index, label in labels.items():
            assert abs(got[label] - want[index]) <= TOL, (result["adapter"], got, want)


def _body(i: int) -> dict:
    texts = [TEXTS[(i + k) % len(TEXTS)] for k in range(1 + i % 3)]
    if i % 10 == 9:  # one request in ten asks three adapters at once: split, then joined
        names = [ADAPTERS[(i + k) % len(ADAPTERS)] for k in range(3)]
        return {"adapters": names, "inputs": texts, "top_k": None}
    return {"adapter": ADAPTERS[i % len(ADAPTERS)], "inputs": texts, "top_k": None}


async def _send(url: str, bodies: list[dict]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.post("/classify", json=b) for b in bodies))


def _expected(store: AdapterStore, reference: Reference) -> dict[tuple[str, str], list[float]]:
    return {
        (name, text): probs
        for name in ADAPTERS
        for text, probs in zip(TEXTS, reference.probs(store, name, TEXTS), strict=True)
    }


def _check_reply(body: dict, reply: dict, expected: dict, labels: dict[int, str]) -> None:
    parts = reply["results"] if "adapters" in body else [reply]
    names = body.get("adapters") or [body["adapter"]]
    assert [p["adapter"] for p in parts] == names
    for part in parts:
        want = [expected[(part["adapter"], text)] for text in body["inputs"]]
        _check(part, want, labels)


def test_400_concurrent_requests_match_in_process_and_stay_affine(
    ray_serve: ServeCluster, ray_store: AdapterStore, reference: Reference
) -> None:
    expected = _expected(ray_store, reference)
    labels = ray_store.get(ADAPTERS[0]).manifest.labels
    bodies = [_body(i) for i in range(400)]
    started = time.monotonic()
    replies = asyncio.run(_send(ray_serve.url, bodies))
    elapsed = time.monotonic() - started
    assert [r.status_code for r in replies] == [200] * 400, {r.text for r in replies}
    for body, reply in zip(bodies, replies, strict=True):
        _check_reply(body, reply.json(), expected, labels)
    stats = ray_serve.replica_stats()
    loads = {rid: s["adapter_loads"] for rid, s in stats.items()}
    print(f"400 requests in {elapsed:.1f} s; adapter loads per replica: {loads}")
    # Each adapter loads at least once; affinity keeps it near that (no load per request).
    assert len(ADAPTERS) <= sum(loads.values()) <= 2 * len(ADAPTERS), loads
    assert all(len(s["resident"]) <= 4 for s in stats.values())


def test_reads_health_and_errors_through_the_ingress(ray_serve: ServeCluster) -> None:
    with httpx.Client(base_url=ray_serve.url, timeout=60) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["details"]["device"] == "cpu"
        listed = client.get("/adapters").json()["adapters"]
        assert sorted(a["name"] for a in listed) == ADAPTERS
        assert client.get("/adapters/a3").json()["name"] == "a3"
        missing = client.post("/classify", json={"adapter": "nope", "inputs": "x"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "adapter_not_found"
        some_missing = client.post("/classify", json={"adapters": ["a1", "nope"], "inputs": "x"})
        assert some_missing.status_code == 404
        write = client.delete("/adapters/a1")
        assert write.status_code == 405 and "API process" in write.json()["error"]["message"]
        assert client.get("/adapters/a1").status_code == 200  # still there
        assert client.post("/train-jobs", json={}).status_code == 405


def _answers_from_every_replica(cluster: ServeCluster, name: str) -> dict[str, dict]:
    """Classify with `name` on each replica (calls without routing land on both)."""
    seen: dict[str, dict] = {}
    deadline = time.monotonic() + 120
    while len(seen) < cluster.num_replicas:
        assert time.monotonic() < deadline, f"heard from {sorted(seen)} only"
        reply = cluster.replicas.classify.remote(TEXTS, True, name).result(timeout_s=60)
        seen[reply["replica"]] = reply
    return seen


def test_a_replaced_adapter_is_served_at_its_new_version_by_every_replica(
    ray_serve: ServeCluster,
    ray_store: AdapterStore,
    reference: Reference,
    factory: AdapterFactory,
) -> None:
    name = "a0"
    before = _answers_from_every_replica(ray_serve, name)
    assert {r["version"] for r in before.values()} == {1}
    factory.add_to_store(ray_store, name, seed=999, overwrite=True)
    assert ray_store.get(name).manifest.version == 2
    want = reference.probs(ray_store, name, TEXTS)
    after = _answers_from_every_replica(ray_serve, name)
    assert set(after) == set(before)  # the same replicas, each re-read the store
    for reply in after.values():
        assert reply["version"] == 2
        for logits, exp in zip(reply["logits"], want, strict=True):  # a replica sends logits
            got = softmax(logits)
            assert max(abs(g - e) for g, e in zip(got, exp, strict=True)) <= TOL
    via_http = httpx.post(
        ray_serve.url + "/classify",
        json={"adapter": name, "inputs": TEXTS, "top_k": None},
        timeout=60,
    ).json()
    assert via_http["version"] == 2
    _check(via_http, want, ray_store.get(name).manifest.labels)


def test_a_replica_killed_under_load_is_replaced_and_no_answer_is_wrong(
    ray_serve: ServeCluster, ray_store: AdapterStore, reference: Reference
) -> None:
    import ray

    expected = _expected(ray_store, reference)
    labels = ray_store.get(ADAPTERS[1]).manifest.labels
    names = ray_serve.replica_actor_names()
    assert len(names) == 2
    victim = ray.get_actor(names[0], namespace="serve")
    bodies = [_body(i) for i in range(200)]

    async def kill_during_load() -> list[httpx.Response]:
        sending = asyncio.ensure_future(_send(ray_serve.url, bodies))
        await asyncio.sleep(0.5)
        ray.kill(victim, no_restart=True)
        return await sending

    replies = asyncio.run(kill_during_load())
    for body, reply in zip(bodies, replies, strict=True):
        assert reply.status_code in (200, 503), reply.text  # refused is fine, wrong is not
        if reply.status_code == 200:
            _check_reply(body, reply.json(), expected, labels)
    failed = sum(r.status_code != 200 for r in replies)
    print(f"kill under load: {failed} of {len(replies)} refused (503)")

    deadline = time.monotonic() + 240  # Serve starts a replacement replica
    while names[0] in ray_serve.replica_actor_names() or len(ray_serve.replica_actor_names()) < 2:
        assert time.monotonic() < deadline, ray_serve.replica_actor_names()
        time.sleep(1)
    ray_serve.replica_stats(timeout_s=240)  # both replicas answer
    after = asyncio.run(_send(ray_serve.url, [_body(i) for i in range(80)]))
    assert [r.status_code for r in after] == [200] * 80, {r.text for r in after}
    for i, reply in enumerate(after):
        _check_reply(_body(i), reply.json(), expected, labels)
