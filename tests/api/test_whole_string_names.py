"""Names, aliases and selectors match whole strings (issue 26 #11): `$` in the old patterns
also matched before a final newline, so `shared-x\\n` was stored beside `shared-x`."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.support.hub import cache_repo

# A name or alias with a line end, or with white space around it.
DRESSINGS = ["{}\n", "{}\r", "{}\r\n", " {}", "{} ", "{}\t", "\n{}"]


@pytest.fixture(params=DRESSINGS, ids=["lf", "cr", "crlf", "lead-sp", "trail-sp", "tab", "lead-lf"])
def dressed(request):
    return request.param.format


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _stored(client) -> list[str]:
    store = client.app.state.store
    return sorted(p.name for p in store.root.iterdir() if not p.name.startswith("."))


def test_upload_and_import_refuse_the_name(client, factory, tmp_path, hub_cache, dressed):
    before = _stored(client)
    archive = factory.archive("x", tmp_path / "x.zip", seed=51)
    with archive.open("rb") as f:
        up = client.post("/adapters", data={"name": dressed("shared-x")}, files={"file": f})
    assert up.status_code == 422 and up.json()["error"]["code"] == "invalid_name", up.text
    cache_repo(hub_cache, "org/demo", factory.save("x", tmp_path / "saved", seed=52))
    body = {"name": dressed("shared-x"), "repo_id": "org/demo"}
    imported = client.post("/adapters/import", json=body)
    assert imported.status_code == 422 and imported.json()["error"]["code"] == "invalid_name"
    assert _stored(client) == before


def test_aliases_and_selectors_refuse_it(client, dressed):
    put = client.put(f"/adapters/alpha/aliases/{quote(dressed('prod'))}", json={"version": 1})
    # A control character in the path is refused before routing (400, the request guard);
    # white space around the alias reaches the route and is refused there (404/422).
    assert put.status_code in (400, 404, 422), put.text
    assert client.get("/adapters/alpha/versions").json()["aliases"] == {}
    for adapter in (dressed("alpha"), f"alpha@{dressed('1')}", f"alpha@{dressed('prod')}"):
        r = client.post("/classify", json={"adapter": adapter, "inputs": "good"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_name", adapter
        many = client.post("/classify", json={"adapters": ["beta", adapter], "inputs": "good"})
        assert many.status_code == 422, adapter
    split = client.put("/adapters/alpha/split", json={"weights": {dressed("1"): 1}})
    assert split.status_code == 422 and split.json()["error"]["code"] == "invalid_route"
    assert client.get("/adapters/alpha/versions").json()["split"] == []
