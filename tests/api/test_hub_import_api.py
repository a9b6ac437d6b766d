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


TEAM_A_ADMIN = "team-a-admin-key-0123456789abcdefghij"
TEAM_A_AUTH = {"Authorization": f"Bearer {TEAM_A_ADMIN}"}


@pytest.fixture
def team_a_client(serve, tmp_path, hub_cache):
    """A server whose admin key may touch `team-a/*` only, with `team-b/secret` stored."""
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{TEAM_A_ADMIN} admin+classify+download adapters=team-a/*\n")
    with serve(api_keys_file=keys) as client:
        yield client


def test_revision_that_is_a_store_path_reads_nothing(team_a_client, factory, tmp_path):
    """Issue 26 #1: offline, snapshot_download joins `refs/<revision>` and `snapshots/<commit>`,
    so a revision that is an absolute path made the import read any folder on the server."""
    client = team_a_client
    store = client.app.state.store
    factory.add_to_store(store, "team-b/secret", seed=41)
    secret_dir = store.root / "team-b~secret"
    archive = factory.archive("mine", tmp_path / "mine.zip", seed=42)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("README.md", str(secret_dir))
    with archive.open("rb") as f:
        up = client.post(
            "/adapters", data={"name": "team-a/mine"}, files={"file": ("a.zip", f)},
            headers=TEAM_A_AUTH,
        )  # fmt: skip
    assert up.status_code == 201, up.text
    readme = store.root / "team-a~mine" / "README.md"
    assert readme.read_text() == str(secret_dir)  # the attack's stepping stone is in place
    body = {"name": "team-a/stolen", "repo_id": "x/y", "revision": str(readme)}
    r = client.post("/adapters/import", json=body, headers=TEAM_A_AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "hub_error" and "revision" in r.json()["error"]["message"]
    assert client.get("/adapters/team-a/stolen", headers=TEAM_A_AUTH).status_code == 404
    assert not (store.root / "team-a~stolen").exists()
    missing = {**body, "revision": str(store.root / "team-a~none" / "README.md")}
    other = client.post("/adapters/import", json=missing, headers=TEAM_A_AUTH)
    assert other.status_code == 422  # a path that does not exist: the same answer
    assert _without_value(other, missing["revision"]) == _without_value(r, body["revision"])


def _without_value(response, value: str) -> str:
    return response.json()["error"]["message"].replace(repr(value[:100]), "<value>")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subfolder", "../../adapters/team-b~secret"),
        ("subfolder", "demo/../../.."),
        ("subfolder", "/etc"),
        ("subfolder", "demo\n"),
        ("subfolder", "./demo"),
        ("revision", "../../../adapters"),
        ("revision", "main\n"),
        ("revision", "refs\\heads\\main"),
        ("revision", "ma\x00in"),
        ("repo_id", "org/demo\n"),
        ("repo_id", "../org/demo"),
    ],
)
def test_import_refuses_paths_in_subfolder_revision_and_repo_id(
    client, factory, tmp_path, hub_cache, field, value
):
    saved = factory.save("h", tmp_path / "saved", seed=34)
    cache_repo(hub_cache, "org/demo", saved, subfolder="demo")
    body = {"name": "x", "repo_id": "org/demo", "subfolder": "demo", field: value}
    r = client.post("/adapters/import", json=body)
    assert r.status_code == 422, (value, r.text)
    assert r.json()["error"]["code"] == "hub_error" and field in r.json()["error"]["message"]
    assert client.get("/adapters/x").status_code == 404
    plain = {"subfolder": "demo/", "revision": "main", "repo_id": "org/demo"}[field]
    ok = client.post("/adapters/import", json={**body, field: plain})
    assert ok.status_code == 201, ok.text  # the same repo, named plainly, imports
