"""`.bin` tensors that are more than their bytes, and the parameter size the store records."""

from __future__ import annotations

import time
import zipfile

import pytest
import torch

from adapters_store import AdapterStore, AdapterTooLarge, InvalidAdapter
from adapters_store.convert import check_tensor, converted_copy
from adapters_store.fit import param_bytes
from tests.support.hub import as_pickled


@pytest.mark.parametrize(
    "tensor",
    [
        torch.zeros(1).expand(50_000, 50_000),  # 10 GB over 4 bytes
        torch.zeros(2000).as_strided((1000, 1000), (1, 1)),  # overlapping rows
        torch.zeros(4, 4).as_strided((4, 4), (0, 1)),
        torch.zeros(4).to_sparse(),
        torch.zeros(4, dtype=torch.complex64),
    ],
    ids=["zero-stride", "overlap", "row-zero-stride", "sparse", "complex"],
)
def test_tensors_that_are_more_than_their_storage_are_refused(tensor):
    with pytest.raises(InvalidAdapter):
        check_tensor("pytorch_adapter.bin", "w", tensor)


@pytest.mark.parametrize(
    "tensor",
    [torch.ones(3, 4), torch.ones(3, 4).t(), torch.ones(6)[2:], torch.ones(1, 5)[:, ::2],
     torch.zeros(3, dtype=torch.int64), torch.ones(0, 4), torch.ones(1, 4).expand(1, 4)],
)  # fmt: skip
def test_plain_views_pass(tensor):
    check_tensor("pytorch_adapter.bin", "w", tensor)


def test_total_size_is_capped_before_any_copy(factory, tmp_path):
    """Many names for one real storage: each tensor holds its bytes, the sum is over the cap."""
    folder = as_pickled(factory.save("many", tmp_path / "saved", seed=1), tmp_path / "bin")
    shared = torch.ones(1024, 1024)  # 4 MiB, stored once
    torch.save({f"w{i}": shared for i in range(64)}, folder / "pytorch_adapter.bin")
    (tmp_path / "out").mkdir()
    start = time.process_time()
    with pytest.raises(AdapterTooLarge, match="cap"):
        converted_copy(folder, tmp_path / "out", max_bytes=128 * 1024**2)
    assert time.process_time() - start < 1.0
    assert not (tmp_path / "out" / "adapter.safetensors").exists()


def test_the_store_records_param_bytes_and_caps_them(factory, tmp_path):
    saved = factory.save("demo", tmp_path / "saved", seed=2)
    store = AdapterStore(tmp_path / "store")
    manifest = store.add("demo", saved, base_model=factory.base_ref)
    assert manifest.param_bytes == param_bytes(saved) > 0
    assert store.get("demo").manifest.param_bytes == manifest.param_bytes
    small = AdapterStore(tmp_path / "small", max_param_bytes=manifest.param_bytes - 1)
    with pytest.raises(AdapterTooLarge):
        small.import_dir("demo", saved)
    assert small.list() == []


def _rezip(path, *, compression=zipfile.ZIP_STORED, extra: dict | None = None):
    """The .bin's records written again: deflated, or with records replaced."""
    with zipfile.ZipFile(path) as zf:
        records = {info.filename: zf.read(info) for info in zf.infolist()}
    for name, data in (extra or {}).items():
        key = next(k for k in records if k.endswith(name))
        records[key] = data
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in records.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("how", ["deflated", "big-pickle"])
def test_bin_records_are_checked_before_unpickling(tmp_path, how):
    """A deflated record could inflate; a 64 MB pickle of small objects would build gigabytes
    of them before any tensor is looked at. Both are refused from the zip directory."""
    import pickle

    from adapters_store.convert import load_pickled_weights

    path = tmp_path / "pytorch_adapter.bin"
    torch.save({"w": torch.ones(4)}, path)
    if how == "deflated":
        _rezip(path, compression=zipfile.ZIP_DEFLATED)
    else:
        _rezip(path, extra={"data.pkl": pickle.dumps(list(range(1_000_000)), protocol=2)})
    start = time.process_time()
    with pytest.raises(InvalidAdapter, match="not a plain weights file"):
        load_pickled_weights(path)
    assert time.process_time() - start < 0.5


def test_safetensors_with_too_many_tensors_is_refused(factory, tmp_path):
    from safetensors.torch import save_file

    folder = factory.save("many", tmp_path / "many", seed=3)
    save_file({f"t{i}": torch.zeros(1) for i in range(10_001)}, folder / "adapter.safetensors")
    with pytest.raises(InvalidAdapter, match="10001 tensors"):
        AdapterStore(tmp_path / "store").import_dir("many", folder)
