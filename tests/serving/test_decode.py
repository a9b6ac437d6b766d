"""Decoding a stored adapter: our safetensors reader equals the library's, and refuses junk."""

from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapters_store import InvalidAdapter
from adapters_store.tensor_files import read_tensors as read_safetensors


@pytest.mark.parametrize("method", ["seq_bn", "lora", "prefix_tuning", "ia3"])
def test_reader_equals_safetensors(factory, tmp_path, method):
    folder = factory.save("x", tmp_path / method, seed=4, config=method)
    for name in ("adapter.safetensors", "model_head.safetensors"):
        ours, theirs = read_safetensors(folder / name), load_file(str(folder / name))
        assert ours.keys() == theirs.keys()
        for key, tensor in theirs.items():
            assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor)


def test_reader_keeps_dtypes_and_empty_tensors(tmp_path):
    tensors = {
        "h": torch.randn(3, 4).half(),
        "b": torch.randn(5).bfloat16(),
        "i": torch.arange(6).reshape(2, 3),
        "e": torch.empty(0, 4),
    }
    save_file(tensors, str(tmp_path / "t.safetensors"))
    ours = read_safetensors(tmp_path / "t.safetensors")
    assert all(torch.equal(ours[k], v) and ours[k].shape == v.shape for k, v in tensors.items())


def _file(tmp_path, header: bytes, data: bytes = b""):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize(
    "header",
    [
        b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}',  # past the data
        b'{"w": {"dtype": "F32", "shape": [1000000], "data_offsets": [0, 8]}}',  # shape > bytes
        b'{"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}',  # unknown dtype
        b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}',  # reversed
        b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1e400]}}',  # int(inf)
        b'{"w": {"dtype": "F32", "shape": [-1, 0], "data_offsets": [0, 0]}}',  # negative
        b"[" * 100_000,  # nested past the parser's recursion limit
        b"[1, 2]",
        b"not json",
    ],
)
def test_reader_refuses_what_the_format_forbids(tmp_path, header):
    with pytest.raises(InvalidAdapter, match="not a valid safetensors file"):
        read_safetensors(_file(tmp_path, header, b"\0" * 8))


def test_reader_refuses_a_header_longer_than_the_file(tmp_path):
    path = tmp_path / "short.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(InvalidAdapter):
        read_safetensors(path)


def test_decoded_tensors_hold_their_own_bytes_not_the_file(factory, tmp_path):
    """A view into one buffer of the whole file kept its `__metadata__` (60 MB from a 65 KB
    zip) in memory with the adapter, uncounted: the tensors' storages must hold their bytes
    and nothing else (one buffer that they all view, or one each)."""
    import tracemalloc

    from adapters_store import AdapterStore
    from app.serving.decode import decode
    from tests.support.bad_weights import rewrite, unchanged

    store = AdapterStore(tmp_path / "store")
    factory.add_to_store(store, "meta", seed=6)
    stored = store.get("meta").path / "adapter.safetensors"
    rewrite(stored, unchanged, {"note": "x" * 60_000})  # under the cap, 60 KB of file
    decode(store, "meta", base=factory.base_ref, dtype=torch.float32)  # first-use caches
    tracemalloc.start()  # Python's allocations (a file buffer is one; tensors' memory is not)
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoded = decode(store, "meta", base=factory.base_ref, dtype=torch.float32)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = stored.stat().st_size  # ~77 KB; a decoded adapter held all of it (measured)
    assert held < size / 2, f"{held} bytes of Python memory held for a {size}-byte file"
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage() for t in decoded.tensors.values()
    }
    # What the cache counts is then all the adapter holds.
    assert decoded.nbytes == sum(s.nbytes() for s in storages.values())


def test_reader_refuses_a_huge_metadata_naming_the_cap(tmp_path):
    """Files stored before uploads were checked are capped at read too."""
    from adapters_store.tensor_files import MAX_METADATA_BYTES

    path = tmp_path / "meta.safetensors"
    save_file({"w": torch.ones(2)}, str(path), metadata={"note": "x" * (1 << 20)})
    with pytest.raises(InvalidAdapter, match=f"__metadata__ is .* the cap is {MAX_METADATA_BYTES}"):
        read_safetensors(path)
