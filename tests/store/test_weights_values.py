"""What a weights file may hold (issue 26): floating-point, finite values under a header cap.

NaN or infinity in any tensor makes every score NaN (a 500 when the answer was encoded); an
integer tensor made the first slot of its shape fail for every adapter of that shape; a 60 MB
`__metadata__` (a 65 KB zip) stayed in memory with every decoded adapter. Each is refused
before anything is written, naming the file and the tensor or the cap.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch

from adapters_store import AdapterStore, InvalidAdapter
from adapters_store.tensor_files import MAX_HEADER_BYTES, check_weights
from tests.support.bad_weights import BIG_METADATA, as_dtype, poison, rewrite, unchanged

CASES = {
    "nan-adapter": ("adapter.safetensors", poison(float("nan")), None, "NaN or infinite"),
    "inf-head": ("model_head.safetensors", poison(float("-inf")), None, "NaN or infinite"),
    "int32": ("adapter.safetensors", as_dtype(torch.int32), None, "is I32; weights must be"),
    "bool-head": ("model_head.safetensors", as_dtype(torch.bool), None, "is BOOL"),
    "metadata": ("adapter.safetensors", unchanged, BIG_METADATA, "the cap is 65536"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_weights_are_refused_naming_the_tensor_or_cap(factory, tmp_path, case):
    file_name, change, metadata, reason = CASES[case]
    folder = factory.save("bad", tmp_path / "bad", seed=11)
    rewrite(folder / file_name, change, metadata)
    store = AdapterStore(tmp_path / "store")
    with pytest.raises(InvalidAdapter, match=reason) as refused:
        store.import_dir("bad", folder)
    assert file_name in str(refused.value)
    with pytest.raises(InvalidAdapter, match=reason):  # training's path checks the same
        store.add("bad", folder, base_model=factory.base_ref)
    assert store.list() == []


def test_the_tensor_at_fault_is_named(factory, tmp_path):
    folder = factory.save("bad", tmp_path / "bad", seed=12)
    from safetensors.torch import load_file

    path = rewrite(folder / "adapter.safetensors", poison(float("inf")))
    first = sorted(load_file(str(path)))[0]
    with pytest.raises(InvalidAdapter, match=f"tensor '{first}'"):
        check_weights(path)


def test_fp16_and_bf16_weights_pass(factory, tmp_path):
    for dtype in (torch.float16, torch.bfloat16):
        folder = factory.save("lowp", tmp_path / str(dtype), seed=13)
        rewrite(folder / "adapter.safetensors", as_dtype(dtype))
        check_weights(folder / "adapter.safetensors")  # raises when refused


def test_a_nan_past_the_first_chunk_is_found(tmp_path, monkeypatch):
    """Values are checked a chunk at a time: the last value of the last chunk counts."""
    from safetensors.torch import save_file

    import adapters_store.tensor_files as tensor_files

    monkeypatch.setattr(tensor_files, "CHECK_CHUNK_BYTES", 64)
    tensor = torch.zeros(1001)
    tensor[-1] = float("nan")
    save_file({"w": tensor}, str(tmp_path / "w.safetensors"))
    with pytest.raises(InvalidAdapter, match="'w' holds NaN"):
        check_weights(tmp_path / "w.safetensors")


def test_a_header_over_the_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.safetensors"
    header = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    header += b" " * (MAX_HEADER_BYTES + 1 - len(header))  # valid JSON, one byte over
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(InvalidAdapter, match=f"the cap is {MAX_HEADER_BYTES}"):
        check_weights(path)


def _safetensors(path, tensors: dict, *, gap: int = 0, skew: int = 0) -> None:
    """A file of `tensors` (name -> float32 or int8 tensor) written by hand: `gap` unused
    bytes after the first tensor, `skew` bytes before the first one."""
    header, blobs, at = {}, [b"\0" * skew], skew
    for i, (name, t) in enumerate(tensors.items()):
        data = t.contiguous().numpy().tobytes()
        code = {torch.float32: "F32", torch.int8: "I8"}[t.dtype]
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [at, at + len(data)]}
        blobs.append(data + (b"\0" * gap if i == 0 else b""))
        at += len(data) + (gap if i == 0 else 0)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.mark.parametrize(
    "layout, shared",
    [({}, True), ({"skew": 3}, True), ({"gap": 4096}, False), ({"int8_first": True}, False)],
    ids=["back-to-back", "bytes-before", "a-gap", "misaligned"],
)
def test_read_tensors_holds_only_the_tensors_bytes(tmp_path, layout, shared):
    """Tensors that lie back to back, each aligned for its dtype, are read at once into one
    buffer they view (bytes before the first are not read); a gap (bytes nobody references)
    or a misaligned tensor: one buffer each. Either way the values are the file's and the
    memory held is the tensors' bytes, nothing more."""
    from adapters_store.tensor_files import read_tensors

    tensors = {
        "a": torch.arange(12, dtype=torch.float32).view(3, 4),
        "c": torch.linspace(-1, 1, 5),
        "empty": torch.zeros(0, 4),
        "b": torch.tensor([1, -2, 3], dtype=torch.int8),
    }
    if layout.pop("int8_first", False):  # the floats then lie 3 bytes off their alignment
        tensors = {"b": tensors.pop("b"), **tensors}
    path = tmp_path / "w.safetensors"
    _safetensors(path, tensors, **layout)
    read = read_tensors(path)
    assert read.keys() == tensors.keys()
    for name, t in tensors.items():
        assert read[name].dtype == t.dtype and torch.equal(read[name], t), name
    held = {t.untyped_storage().data_ptr(): t.untyped_storage() for t in read.values() if t.numel()}
    assert (len(held) == 1) is shared
    assert sum(s.nbytes() for s in held.values()) == sum(t.nbytes for t in tensors.values())
