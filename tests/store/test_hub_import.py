"""Hub import and .bin conversion, offline: repos laid out in a hub cache on disk."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from adapters_store import (
    AdapterStore,
    BaseModelMismatch,
    HubError,
    HubUnavailable,
    InvalidAdapter,
)
from adapters_store.fit import check_adapter_fits
from adapters_store.format import sha256_file
from adapters_store.hub import import_from_hub
from app.serving.engine import Engine, Segment
from tests.support.hub import as_pickled, cache_repo, malicious_bin
from tests.support.tiny import keyword_dataset

TEXTS = [row["text"] for row in keyword_dataset(5, seed=11)]


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hub-cache"


@pytest.fixture
def store(tmp_path) -> AdapterStore:
    return AdapterStore(tmp_path / "store")


@pytest.fixture
def saved(factory, tmp_path) -> Path:
    return factory.save("hubby", tmp_path / "saved", seed=21, labels={0: "no", 1: "yes"})


def _import(store, cache, factory, name, repo_id, **kwargs):
    check = functools.partial(check_adapter_fits, factory.model.config)
    return import_from_hub(
        store, name, repo_id, expected_base=factory.base_ref, check=check, cache_dir=cache,
        **kwargs,
    )  # fmt: skip


def _probs(model_dir: Path, folder: Path) -> list[list[float]]:
    engine = Engine.load(base_model=str(model_dir))
    engine.load_adapter("x", folder)
    return engine.forward([Segment("x", engine.tokenize(TEXTS))])[0]


def _state(store: AdapterStore) -> list[str]:
    return sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".lock"))


def test_safetensors_repo_imports_as_is(store, cache, factory, saved):
    commit = cache_repo(cache, "org/sft", saved, revision="v1")
    manifest = _import(store, cache, factory, "sft", "org/sft", revision="v1")
    assert manifest.source == "hub"
    assert manifest.hub.model_dump() == {
        "repo_id": "org/sft", "revision": "v1", "commit": commit, "subfolder": None,
    }  # fmt: skip
    assert manifest.labels == {0: "no", 1: "yes"}
    assert manifest.base_model.fingerprint == factory.base_ref.fingerprint
    for name in ("adapter.safetensors", "model_head.safetensors"):
        assert manifest.files[name].sha256 == sha256_file(saved / name)
    assert store.verify("sft") == manifest


def test_bin_repo_is_converted_and_gives_the_same_outputs(
    store, cache, factory, saved, tmp_path, tiny_model_dir
):
    pickled = as_pickled(saved, tmp_path / "pickled")
    assert {p.name for p in pickled.iterdir()} >= {"pytorch_adapter.bin", "pytorch_model_head.bin"}
    cache_repo(cache, "AdapterHub/tiny-pf-demo", pickled, subfolder="demo")
    manifest = _import(store, cache, factory, "demo", "AdapterHub/tiny-pf-demo", subfolder="demo")
    stored = store.get("demo").path
    assert sorted(manifest.files) == [
        "adapter.safetensors", "adapter_config.json", "head_config.json", "model_head.safetensors",
    ]  # fmt: skip
    assert not list(stored.glob("*.bin"))
    from safetensors.torch import load_file

    for name in ("adapter.safetensors", "model_head.safetensors"):
        original, converted = load_file(str(saved / name)), load_file(str(stored / name))
        assert original.keys() == converted.keys()
        assert all(torch.equal(original[k], converted[k]) for k in original)
    want, got = _probs(tiny_model_dir, saved), _probs(tiny_model_dir, stored)
    assert torch.equal(torch.tensor(got), torch.tensor(want))


def test_malicious_pickle_is_refused_and_never_runs(store, cache, factory, saved, tmp_path):
    marker = tmp_path / "pwned"
    evil = malicious_bin(saved, tmp_path / "evil", marker)
    torch.load(evil / "pytorch_model_head.bin", weights_only=False)  # a full unpickle runs it
    assert marker.exists()
    marker.unlink()
    cache_repo(cache, "org/evil", evil)
    factory.add_to_store(store, "keep", seed=3)
    before = _state(store)
    with pytest.raises(InvalidAdapter) as info:
        _import(store, cache, factory, "evil", "org/evil")
    assert "pytorch_model_head.bin" in info.value.message
    assert not marker.exists()
    assert _state(store) == before
    assert [m.name for m in store.list()] == ["keep"]


def test_repo_for_another_base_is_refused(store, cache, factory, tmp_path):
    from adapters import AutoAdapterModel
    from transformers import BertConfig

    config = BertConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    other = AutoAdapterModel.from_config(config)
    other.add_adapter("bert", config="seq_bn")
    other.add_classification_head("bert", num_labels=2)
    other.save_adapter(str(tmp_path / "bert"), "bert", with_head=True, use_safetensors=True)
    cache_repo(cache, "org/bert-adapter", tmp_path / "bert")
    with pytest.raises(BaseModelMismatch):
        _import(store, cache, factory, "bert", "org/bert-adapter")
    assert store.list() == []


def test_unknown_repo_revision_and_bad_subfolder(store, cache, factory, saved):
    with pytest.raises(HubUnavailable):
        _import(store, cache, factory, "x", "org/never-cached")
    cache_repo(cache, "org/sft", saved)
    with pytest.raises(HubUnavailable):
        _import(store, cache, factory, "x", "org/sft", revision="no-such-tag")
    with pytest.raises(HubError):
        _import(store, cache, factory, "x", "org/sft", subfolder="../../etc")
    with pytest.raises(InvalidAdapter):
        _import(store, cache, factory, "x", "org/sft", subfolder="missing")
    assert store.list() == []


def test_pickled_archive_upload_is_converted(store, factory, saved, tmp_path):
    import zipfile

    pickled = as_pickled(saved, tmp_path / "final_adapter")
    archive = tmp_path / "final_adapter.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(pickled.iterdir()):
            zf.write(path, arcname=f"final_adapter/{path.name}")
    check = functools.partial(check_adapter_fits, factory.model.config)
    manifest = store.import_archive("rt", archive, expected_base=factory.base_ref, check=check)
    assert manifest.source == "uploaded" and "adapter.safetensors" in manifest.files


def _repo(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def test_cache_ref_naming_a_path_outside_reads_nothing(store, cache, factory, saved, tmp_path):
    """Issue 26 #1: offline, the commit is read from `refs/<revision>` and joined as a path: a
    ref file holding a path outside the cache made the import read that folder."""
    cache_repo(cache, "org/sft", saved)
    ref = _repo(cache, "org/sft") / "refs" / "main"
    answers = []
    for target in (saved, tmp_path / "no-such-folder"):
        ref.write_text(str(target))
        with pytest.raises(HubUnavailable) as refused:
            _import(store, cache, factory, "x", "org/sft")
        answers.append(refused.value.message)
    assert answers[0] == answers[1]  # the same answer whether the path exists or not
    assert "not in the local hub cache" in answers[0] and str(tmp_path) not in answers[0]
    assert _state(store) == []


def test_cache_links_leading_out_of_the_cache_are_refused(store, cache, factory, saved, tmp_path):
    """Every file and the subfolder are resolved: a link out of the repo's cache folder (a
    tampered cache) is refused, never copied."""
    other = factory.save("hubby", tmp_path / "other", seed=22, labels={0: "no", 1: "yes"})
    commit = cache_repo(cache, "org/sft", saved)
    weights = _repo(cache, "org/sft") / "snapshots" / commit / "adapter.safetensors"
    weights.unlink()
    weights.symlink_to(other / "adapter.safetensors")
    with pytest.raises(InvalidAdapter, match="not a file of the hub cache"):
        _import(store, cache, factory, "x", "org/sft")
    commit = cache_repo(cache, "org/sub", saved, subfolder="ok")
    (_repo(cache, "org/sub") / "snapshots" / commit / "out").symlink_to(other)
    with pytest.raises(InvalidAdapter, match="no adapter files in out"):
        _import(store, cache, factory, "x", "org/sub", subfolder="out")
    assert _state(store) == []
