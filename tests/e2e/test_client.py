"""app.client (sync and async) against a real server and a real worker: every method, and
errors mapped to ApiError with the server's code."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import zipfile

import pytest

from adapters_store import AdapterNotFound, AdapterStore
from app.client import ApiError, AsyncClient, Client
from tests.support.hub import as_pickled, cache_repo
from tests.support.jobs import JOB_DEFAULTS, JobSystem
from tests.support.server import free_port, process_env
from tests.support.tasks import add_task_adapter

pytestmark = pytest.mark.timeout(300)
ADMIN = "admin-key-0123456789abcdef"
READER = "reader-key-0123456789abcd"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hub-cache")


@pytest.fixture(scope="module")
def system(tmp_path_factory, tiny_model_dir, hub_cache):
    env = {
        "APP_API_KEYS": f"{ADMIN}:classify+admin,{READER}:classify",
        "HF_HUB_CACHE": str(hub_cache),
    }
    # A long lease: on a loaded machine a 2 s heartbeat lease fails jobs as "worker lost".
    root = tmp_path_factory.mktemp("client")
    with JobSystem(root, tiny_model_dir, env=env, lease_s=60) as system:
        yield system


@pytest.fixture
def client(system):
    with Client(system.server.url, api_key=ADMIN, timeout=30) as client:
        yield client


def test_adapters_round_trip(client, factory, tmp_path):
    folder = factory.save("c", tmp_path / "saved", seed=51)
    created = client.upload_adapter("round", folder)
    assert created["name"] == "round" and created["version"] == 1
    assert [a["name"] for a in client.list_adapters()] == ["round"]
    assert client.get_adapter("round")["labels"] == {"0": "negative", "1": "positive"}
    one = client.classify("round", "a good film", top_k=None)
    assert one["adapter"] == "round" and len(one["predictions"][0]) == 2
    assert client.load_adapter("round")["resident"] is True
    assert client.unload_adapter("round")["resident"] is False
    archive = client.download_adapter("round", tmp_path / "round.zip")
    with zipfile.ZipFile(archive) as zf:
        assert "adapter.safetensors" in zf.namelist()
    again = client.upload_adapter("round", archive, overwrite=True)
    assert again["version"] == 2
    both = client.classify(["round"], ["good", "bad"])
    assert [r["adapter"] for r in both["results"]] == ["round"]
    assert client.delete_adapter("round")["name"] == "round"
    with pytest.raises(ApiError) as info:
        client.get_adapter("round")
    assert (info.value.status, info.value.code) == (404, "adapter_not_found")


def test_list_adapters_follows_the_pages(client, system, factory):
    """Adapters written into the store by another process (this one): the server's listing
    index sees them; list_adapters walks every page, adapters_page gives one."""
    store = AdapterStore(system.store_dir)
    names = [f"page-{i}" for i in range(5)]
    try:
        for i, name in enumerate(names):
            factory.add_to_store(store, name, seed=60 + i, config="lora" if i % 2 else "seq_bn")
        assert [a["name"] for a in client.list_adapters(prefix="page-", page_size=2)] == names
        lora = client.list_adapters(prefix="page", method="lora", page_size=1)
        assert [a["name"] for a in lora] == ["page-1", "page-3"]
        first = client.adapters_page(limit=2, prefix="page-")
        assert [a["name"] for a in first["adapters"]] == names[:2] and first["total"] == 5
        store.delete("page-2")
        rest = client.adapters_page(limit=2, prefix="page-", cursor=first["next_cursor"])
        assert [a["name"] for a in rest["adapters"]] == ["page-3", "page-4"]
        assert rest["next_cursor"] is None and rest["total"] == 4
        with pytest.raises(ApiError) as info:
            client.adapters_page(limit=2, cursor="bogus")
        assert (info.value.status, info.value.code) == (422, "validation_error")
    finally:
        for name in names:
            with contextlib.suppress(AdapterNotFound):
                store.delete(name)


def test_import_from_hub(client, factory, tmp_path, hub_cache):
    saved = factory.save("h", tmp_path / "saved", seed=52)
    commit = cache_repo(hub_cache, "AdapterHub/tiny-client", as_pickled(saved, tmp_path / "bin"))
    info = client.import_adapter("hubbed", "AdapterHub/tiny-client")
    assert info["source"] == "hub" and info["hub"]["commit"] == commit
    with pytest.raises(ApiError) as error:
        client.import_adapter("hubbed", "AdapterHub/tiny-client")
    assert (error.value.status, error.value.code) == (409, "adapter_exists")
    with pytest.raises(ApiError) as error:
        client.import_adapter("other", "org/not-cached")
    assert (error.value.status, error.value.code) == (503, "hub_unavailable")


def test_jobs_submit_wait_list_cancel(client, capsys):
    job = client.submit_job(JOB_DEFAULTS, name="client-kw", max_steps=12)
    assert job["status"] == "queued"
    done = client.wait(job, progress=True, poll_s=0.2, timeout_s=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"]["step"] == 12
    assert "12/12" in capsys.readouterr().err  # the tqdm bar reached the end
    assert job["id"] in [j["id"] for j in client.list_jobs()]
    assert client.get_job(job["id"])["adapter"]["version"] == 1
    with pytest.raises(ApiError) as info:
        client.cancel_job(job)
    assert (info.value.status, info.value.code) == (409, "job_conflict")
    queued = client.submit_job(JOB_DEFAULTS, name="client-cancel", max_steps=2000)
    assert client.cancel_job(queued)["cancel_requested"] is True
    assert client.wait(queued, poll_s=0.2, timeout_s=120)["status"] == "cancelled"
    with pytest.raises(ApiError) as info:
        client.submit_job(JOB_DEFAULTS, name="Bad Name")
    assert info.value.status == 422


def _same(got: list, want: list) -> bool:
    """Pipeline-shaped predictions equal up to batching noise (padding changes the last bits)."""
    return len(got) == len(want) and all(
        [p["label"] for p in g] == [p["label"] for p in w]
        and all(abs(p["score"] - q["score"]) < 1e-5 for p, q in zip(g, w, strict=True))
        for g, w in zip(got, want, strict=True)
    )


def test_classify_takes_sentence_pairs(client, system, factory):
    """A pair is a {"text", "text_pair"} dict or a (text, text_pair) tuple, alone or in a
    list; each is one input, scored as a pair (not as its first text)."""
    store = AdapterStore(system.store_dir)
    add_task_adapter(factory, store, "para", task="single_label", seed=61, text_pair=True,
                     labels={0: "different", 1: "paraphrase"})  # fmt: skip
    pair = {"text": "a good film", "text_pair": "a dull mess"}
    as_dict = client.classify("para", pair, top_k=None)["predictions"]
    as_tuple = client.classify("para", ("a good film", "a dull mess"), top_k=None)["predictions"]
    assert len(as_tuple) == 1 and _same(as_tuple, as_dict)
    mixed = client.classify("para", [("one two", "three"), pair], top_k=None)["predictions"]
    assert len(mixed) == 2 and _same(mixed[1:], as_dict)
    alone = client.classify("para", "a good film", top_k=None)["predictions"]
    assert not _same(alone, as_dict)

    async def scenario() -> list:
        async with AsyncClient(system.server.url, api_key=ADMIN, timeout=30) as aclient:
            return (await aclient.classify("para", [pair, ("a good film", "a dull mess")],
                                           top_k=None))["predictions"]  # fmt: skip

    assert _same(asyncio.run(scenario()), [as_dict[0], as_dict[0]])
    with pytest.raises(ValueError, match="tuple of two texts"):
        client.classify("para", ("a", "b", "c"))


def test_errors_map_to_api_error(system):
    with Client(system.server.url, api_key=READER) as reader:
        assert isinstance(reader.list_adapters(), list)
        with pytest.raises(ApiError) as info:
            reader.delete_adapter("anything")
        assert (info.value.status, info.value.code) == (403, "forbidden")
    with Client(system.server.url) as anonymous, pytest.raises(ApiError) as info:
        anonymous.list_adapters()
    assert (info.value.status, info.value.code) == (401, "unauthorized")
    nowhere = Client(f"http://127.0.0.1:{free_port()}", timeout=2)
    with nowhere, pytest.raises(ApiError) as info:
        nowhere.list_jobs()
    assert info.value.status is None and info.value.code == "unreachable"


def test_async_client(system, factory, tmp_path):
    folder = factory.save("a", tmp_path / "saved", seed=53)

    async def scenario() -> None:
        async with AsyncClient(system.server.url, api_key=ADMIN, timeout=30) as client:
            assert (await client.upload_adapter("async-one", folder))["version"] == 1
            texts = ["good", "bad", "great plot"]
            answers = await asyncio.gather(*(client.classify("async-one", t) for t in texts))
            assert [len(a["predictions"]) for a in answers] == [1, 1, 1]
            assert "async-one" in [a["name"] for a in await client.list_adapters(page_size=1)]
            page = await client.adapters_page(limit=1, prefix="async-")
            assert [a["name"] for a in page["adapters"]] == ["async-one"]
            job = await client.submit_job(JOB_DEFAULTS, name="async-kw", max_steps=4)
            assert (await client.wait(job, poll_s=0.2, timeout_s=120))["status"] == "succeeded"
            assert (await client.delete_adapter("async-one"))["name"] == "async-one"
            with pytest.raises(ApiError) as info:
                await client.classify("async-one", "x")
            assert (info.value.status, info.value.code) == (404, "adapter_not_found")

    asyncio.run(scenario())


def test_importing_the_client_loads_no_ml_stack():
    code = (
        "import sys, app.client; "
        "heavy = [m for m in ('torch', 'transformers', 'adapters') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=process_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
