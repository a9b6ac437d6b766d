"""`python -m training pull`: a hub repo (offline cache) into a store, checked like an upload."""

from __future__ import annotations

import pytest

from adapters_store import AdapterStore
from tests.support.hub import as_pickled, cache_repo, malicious_bin
from training.cli import main


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_pull_bin_repo(factory, tiny_model_dir, tmp_path, hub_cache, capsys):
    saved = factory.save("p", tmp_path / "saved", seed=41)
    commit = cache_repo(
        hub_cache, "org/tiny-pf", as_pickled(saved, tmp_path / "bin"), revision="v2"
    )
    store = tmp_path / "store"
    argv = ["pull", "org/tiny-pf", "--name", "tiny", "--store", str(store), "--revision", "v2",
            "--base-model", str(tiny_model_dir)]  # fmt: skip
    assert main(argv) == 0
    assert commit[:12] in capsys.readouterr().out
    manifest = AdapterStore(store).get("tiny").manifest
    assert manifest.source == "hub" and manifest.hub.commit == commit
    assert manifest.base_model.fingerprint == factory.base_ref.fingerprint
    assert main(argv) == 2  # taken name
    assert "already exists" in capsys.readouterr().err


def test_pull_refuses_a_malicious_pickle(factory, tiny_model_dir, tmp_path, hub_cache, capsys):
    saved = factory.save("p", tmp_path / "saved", seed=42)
    marker = tmp_path / "pwned"
    cache_repo(hub_cache, "org/evil", malicious_bin(saved, tmp_path / "evil", marker))
    store = tmp_path / "store"
    argv = ["pull", "org/evil", "--name", "evil", "--store", str(store),
            "--base-model", str(tiny_model_dir)]  # fmt: skip
    assert main(argv) == 2
    assert "pytorch_model_head.bin" in capsys.readouterr().err
    assert not marker.exists() and AdapterStore(store).list() == []
