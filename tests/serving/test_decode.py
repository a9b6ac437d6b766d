"""Decoding a stored adapter: our safetensors reader equals the library's, and refuses junk."""

from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from adapters_store import InvalidAdapter
from app.serving.decode import read_safetensors


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
