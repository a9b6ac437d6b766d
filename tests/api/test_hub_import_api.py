"""POST /adapters/import (hub, offline cache) and uploads of .bin archives."""

from __future__ import annotations

import zipfile

import pytest

from tests.support.hub import as_pickled, cache_repo, malicious_bin


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_import_from_hub(client, factory, tmp_path, hub_cache):
    saved = factory.save("h", tmp_path / "saved", seed=31)
    commit = cache_repo(hub_cache, "AdapterHub/tiny-demo", as_pickled(saved, tmp_path / "bin"))
    body = {"name": "demo", "repo_id": "AdapterHub/tiny-demo"}
    response = client.post("/adapters/import", json=body)
    assert response.status_code == 201, response.text
    info = response.json()
    assert info["source"] == "hub"
    assert info["hub"] == {
        "repo_id": "AdapterHub/tiny-demo", "revision": "main", "commit": commit, "subfolder": None,
    }  # fmt: skip
    assert client.post("/classify", json={"adapter": "demo", "inputs": "good"}).status_code == 200
    again = client.post("/adapters/import", json=body)
    assert again.status_code == 409
    replaced = client.post("/adapters/import", json={**body, "overwrite": True})
    assert replaced.status_code == 201 and replaced.json()["version"] == 2


def test_import_errors(client, factory, tmp_path, hub_cache):
    saved = factory.save("h", tmp_path / "saved", seed=32)
    marker = tmp_path / "pwned"
    cache_repo(hub_cache, "org/evil", malicious_bin(saved, tmp_path / "evil", marker))
    before = client.get("/adapters").json()
    evil = client.post("/adapters/import", json={"name": "evil", "repo_id": "org/evil"})
    assert evil.status_code == 422 and evil.json()["error"]["code"] == "invalid_adapter"
    assert not marker.exists()
    assert client.get("/adapters").json() == before
    missing = client.post("/adapters/import", json={"name": "x", "repo_id": "org/not-cached"})
    assert missing.status_code == 503 and missing.json()["error"]["code"] == "hub_unavailable"
    bad_repo = client.post("/adapters/import", json={"name": "x", "repo_id": "not a//repo id"})
    assert bad_repo.status_code == 422 and bad_repo.json()["error"]["code"] == "hub_error"
    bad_name = client.post("/adapters/import", json={"name": "Bad Name", "repo_id": "org/evil"})
    assert bad_name.status_code == 422 and bad_name.json()["error"]["code"] == "invalid_name"


def test_import_needs_admin(serve, hub_cache):
    keys = "classify-only-0123456789:classify,admin-key-0123456789abc:classify+admin"
    with serve(api_keys=keys) as client:
        body = {"name": "x", "repo_id": "org/any"}
        headers = {"Authorization": "Bearer classify-only-0123456789"}
        assert client.post("/adapters/import", json=body, headers=headers).status_code == 403
        assert client.post("/adapters/import", json=body).status_code == 401


def test_upload_of_save_adapter_bin_files(client, factory, tmp_path):
    """What model.save_adapter("./final_adapter", name) writes (no safetensors), zipped."""
    saved = factory.save("rt", tmp_path / "saved", seed=33)
    folder = as_pickled(saved, tmp_path / "final_adapter")
    archive = tmp_path / "final_adapter.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, arcname=f"final_adapter/{path.name}")
    with archive.open("rb") as f:
        response = client.post(
            "/adapters", data={"name": "rotten-tomatoes"}, files={"file": ("a.zip", f)}
        )
    assert response.status_code == 201, response.text
    assert response.json()["source"] == "uploaded"
    result = client.post("/classify", json={"adapter": "rotten-tomatoes", "inputs": "good"})
    assert result.status_code == 200
