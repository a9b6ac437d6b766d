"""PyTorch-pickle adapter weights -> safetensors, without ever running a pickle's code.

`model.save_adapter(dir, name)` without `use_safetensors=True` (and most AdapterHub uploads)
write `pytorch_adapter.bin` and `pytorch_model_head.bin`. They are read with
`torch.load(..., weights_only=True, mmap=True)` (torch >= 2.6: weights_only can be bypassed
before, CVE-2025-32434), PyTorch's restricted unpickler that builds tensors and plain
containers and refuses any other global (so a pickle that would run code is refused before it
runs), must hold a flat `{str: Tensor}` dict of plain dense tensors whose storage really holds
their bytes (no zero strides: a 6 KB file could otherwise expand into gigabytes), under a total
size cap, and are rewritten as safetensors. Any other pickle file stays refused by validation.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

from adapters_store import format as fmt
from adapters_store.archive import MAX_DIRECTORY_BYTES_PER_FILE, zip_directory
from adapters_store.errors import AdapterTooLarge, InvalidAdapter

DEFAULT_MAX_PARAM_BYTES = 128 * 1024**2
MAX_RECORDS = 10_000  # tensors in one .bin (an adapter has tens to hundreds)
MAX_PICKLE_BYTES = 4 * 1024**2

PICKLED_WEIGHTS = {
    "pytorch_adapter.bin": fmt.ADAPTER_WEIGHTS,
    "pytorch_model_head.bin": fmt.HEAD_WEIGHTS,
}


_DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8",
                "uint8", "bool")  # fmt: skip


def _dtypes() -> tuple:
    import torch

    return tuple(getattr(torch, name) for name in _DTYPE_NAMES)


def needs_conversion(folder: Path) -> bool:
    return any((folder / name).is_file() for name in PICKLED_WEIGHTS)


def load_pickled_weights(path: Path) -> dict:
    """A flat {name: tensor} dict from a .bin file, via the weights-only unpickler.

    The file is memory-mapped (`mmap=True`, which needs the zip format torch.save has written
    since 1.6): its storages are views of the file, so loading allocates nothing whatever sizes
    the pickle claims."""
    import torch

    _check_records(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # UnpicklingError for forbidden globals; others for junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidAdapter(
            f"{path.name} is refused: it is not a plain weights file ({first[:200]})"
        ) from None
    if not isinstance(state, dict) or not state:
        raise InvalidAdapter(f"{path.name} must hold a non-empty dict of tensors")
    for key, value in state.items():
        if not isinstance(key, str) or type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise InvalidAdapter(f"{path.name} must map tensor names to tensors only")
        check_tensor(path.name, key, value)
    return state


def _check_records(path: Path) -> None:
    """torch.save's zip, as torch writes it: a bounded directory, records stored (not
    compressed: a small file cannot inflate), and a pickle of at most MAX_PICKLE_BYTES (an
    adapter's is a few KB; a big one would build a big object graph before any check)."""
    refused = f"{path.name} is refused: it is not a plain weights file"
    declared = zip_directory(path) if zipfile.is_zipfile(path) else None
    if declared is None:
        raise InvalidAdapter(f"{refused} (only the zip format of torch.save is read)")
    if declared[0] > MAX_RECORDS or declared[1] > MAX_RECORDS * MAX_DIRECTORY_BYTES_PER_FILE:
        raise InvalidAdapter(f"{refused} (more than {MAX_RECORDS} records)")
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise InvalidAdapter(f"{refused} (compressed record {info.filename[:100]!r})")
            if info.filename.endswith("data.pkl") and info.file_size > MAX_PICKLE_BYTES:
                raise InvalidAdapter(f"{refused} (a pickle of {info.file_size} bytes)")


def check_tensor(file_name: str, key: str, tensor: Any) -> None:
    """Refuse a tensor that is more than its bytes: a zero, negative or overlapping stride, a
    view past its storage, or a storage smaller than the tensor (copying would expand it)."""
    import torch

    where = f"{file_name}: tensor {key[:100]!r}"
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.dtype not in _dtypes():
        raise InvalidAdapter(f"{where} is not a plain dense tensor")
    if any(st < 1 for size, st in zip(tensor.shape, tensor.stride(), strict=True) if size > 1):
        raise InvalidAdapter(f"{where} has a zero or negative stride")
    if tensor.numel() == 0:
        return
    item = tensor.element_size()
    last = tensor.storage_offset() + sum(
        (size - 1) * st for size, st in zip(tensor.shape, tensor.stride(), strict=True)
    )
    storage = tensor.untyped_storage().nbytes()
    if storage < tensor.numel() * item or (last + 1) * item > storage:
        raise InvalidAdapter(f"{where} claims more elements than its storage holds")


def logical_bytes(states: list[dict]) -> int:
    return sum(t.numel() * t.element_size() for state in states for t in state.values())


def converted_copy(src: Path, dest: Path, *, max_bytes: int = DEFAULT_MAX_PARAM_BYTES) -> Path:
    """Copy `src` into the empty folder `dest`, turning its .bin weights into safetensors.

    Every tensor is checked (`check_tensor`) and their total size capped at `max_bytes` before
    anything is copied, so a small file cannot expand into a large copy.

    Refuses a folder holding both a .bin file and the safetensors file it would become.
    Other files are copied as they are (validation then judges them).
    """
    from safetensors.torch import save_file

    for entry in src.iterdir():
        if entry.is_symlink() or not entry.is_file():
            raise InvalidAdapter(f"{entry.name}: only regular files are allowed")
    for pickled, safe in PICKLED_WEIGHTS.items():
        if (src / pickled).is_file() and (src / safe).is_file():
            raise InvalidAdapter(f"both {pickled} and {safe} are present; keep one")
    states = {e.name: load_pickled_weights(e) for e in src.iterdir() if e.name in PICKLED_WEIGHTS}
    total = logical_bytes(list(states.values()))
    if total > max_bytes:  # before any tensor is copied
        raise AdapterTooLarge(
            f"the .bin weights hold {total} bytes of tensors; the cap is {max_bytes}"
        )
    for entry in src.iterdir():
        target = PICKLED_WEIGHTS.get(entry.name)
        if target is None:
            shutil.copyfile(entry, dest / entry.name)
            continue
        # safetensors refuses shared or strided storage: one contiguous copy per tensor.
        tensors = {k: v.detach().contiguous().clone() for k, v in states[entry.name].items()}
        save_file(tensors, str(dest / target), metadata={"format": "pt"})
    return dest
