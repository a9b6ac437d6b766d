"""Races against the real server: classify while the adapter is replaced and deleted in a loop,
two uploads of one name at once, delete (or upload) while a training job writes that name.

Each ends in a documented state: a request gets one whole version (its outputs equal that
version's golden outputs, and the version it names is the one that made them) or 404; never a
mixture, never a 5xx; the store is never half-written."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from adapters_store import AdapterStore
from tests.support.faults import Golden, assert_store_whole
from tests.support.jobs import JobSystem, running
from tests.support.server import running_server
from tests.support.tiny import keyword_dataset

pytestmark = pytest.mark.timeout(300)

TEXTS = [row["text"] for row in keyword_dataset(12, seed=21)]
QUIET = {"APP_EMBEDDED_WORKER": "false", "APP_ACCESS_LOG": "false"}


@pytest.fixture(scope="module")
def golden(tiny_model_dir, factory) -> Golden:
    return Golden(tiny_model_dir, factory, TEXTS).add(101, 102, 201, 202, 203, 204)


@pytest.fixture(scope="module")
def archives(tmp_path_factory, factory) -> dict[int, bytes]:
    folder = tmp_path_factory.mktemp("archives")
    seeds = (101, 102, 201, 202, 203, 204)
    return {s: factory.archive("x", folder / f"{s}.zip", seed=s).read_bytes() for s in seeds}


def _upload(client, name: str, data: bytes, *, overwrite: bool = False):
    files = {"file": ("a.zip", data, "application/zip")}
    form = {"name": name, "overwrite": "true" if overwrite else "false"}
    return client.post("/adapters", files=files, data=form)


# ---- classify while replaced / deleted -----------------------------------------------------
async def _hammer(client: httpx.AsyncClient, until: float, seen: list) -> None:
    body = {"adapter": "hot", "inputs": TEXTS, "top_k": None}
    while time.monotonic() < until:
        r = await client.post("/classify", json=body)
        seen.append((r.status_code, r.json()))


async def _mutate(client, archives, until: float, versions: dict[int, int], log: list) -> None:
    """Replace hot with the other seed in a loop; every third round delete it first."""
    rounds = 0
    while time.monotonic() < until:
        seed = (101, 102)[rounds % 2]
        deleted = rounds % 3 == 2
        if deleted:
            log.append((await client.delete("/adapters/hot")).status_code)
            await asyncio.sleep(0.05)  # clients see 404 meanwhile
        r = await _upload(client, "hot", archives[seed], overwrite=not deleted)
        log.append(r.status_code)
        if r.status_code == 201:
            versions[r.json()["version"]] = seed
        rounds += 1
        await asyncio.sleep(0.03)


async def _race(url: str, archives, seconds: float) -> tuple[list, dict[int, int], list]:
    seen: list = []
    versions: dict[int, int] = {1: 101}
    log: list = []
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(
            _mutate(client, archives, until, versions, log),
            *(_hammer(client, until, seen) for _ in range(8)),
        )
    return seen, versions, log


def test_classify_while_replaced_and_deleted_gets_one_whole_version_or_404(
    tiny_model_dir, factory, golden, archives, tmp_path
):
    data = tmp_path / "data"
    factory.add_to_store(AdapterStore(data / "adapters"), "hot", seed=101)
    # Four texts per forward pass: each request spans three passes, so a replace can land
    # between two passes of one request.
    env = {**QUIET, "APP_MAX_BATCH_SIZE": "4", "APP_MAX_WAIT_MS": "2"}
    with running_server(data_dir=data, base_model=tiny_model_dir, env=env) as server:
        seen, versions, log = asyncio.run(_race(server.url, archives, seconds=6.0))
        logs = server.logs()

    assert set(log) <= {200, 201}, log  # every replace and delete went through
    statuses = [status for status, _ in seen]
    assert set(statuses) <= {200, 404}, {s for s in statuses if s not in (200, 404)}
    ok = [body for status, body in seen if status == 200]
    for body in ok:
        assert body["version"] in versions, body["version"]
        seed = golden.seed_of(TEXTS, body["predictions"])
        assert seed == versions[body["version"]], (body["version"], seed, versions)
    for status, body in seen:
        if status == 404:
            assert body["error"]["code"] == "adapter_not_found"
    served = {body["version"] for body in ok}
    assert len(served) >= 3 and statuses.count(404) >= 1, (len(served), statuses.count(404))
    assert "Traceback" not in logs
    assert_store_whole(data / "adapters", expect=["hot"])


# ---- two uploads of one name at once -------------------------------------------------------
def _both(url: str, name: str, pair: tuple[bytes, bytes], *, overwrite: bool):
    async def run():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(
                *(_upload(client, name, data, overwrite=overwrite) for data in pair)
            )

    return asyncio.run(run())


def test_two_uploads_of_one_name_at_once(tiny_model_dir, golden, archives, tmp_path):
    data = tmp_path / "data"
    with (
        running_server(data_dir=data, base_model=tiny_model_dir, env=QUIET) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):

        def served_seed(name: str) -> int | None:
            r = client.post("/classify", json={"adapter": name, "inputs": TEXTS, "top_k": None})
            assert r.status_code == 200, r.text
            return golden.seed_of(TEXTS, r.json()["predictions"])

        pairs = [(201, 202), (203, 204), (202, 201), (204, 203)]
        for n, (s1, s2) in enumerate(pairs):  # without overwrite: one wins, one 409
            name = f"dup{n}"
            r1, r2 = _both(server.url, name, (archives[s1], archives[s2]), overwrite=False)
            assert sorted([r1.status_code, r2.status_code]) == [201, 409], (r1.text, r2.text)
            loser = r1 if r1.status_code == 409 else r2
            assert loser.json()["error"]["code"] == "adapter_exists"
            winner = s1 if r1.status_code == 201 else s2
            assert served_seed(name) == winner

        for s1, s2 in pairs:  # with overwrite: both succeed, with distinct versions
            before = client.get("/adapters/dup0").json()["version"]
            r1, r2 = _both(server.url, "dup0", (archives[s1], archives[s2]), overwrite=True)
            assert (r1.status_code, r2.status_code) == (201, 201), (r1.text, r2.text)
            by_version = {r1.json()["version"]: s1, r2.json()["version"]: s2}
            assert sorted(by_version) == [before + 1, before + 2]
            assert client.get("/adapters/dup0").json()["version"] == before + 2
            assert served_seed("dup0") == by_version[before + 2]  # the last write wins, whole
    assert_store_whole(data / "adapters", expect=[f"dup{n}" for n in range(len(pairs))])


# ---- a training job writes the name that is deleted / uploaded meanwhile -------------------
def test_delete_or_upload_while_a_training_job_writes_that_name(
    tmp_path, tiny_model_dir, factory, archives
):
    system = JobSystem(tmp_path, tiny_model_dir, lease_s=5.0)
    store_root = Path(system.data_dir) / "adapters"
    factory.add_to_store(AdapterStore(store_root), "kw", seed=5)
    with system:
        client = system.client
        # 1. Delete during a job that overwrites the name: the job wins, as the next version.
        job_id = system.submit(name="kw", max_steps=60, overwrite=True).json()["id"]
        system.wait(job_id, until=running)
        assert client.delete("/adapters/kw").status_code == 200
        gone = client.post("/classify", json={"adapter": "kw", "inputs": "good"})
        assert gone.status_code == 404
        job = system.wait(job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["adapter"] == {"name": "kw", "version": 2}
        stored = client.get("/adapters/kw").json()
        assert (stored["version"], stored["source"]) == (2, "trained")
        answer = client.post("/classify", json={"adapter": "kw", "inputs": "good"})
        assert answer.status_code == 200 and answer.json()["version"] == 2

        # 2. Upload during a job for a new name (no overwrite): the upload wins, the job fails.
        job_id = system.submit(name="kw2", max_steps=60).json()["id"]
        system.wait(job_id, until=running)
        assert _upload(client, "kw2", archives[201]).status_code == 201
        job = system.wait(job_id, until={"failed"})
        assert "exists" in job["error"] and job["adapter"]["version"] is None
        stored = client.get("/adapters/kw2").json()
        assert (stored["version"], stored["source"]) == (1, "uploaded")
    assert_store_whole(store_root, expect=["kw", "kw2"])
